//! `y = x · Wᵀ` with `W` stored `[out, in]` row-major: f32 weights through the tile
//! kernel of `gemm_nt.rs` (no packing) below `PACKED_MIN_ROWS` rows, through the packed
//! microkernel of `packed.rs` from there (W packed once, on first use); f16 / q8_0 /
//! q4_0 weights through the kernels of `quant.rs`.

use super::gemm_nt::{gemm_nt, Nt};
use super::simd::SimdLevel;
use super::{packed, quant, CpuBackend, CpuWeight};

/// From this many rows a weight is packed for the microkernel (paid once; from then on
/// every product with it uses the copy); weights only ever used by decode steps of a few
/// beams or small expert groups stay as mapped, unpacked.
pub(super) const PACKED_MIN_ROWS: usize = 64;

pub fn matmul(b: &CpuBackend, x: &[f32], rows: usize, w: &CpuWeight, y: &mut [f32]) {
    let packed = match w.packed_if_made() {
        Some(p) if p.width == packed::width(b.simd) => Some(p),
        _ if rows >= PACKED_MIN_ROWS => w.packed(b.simd),
        _ => None,
    };
    if let Some(p) = packed {
        packed::matmul(b.simd, x, rows, p, y);
        return;
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

    /// A weight packed by a product of many rows serves later products of any row count
    /// from the copy, with the results of the unpacked kernel.
    #[test]
    fn a_packed_weight_serves_every_row_count() {
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
        for level in SimdLevel::available() {
            let b = CpuBackend::with_simd(level);
            let w = CpuWeight::new(&view).unwrap();
            let x: Vec<f32> = (0..PACKED_MIN_ROWS * k)
                .map(|i| (i % 13) as f32 / 6.0 - 1.0)
                .collect();
            let unpacked = |rows: usize| {
                let mut y = vec![0f32; rows * n];
                matmul_raw(level, &x, rows, k, &vals, n, &mut y);
                y
            };
            assert!(w.packed_if_made().is_none());
            for rows in [3, PACKED_MIN_ROWS, 1, 5] {
                let mut y = vec![f32::NAN; rows * n];
                matmul(&b, &x, rows, &w, &mut y);
                for (a, e) in y.iter().zip(unpacked(rows)) {
                    assert!(
                        (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{level:?} {rows} rows: {a} vs {e}"
                    );
                }
                assert_eq!(w.packed_if_made().is_some(), rows != 3, "{rows} rows");
            }
        }
    }
}
