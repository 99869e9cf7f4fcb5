//! `y = x · Wᵀ` with `W` stored `[out, in]` row-major: f32 weights through the tile
//! kernel of `gemm_nt.rs` (no packing) below `PACKED_MIN_ROWS` rows, through the packed
//! microkernel of `packed.rs` from there (W packed once, on first use); f16 / q8_0 /
//! q4_0 weights through the kernels of `quant.rs`.

use super::gemm_nt::{gemm_nt, Nt};
use super::simd::SimdLevel;
use super::{packed, quant, CpuBackend, CpuWeight};

/// From this many rows a product runs on the packed copy of the weight (made on first
/// such use); below, on the stored layout. The choice depends on the row count only, so
/// a product gives the same bits on every call, before and after the copy exists.
/// Weights only ever used by decode steps of a few beams or small expert groups are never
/// copied.
pub(super) const PACKED_MIN_ROWS: usize = 64;

pub fn matmul(b: &CpuBackend, x: &[f32], rows: usize, w: &CpuWeight, y: &mut [f32]) {
    if rows >= PACKED_MIN_ROWS {
        if let Some(p) = w.packed(b.simd) {
            packed::matmul(b.simd, x, rows, p, y);
            return;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Blob, DType, WeightView};
    use std::sync::Arc;

    /// Products of many rows run on the packed copy, of few rows on the stored layout,
    /// both within f32 rounding of each other; and a product gives the same bits before
    /// and after the copy was made (results never depend on earlier calls).
    #[test]
    fn products_agree_and_do_not_depend_on_earlier_calls() {
        let (n, k) = (37, 70);
        let vals: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let blob = Arc::new(Blob::Owned(bytes));
        let view = WeightView {
            name: "w",
            dtype: DType::F32,
            rows: n,
            cols: k,
            bytes: blob.bytes(),
            blob: &blob,
        };
        let x: Vec<f32> = (0..2 * PACKED_MIN_ROWS * k)
            .map(|i| (i % 13) as f32 / 6.0 - 1.0)
            .collect();
        for level in SimdLevel::available() {
            let b = CpuBackend::with_simd(level);
            let w = CpuWeight::new(&view).unwrap();
            let run = |rows: usize| {
                let mut y = vec![f32::NAN; rows * n];
                matmul(&b, &x, rows, &w, &mut y);
                y
            };
            let before = run(3);
            let many = run(2 * PACKED_MIN_ROWS);
            assert_eq!(run(3), before, "{level:?}: 3 rows changed after packing");
            assert_eq!(run(2 * PACKED_MIN_ROWS), many, "{level:?}");
            let mut plain = vec![0f32; 2 * PACKED_MIN_ROWS * n];
            matmul_raw(level, &x, 2 * PACKED_MIN_ROWS, k, &vals, n, &mut plain);
            for (a, e) in many.iter().zip(&plain) {
                assert!(
                    (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{level:?}: {a} vs {e}"
                );
            }
        }
    }
}
