//! `y = x · Wᵀ` with `W` stored `[out, in]` row-major: f32 weights through the packed
//! microkernel of `packed.rs` at every row count (W packed once, on its first product,
//! and the mapped bytes then released); f16 / q8_0 / q4_0 weights through the kernels of
//! `quant.rs`.

use super::{packed, quant, CpuBackend, CpuWeight};

/// Every product of an f32 weight runs on its packed copy, so a product gives the same
/// bits on every call, and mid-size expert groups get the microkernel too: on the
/// `benches/synthetic.py` medium checkpoint, beam 128, 518-526 → 462-472 ms against the
/// stored-layout tile kernel below 64 rows (stop 22 note).
pub fn matmul(b: &CpuBackend, x: &[f32], rows: usize, w: &CpuWeight, y: &mut [f32]) {
    match w.packed(b.simd) {
        Some(p) => packed::matmul(b.simd, x, rows, p, y),
        None => quant::matmul(b.simd, b.int8, x, rows, w, y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::SimdLevel;

    /// Many rows: past any row-count threshold a kernel might have.
    const ROWS: usize = 128;
    use crate::tensor::{Blob, DType, WeightView};
    use std::sync::Arc;

    /// Products of few and many rows run on the packed copy, within f32 rounding of the
    /// plain product, and give the same bits on every call (results never depend on
    /// earlier calls).
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
        let x: Vec<f32> = (0..ROWS * k).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
        for level in SimdLevel::available() {
            let b = CpuBackend::with_simd(level);
            let w = CpuWeight::new(&view).unwrap();
            let run = |rows: usize| {
                let mut y = vec![f32::NAN; rows * n];
                matmul(&b, &x, rows, &w, &mut y);
                y
            };
            let before = run(3);
            assert!(w.owned_bytes() > 0, "{level:?}: no packed copy");
            let many = run(ROWS);
            assert_eq!(run(3), before, "{level:?}: 3 rows changed");
            assert_eq!(run(ROWS), many, "{level:?}");
            let plain: Vec<f32> = (0..ROWS * n)
                .map(|o| {
                    let (r, j) = (o / n, o % n);
                    (0..k).map(|p| x[r * k + p] * vals[j * k + p]).sum()
                })
                .collect();
            for (a, e) in many.iter().zip(&plain).chain(before.iter().zip(&plain)) {
                assert!(
                    (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{level:?}: {a} vs {e}"
                );
            }
        }
    }
}
