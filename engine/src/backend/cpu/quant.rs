//! Matrix products with weights in their stored type (f16, q8_0, q4_0): no f32 copy of a
//! weight matrix ever exists. For a few activation rows (decode steps of small batches)
//! each weight row is decoded into an L1-resident buffer and dotted with every
//! activation row; for more rows, a panel of weight rows is decoded into a per-thread
//! buffer that stays in L2 and multiplied with gemm. Either way every weight byte is read
//! once per product. The decoding and dot loops use AVX2/FMA/F16C where the CPU has them
//! (`quant_x86.rs`), else the portable `format::quant::decode_range`.

use super::matmul::PARALLEL_MIN_MACS;
use super::CpuWeight;
use rayon::prelude::*;

/// Decoded values per panel (64 KiB of f32): small enough to stay in L2 beside the
/// activations, large enough to amortise a gemm call.
const PANEL_FLOATS: usize = 16 * 1024;
/// Up to this many activation rows, dot products beat gemm's packing.
const DOT_MAX_ROWS: usize = 4;

/// `y [m, n] = x [m, k] · Wᵀ` for a weight not held as f32.
pub fn matmul(x: &[f32], m: usize, w: &CpuWeight, y: &mut [f32]) {
    matmul_with(x, m, w, y, simd());
}

/// `matmul` with the SIMD kernels on (`fast`, where available) or off.
fn matmul_with(x: &[f32], m: usize, w: &CpuWeight, y: &mut [f32], fast: bool) {
    let (n, k) = (w.rows, w.cols);
    assert!(x.len() >= m * k && y.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y[..m * n].fill(0.0);
        return;
    }
    if m == 1 {
        product_t(x, 1, w, &mut y[..n], fast);
        return;
    }
    let mut yt = vec![0f32; n * m];
    product_t(x, m, w, &mut yt, fast);
    for (r, yr) in y[..m * n].chunks_exact_mut(n).enumerate() {
        for (j, v) in yr.iter_mut().enumerate() {
            *v = yt[j * m + r];
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(super::quant_x86::available)
}

#[cfg(not(target_arch = "x86_64"))]
fn simd() -> bool {
    false
}

/// Decodes `out.len()` values of `w` from flat index `start`.
fn decode(w: &CpuWeight, fast: bool, start: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` means the features were detected; the span lies inside the
        // matrix, whose byte size `CpuWeight::new` checked.
        unsafe { super::quant_x86::decode(w.dtype(), w.bytes(), w.rows, w.cols, start, out) };
        return;
    }
    let _ = fast;
    w.decode(start, out);
}

/// `dst [rows, m]` for weight rows `row0 ..`, one decoded row at a time.
fn rows_dot(
    w: &CpuWeight,
    fast: bool,
    row0: usize,
    x: &[f32],
    m: usize,
    row: &mut [f32],
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: as in `decode`; `row` is one row long and `x` holds `m` rows.
        unsafe {
            super::quant_x86::rows_dot(w.dtype(), w.bytes(), w.rows, w.cols, row0, x, m, row, dst)
        };
        return;
    }
    let k = w.cols;
    for (j, d) in dst.chunks_exact_mut(m).enumerate() {
        w.decode((row0 + j) * k, row);
        for (r, d) in d.iter_mut().enumerate() {
            *d = dot(row, &x[r * k..(r + 1) * k]);
        }
    }
}

/// `yt [n, m] = W · xᵀ`, panel by panel of weight rows (each owns a contiguous range of
/// `yt`, so the panels run in parallel without sharing).
fn product_t(x: &[f32], m: usize, w: &CpuWeight, yt: &mut [f32], fast: bool) {
    let (n, k) = (w.rows, w.cols);
    let panel = (PANEL_FLOATS / k).clamp(1, n);
    let run = |buf: &mut Vec<f32>, (p, dst): (usize, &mut [f32])| {
        let rows = dst.len() / m;
        if m <= DOT_MAX_ROWS {
            buf.resize(k, 0.0);
            rows_dot(w, fast, p * panel, x, m, buf, dst);
        } else {
            buf.resize(rows * k, 0.0);
            let buf = &mut buf[..rows * k];
            decode(w, fast, p * panel * k, buf);
            gemm_panel(buf, rows, k, x, m, dst);
        }
    };
    if m * n * k >= PARALLEL_MIN_MACS {
        yt.par_chunks_mut(panel * m)
            .enumerate()
            .for_each_init(Vec::new, run);
    } else {
        let mut buf = Vec::new();
        yt.chunks_mut(panel * m)
            .enumerate()
            .for_each(|item| run(&mut buf, item));
    }
}

/// Sixteen independent partial sums, so the loop vectorises without reassociation
/// flags (the summation order differs from gemm's only at float rounding level).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (pa, pb) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += pa[i] * pb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `dst [rows, m] = panel [rows, k] · xᵀ` on one thread.
fn gemm_panel(panel: &[f32], rows: usize, k: usize, x: &[f32], m: usize, dst: &mut [f32]) {
    debug_assert!(panel.len() >= rows * k && x.len() >= m * k && dst.len() >= rows * m);
    // SAFETY: the three slices hold the extents passed (checked by the callers' shapes:
    // `panel` and `dst` are sized here from `rows`, `x` by `matmul`'s assert); dst does
    // not alias the inputs.
    unsafe {
        gemm::gemm(
            rows,
            m,
            k,
            dst.as_mut_ptr(),
            1,
            m as isize,
            false,
            panel.as_ptr(),
            1,
            k as isize,
            x.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::quant::{decode_range, encode};
    use crate::tensor::{Blob, DType, WeightView};
    use std::sync::Arc;

    fn weight(dtype: DType, rows: usize, cols: usize) -> (Arc<Blob>, CpuWeight) {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 / 506.0 - 1.0) * 0.3)
            .collect();
        let blob = Arc::new(Blob::Owned(encode("w", dtype, &[rows, cols], &v).unwrap()));
        let view = WeightView {
            name: "w",
            dtype,
            rows,
            cols,
            bytes: blob.bytes(),
            blob: &blob,
        };
        let w = CpuWeight::new(&view).unwrap();
        (blob, w)
    }

    /// The SIMD kernels decode exactly what the portable reference does, and both
    /// product paths agree; on a CPU without AVX2 this compares the portable path with
    /// itself, on this project's machines both run.
    #[test]
    fn simd_and_portable_kernels_agree() {
        for dtype in [DType::F16, DType::Q8_0, DType::Q4_0] {
            let (rows, cols) = (37, 96);
            let (_blob, w) = weight(dtype, rows, cols);
            for (start, len) in [(0, rows * cols), (96, 64), (32 * 5, 32), (3 * 96, 2 * 96)] {
                let mut want = vec![0f32; len];
                decode_range(dtype, w.bytes(), rows, cols, start, &mut want).unwrap();
                for fast in [false, simd()] {
                    let mut got = vec![f32::NAN; len];
                    decode(&w, fast, start, &mut got);
                    assert_eq!(got, want, "{dtype} fast={fast} span {start}+{len}");
                }
            }
            for m in [1, 3, 9] {
                let x: Vec<f32> = (0..m * cols).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
                let (mut a, mut b) = (vec![0f32; m * rows], vec![0f32; m * rows]);
                matmul_with(&x, m, &w, &mut a, false);
                matmul_with(&x, m, &w, &mut b, simd());
                let err = a
                    .iter()
                    .zip(&b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
                assert!(err <= 1e-5 * scale, "{dtype} m={m}: {err} vs {scale}");
            }
        }
    }
}
