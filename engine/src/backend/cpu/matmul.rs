//! `y = x · Wᵀ` with `W` stored `[out, in]` row-major: f32 weights through the tile
//! kernel of `gemm_nt.rs` (no packing) for up to `GEMM_MIN_ROWS` rows, the `gemm` crate
//! beyond (its packed microkernel wins once the packing of W is shared by that many
//! rows); f16 / q8_0 / q4_0 weights through the kernels of `quant.rs`.

use super::gemm_nt::{gemm_nt, Nt, PARALLEL_MIN_MACS};
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
    if m >= GEMM_MIN_ROWS && n > 0 && k > 0 {
        gemm_crate(x, m, k, w, n, y);
        return;
    }
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

/// From this many rows the `gemm` crate's packed microkernel is faster (measured with
/// `onerec bench`: 1.5x on a square 1024 product), packing W being shared by every row.
const GEMM_MIN_ROWS: usize = 64;

fn gemm_crate(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    let par = if m * n * k >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller checked the three extents; dst does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
