//! `y = x · Wᵀ` with `W` stored `[out, in]` row-major: f32 weights straight through the
//! `gemm` crate, f16 / q8_0 / q4_0 weights through the decoding kernels of `quant.rs`.

use super::{quant, CpuWeight};

/// Products smaller than this (in multiply-adds) run single-threaded: the thread
/// hand-off costs more than it saves.
pub(super) const PARALLEL_MIN_MACS: usize = 1 << 18;

pub fn matmul(x: &[f32], rows: usize, w: &CpuWeight, y: &mut [f32]) {
    match w.as_f32() {
        Some(wf) => matmul_raw(x, rows, w.cols, wf, w.rows, y),
        None => quant::matmul(x, rows, w, y),
    }
}

/// `y [m, n] = x [m, k] · wᵀ` where `w` is `[n, k]`.
pub fn matmul_raw(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y[..m * n].fill(0.0);
        return;
    }
    let par = if m * n * k >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the sizes were checked above; dst does not alias the inputs.
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
