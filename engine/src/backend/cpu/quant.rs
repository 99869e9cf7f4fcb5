//! Matrix products with weights in their stored type (f16, q8_0, q4_0): no f32 copy of a
//! weight matrix ever exists.
//! - q8_0 with integer activations (`Int8::Vnni`, the default, or `All`) on AVX-512
//!   VNNI, any row count: the VNNI kernel over weights interleaved once (`q8_vnni.rs`).
//! - A few activation rows (decode steps, small expert groups), q8_0/q4_0 with
//!   `Int8::All` on a CPU with AVX2: the rows are quantised per block of 32 to q8 and every
//!   block product is an integer dot (`quant_x86.rs`), as ggml does, so weights stream as
//!   stored.
//! - Otherwise a panel of weight rows is decoded into a per-thread buffer that stays in
//!   L2 and multiplied with the f32 tile kernel (`gemm_nt.rs`), or, from
//!   `PACKED_MIN_ROWS` rows, packed and multiplied with the broadcast microkernel of
//!   `packed.rs`; the decoding is paid once per panel and shared by every activation row.
//!
//! Either way every weight byte is read once per product.

use super::gemm_nt::{gemm_nt_serial, Nt, PARALLEL_MIN_MACS};
use super::packed;
use super::simd::SimdLevel;
use super::{CpuWeight, Int8};
use rayon::prelude::*;

/// Decoded values per panel (64 KiB of f32): stays in L2 beside the activations.
const PANEL_FLOATS: usize = 16 * 1024;
/// From this many rows a product packs its decoded panels for the broadcast microkernel
/// of `packed.rs`; below, it multiplies them in the stored layout (`gemm_nt.rs`).
const PACKED_MIN_ROWS: usize = 64;
/// Up to this many activation rows the integer kernels win: weight traffic dominates.
pub(super) const INT_MAX_ROWS: usize = 8;

