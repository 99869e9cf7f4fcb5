//! `y = x · Wᵀ` with `W` stored `[out, in]` row-major: f32 weights straight through the
//! tile kernel of `gemm_nt.rs` (no packing), f16 / q8_0 / q4_0 weights through the
//! kernels of `quant.rs`.

use super::gemm_nt::{gemm_nt, Nt};
use super::simd::SimdLevel;
use super::{quant, CpuBackend, CpuWeight};

pub fn matmul(b: &CpuBackend, x: &[f32], rows: usize, w: &CpuWeight, y: &mut [f32]) {
    match w.as_f32() {
        Some(wf) => matmul_raw(b.simd, x, rows, w.cols, wf, w.rows, y),
        None => quant::matmul(b.simd, b.int8, x, rows, w, y),
    }
}

/// `y [m, n] = x [m, k] · wᵀ` where `w` is `[n, k]`.
pub fn matmul_raw(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    y: &mut [f32],
) {
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n);
    let p = Nt {
        x,
        ldx: k,
        m,
        w,
        ldw: k,
        n,
        k,
    };
    gemm_nt(level, p, y, n, false);
}