/// `y [m, n] = x [m, k] · Wᵀ` for a weight not held as f32.
/// `int8`: which products may take an integer path (activations quantised).
pub fn matmul(level: SimdLevel, int8: Int8, x: &[f32], m: usize, w: &CpuWeight, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    assert!(x.len() >= m * k && y.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y[..m * n].fill(0.0);
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = int8;
    #[cfg(target_arch = "x86_64")]
    if int8 != Int8::Off && super::q8_vnni::supported(level) {
        if let Some(p) = w.q8_panels() {
            super::q8_vnni::matmul(level, x, m, p, y);
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if int8 == Int8::All
        && m <= INT_MAX_ROWS
        && level.has_avx2()
        && super::quant_x86::int_dot_supported(w.dtype())
    {
        int_product(x, m, w, y);
        return;
    }
    if m >= PACKED_MIN_ROWS {
        let decode_rows = |row0: usize, out: &mut [f32]| decode(level, w, row0 * k, out);
        packed::matmul_decoded(level, x, m, n, k, decode_rows, y);
        return;
    }
    let mut yt = vec![0f32; n * m];
    panel_product(level, x, m, w, &mut yt);
    for (r, yr) in y[..m * n].chunks_exact_mut(n).enumerate() {
        for (j, v) in yr.iter_mut().enumerate() {
            *v = yt[j * m + r];
        }
    }
}

/// Decodes `out.len()` values of `w` from flat index `start`.
fn decode(level: SimdLevel, w: &CpuWeight, start: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level.has_avx2() {
        // SAFETY: `has_avx2` means AVX2/FMA/F16C were detected; the span lies inside
        // the matrix, whose byte size `CpuWeight::new` checked.
        unsafe { super::quant_x86::decode(w.dtype(), w.bytes(), w.rows, w.cols, start, out) };
        return;
    }
    let _ = level;
    w.decode(start, out);
}

/// `yt [n, m] = W · xᵀ`, panel by panel of weight rows (each owns a contiguous range of
/// `yt`, so the panels run in parallel without sharing).
fn panel_product(level: SimdLevel, x: &[f32], m: usize, w: &CpuWeight, yt: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    let panel = (PANEL_FLOATS / k).clamp(1, n);
    let run = |buf: &mut Vec<f32>, (p, dst): (usize, &mut [f32])| {
        let rows = dst.len() / m;
        buf.resize(rows * k, 0.0);
        let buf = &mut buf[..rows * k];
        decode(level, w, p * panel * k, buf);
        let nt = Nt {
            x: buf,
            ldx: k,
            m: rows,
            w: x,
            ldw: k,
            n: m,
            k,
        };
        gemm_nt_serial(level, nt, dst, m, false);
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

/// The integer path: activations quantised once, weight rows split across threads.
#[cfg(target_arch = "x86_64")]
fn int_product(x: &[f32], m: usize, w: &CpuWeight, y: &mut [f32]) {
    use super::quant_x86::{int_rows, quantize_rows};
    let (n, k) = (w.rows, w.cols);
    let blocks = k / crate::tensor::QUANT_BLOCK;
    let mut xq = vec![0i8; m * k];
    let mut xd = vec![0f32; m * blocks];
    quantize_rows(&x[..m * k], k, &mut xq, &mut xd);
    // Rows of `yt [n, m]`, as in `panel_product`.
    let mut yt = vec![0f32; n * m];
    let chunk = 64;
    let run = |(c, dst): (usize, &mut [f32])| {
        // SAFETY: `int_dot_supported` was checked by the caller under `has_avx2`; the rows
        // `c·chunk ..` exist and `dst` holds `m` outputs per row.
        unsafe { int_rows(w.dtype(), w.bytes(), n, k, c * chunk, &xq, &xd, m, dst) };
    };
    if m * n * k >= PARALLEL_MIN_MACS {
        yt.par_chunks_mut(chunk * m).enumerate().for_each(run);
    } else {
        yt.chunks_mut(chunk * m).enumerate().for_each(run);
    }
    for (r, yr) in y[..m * n].chunks_exact_mut(n).enumerate() {
        for (j, v) in yr.iter_mut().enumerate() {
            *v = yt[j * m + r];
        }
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

    /// Every level decodes exactly what the portable reference does, and every product
    /// path (integer for few rows, decoded panels for more) agrees with the decoded
    /// weight times x within the activation quantisation's error.
    #[test]
    fn every_level_and_path_agrees_with_the_decoded_weight() {
        for dtype in [DType::F16, DType::Q8_0, DType::Q4_0] {
            let (rows, cols) = (37, 96);
            let (_blob, w) = weight(dtype, rows, cols);
            let mut dense = vec![0f32; rows * cols];
            decode_range(dtype, w.bytes(), rows, cols, 0, &mut dense).unwrap();
            for level in SimdLevel::available() {
                for (start, len) in [(0, rows * cols), (96, 64), (32 * 5, 32), (3 * 96, 2 * 96)] {
                    let mut got = vec![f32::NAN; len];
                    decode(level, &w, start, &mut got);
                    assert_eq!(
                        got,
                        dense[start..start + len],
                        "{dtype} {level:?} span {start}"
                    );
                }
                for m in [1, 3, 8, 9, 20, 64, 70] {
                    let x: Vec<f32> = (0..m * cols).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
                    let mut got = vec![f32::NAN; m * rows];
                    matmul(level, Int8::All, &x, m, &w, &mut got);
                    for r in 0..m {
                        let xr = &x[r * cols..(r + 1) * cols];
                        // q8 activations: |x - x̂| ≤ amax/254 per value.
                        let bound = xr.iter().map(|v| v.abs()).fold(0f32, f32::max) / 254.0
                            * (0..rows)
                                .map(|j| {
                                    dense[j * cols..(j + 1) * cols]
                                        .iter()
                                        .map(|v| v.abs())
                                        .sum::<f32>()
                                })
                                .fold(0f32, f32::max)
                            + 1e-4;
                        for j in 0..rows {
                            let want: f32 =
                                xr.iter().zip(&dense[j * cols..]).map(|(a, b)| a * b).sum();
                            let g = got[r * rows + j];
                            assert!(
                                (g - want).abs() <= bound,
                                "{dtype} {level:?} m={m} [{r},{j}]: {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
