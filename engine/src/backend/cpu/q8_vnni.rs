//! q8_0 products with integer dot products on AVX-512 VNNI, for any number of activation
//! rows: the activations are quantised to q8 per block of 32 (as `quant_x86::int_rows`
//! does) and every weight byte meets them in `vpdpbusd`.
//!
//! The stored q8_0 layout puts one weight row's 32 values in a block, so a dot-product
//! kernel ends every block of every (row, output) pair with a conversion and a scale:
//! more work than the f32 product it replaces. Here a weight is interleaved once (on
//! first use) into panels of 16 output rows in which lane `o` of each 64-byte group holds
//! 4 consecutive values of output `o`: one `vpdpbusd` with 4 activation bytes broadcast
//! advances 16 outputs by 4 values, and the per-block scaling (one conversion and one
//! fused multiply-add per 16 outputs) is amortised over 8 of them.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so the panels hold `w + 128` as u8
//! and each block's sum is started at `-128 · Σ x`; the integer result is exact.

use super::simd::SimdLevel;
use crate::tensor::{DType, QUANT_BLOCK};
use std::arch::x86_64::*;

/// Outputs per panel: one 512-bit vector of i32/f32 lanes.
const LANES: usize = 16;
/// Bytes per block and panel: 32 values of 16 outputs.
const BLOCK_BYTES: usize = QUANT_BLOCK * LANES;
/// Activation rows per register tile (8 integer + 8 float accumulators).
const MAX_TILE: usize = 8;
/// The first row tile over a panel prefetches its bytes this far ahead (a DRAM
/// latency's worth of blocks), as `packed.rs` does for few-row f32 products.
const PREFETCH_AHEAD: usize = 8192;

/// Whether the VNNI kernel runs at `level` on this CPU.
pub fn supported(level: SimdLevel) -> bool {
    matches!(level, SimdLevel::Avx512(_)) && is_x86_feature_detected!("avx512vnni")
}

/// A q8_0 `[n, k]` weight interleaved for the kernel: panel `p`, block `b` is 8 groups of
/// 64 bytes; byte `4o + i` of group `g` is `w[16p + o, 32b + 4g + i] + 128`. Outputs past
/// `n` hold zeros (byte 128) and scale 0.
pub struct Q8Panels {
    pub n: usize,
    pub k: usize,
    blocks: usize,
    data: Vec<u8>,
    /// `d[16p + o, b]` at `(p · blocks + b) · 16 + o`.
    scales: Vec<f32>,
}

impl std::fmt::Debug for Q8Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Panels[{}, {}]", self.n, self.k)
    }
}

impl Q8Panels {
    /// Interleaves a stored q8_0 matrix (`n · k` i8 values, then `n · k / 32` f16 scales).
    ///
    /// # Panics
    /// If `matrix` is not `DType::Q8_0.matrix_bytes(n, k)` bytes (the caller,
    /// `CpuWeight`, checked that when the weight was made).
    pub fn new(matrix: &[u8], n: usize, k: usize) -> Q8Panels {
        assert!(
            DType::Q8_0.matrix_bytes(n, k) == Some(matrix.len()),
            "q8_0 [{n}, {k}]: {} bytes",
            matrix.len()
        );
        let blocks = k / QUANT_BLOCK;
        let panels = n.div_ceil(LANES);
        let mut data = vec![128u8; panels * blocks * BLOCK_BYTES];
        let mut scales = vec![0f32; panels * blocks * LANES];
        let (values, stored_scales) = matrix.split_at(n * k);
        for (j, row) in values.chunks_exact(k).enumerate() {
            let (p, o) = (j / LANES, j % LANES);
            for (b, block) in row.chunks_exact(QUANT_BLOCK).enumerate() {
                let dst = &mut data[(p * blocks + b) * BLOCK_BYTES..][..BLOCK_BYTES];
                for (g, quad) in block.chunks_exact(4).enumerate() {
                    let at = g * 4 * LANES + 4 * o;
                    for (d, &v) in dst[at..at + 4].iter_mut().zip(quad) {
                        *d = v ^ 0x80;
                    }
                }
                let s = &stored_scales[2 * (j * blocks + b)..];
                scales[(p * blocks + b) * LANES + o] =
                    half::f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        Q8Panels {
            n,
            k,
            blocks,
            data,
            scales,
        }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }
}

/// Activations quantised per block of 32: values, scales and `-128 · Σ` per block.
struct QuantRows {
    q: Vec<i8>,
    d: Vec<f32>,
    bias: Vec<i32>,
}

/// `d = amax / 127` per block and values rounded to nearest (ties to even).
///
/// # Panics
/// If `k` is not a multiple of 32 or `x` is shorter than `m · k` (caller bugs).
fn quantize(x: &[f32], m: usize, k: usize) -> QuantRows {
    assert!(k.is_multiple_of(QUANT_BLOCK) && x.len() >= m * k);
    let n = m * k / QUANT_BLOCK;
    let mut rows = QuantRows {
        q: vec![0i8; m * k],
        d: vec![0f32; n],
        bias: vec![0i32; n],
    };
    // SAFETY: callers reach this only through `matmul`, after `supported` proved
    // AVX-512 F/BW; `x` holds `n` blocks and every output `n` (blocks) entries.
    unsafe { quantize_blocks(&x[..m * k], &mut rows) };
    rows
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_blocks(x: &[f32], out: &mut QuantRows) {
    let sign = _mm512_set1_ps(-0.0);
    for (b, xb) in x.chunks_exact(QUANT_BLOCK).enumerate() {
        let lo = _mm512_loadu_ps(xb.as_ptr());
        let hi = _mm512_loadu_ps(xb.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(
            _mm512_andnot_ps(sign, lo),
            _mm512_andnot_ps(sign, hi),
        ));
        let d = amax / 127.0;
        let inv = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        // |v · inv| <= 127 up to rounding; the saturating narrowing keeps it in i8.
        let qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, inv));
        let qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, inv));
        let dst = out.q.as_mut_ptr().add(b * QUANT_BLOCK);
        _mm_storeu_si128(dst as *mut __m128i, _mm512_cvtsepi32_epi8(qlo));
        _mm_storeu_si128(dst.add(16) as *mut __m128i, _mm512_cvtsepi32_epi8(qhi));
        out.d[b] = d;
        out.bias[b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
    }
}

/// `y [m, n] = x [m, k] · Wᵀ` with activations quantised to q8.
///
/// # Panics
/// If `level` is not one `supported` accepts, or the slices are shorter than the shapes
/// (caller bugs).
pub fn matmul(level: SimdLevel, x: &[f32], m: usize, w: &Q8Panels, y: &mut [f32]) {
    assert!(supported(level), "q8 VNNI kernel on a CPU without it");
    let xq = quantize(x, m, w.k);
    super::packed::by_panels(LANES, 2, x, m, w.n, w.k, y, |p0, p1, y_at_p0| {
        // SAFETY: `supported` proved AVX-512 F/BW and VNNI; `by_panels` checked the
        // extents and hands each task the disjoint columns of panels p0..p1.
        unsafe { panels_product(w, &xq, m, p0, p1, y_at_p0) }
    });
}

/// Panels `p0..p1` for every activation row, in tiles of up to 8 rows; the panel stays
/// in L1 while every tile passes over it.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn panels_product(
    w: &Q8Panels,
    xq: &QuantRows,
    m: usize,
    p0: usize,
    p1: usize,
    y: *mut f32,
) {
    for p in p0..p1 {
        let mut r0 = 0;
        while r0 < m {
            let rows = (m - r0).min(MAX_TILE);
            // Later tiles find the panel in L1 or L2.
            macro_rules! go {
                ($r:literal) => {
                    if r0 == 0 {
                        tile::<$r, true>(w, xq, r0, p, y.add((p - p0) * LANES))
                    } else {
                        tile::<$r, false>(w, xq, r0, p, y.add((p - p0) * LANES))
                    }
                };
            }
            match rows {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                4 => go!(4),
                5 => go!(5),
                6 => go!(6),
                7 => go!(7),
                _ => go!(8),
            }
            r0 += rows;
        }
    }
}

/// Rows `r0 .. r0 + R` times panel `p`; `y` points to column `16p` of row 0 (stores are
/// masked past `n`). With `PREFETCH`, asks for the weight bytes `PREFETCH_AHEAD` on and
/// the scales 4 KiB on (hints: they never fault, so past the end is harmless).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const PREFETCH: bool>(
    w: &Q8Panels,
    xq: &QuantRows,
    r0: usize,
    p: usize,
    y: *mut f32,
) {
    let (n, k, blocks) = (w.n, w.k, w.blocks);
    let panel = w.data.as_ptr().add(p * blocks * BLOCK_BYTES);
    let scales = w.scales.as_ptr().add(p * blocks * LANES);
    let xrow = |r: usize| xq.q.as_ptr().add((r0 + r) * k);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..blocks {
        let mut s = [_mm512_setzero_si512(); R];
        for (r, s) in s.iter_mut().enumerate() {
            *s = _mm512_set1_epi32(*xq.bias.get_unchecked((r0 + r) * blocks + b));
        }
        let wb = panel.add(b * BLOCK_BYTES);
        if PREFETCH {
            // Scales 4 KiB ahead (`PREFETCH_AHEAD / 8` floats: 64 blocks, further than
            // the weights' 16). The weights' block instead took 0.73-0.92 of the time at
            // beam 128 but 1.07-1.39 at beam 16 (medium q8, 5 interleaved rounds), so this
            // distance stays until a choice per row count is measured.
            let ahead = scales.add(b * LANES).wrapping_add(PREFETCH_AHEAD / 8);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
        }
        for g in 0..QUANT_BLOCK / 4 {
            if PREFETCH {
                let ahead = wb.wrapping_add(g * 4 * LANES + PREFETCH_AHEAD);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            }
            let wv = _mm512_loadu_si512(wb.add(g * 4 * LANES) as *const _);
            for (r, s) in s.iter_mut().enumerate() {
                let x4 = (xrow(r).add(b * QUANT_BLOCK + 4 * g) as *const i32).read_unaligned();
                *s = _mm512_dpbusd_epi32(*s, wv, _mm512_set1_epi32(x4));
            }
        }
        let dw = _mm512_loadu_ps(scales.add(b * LANES));
        for (r, (a, s)) in acc.iter_mut().zip(s).enumerate() {
            let d = _mm512_mul_ps(
                dw,
                _mm512_set1_ps(*xq.d.get_unchecked((r0 + r) * blocks + b)),
            );
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, *a);
        }
    }
    let j0 = p * LANES;
    let live = (n - j0).min(LANES);
    let mask: __mmask16 = if live == LANES {
        !0
    } else {
        (1u16 << live) - 1
    };
    for (r, a) in acc.into_iter().enumerate() {
        _mm512_mask_storeu_ps(y.add((r0 + r) * n), mask, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::quant::{decode_range, encode};

    /// Against the decoded weight times the q8-rounded activations (the same quantities
    /// the kernel multiplies, so only f32 summation order differs), over tails of the
    /// 16-output panels, 1-20 rows and the threaded split.
    #[test]
    fn matches_the_decoded_weight_times_quantised_activations() {
        let Some(level) = SimdLevel::available().into_iter().find(|&l| supported(l)) else {
            // No VNNI here: `quant.rs` never takes this path (its tests cover the others).
            return;
        };
        for (n, k) in [(1, 32), (17, 64), (40, 96), (300, 512), (70, 1024)] {
            let v: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919 % 1013) as f32 / 506.0 - 1.0) * 0.3)
                .collect();
            let bytes = encode("w", DType::Q8_0, &[n, k], &v).unwrap();
            let mut dense = vec![0f32; n * k];
            decode_range(DType::Q8_0, &bytes, n, k, 0, &mut dense).unwrap();
            let panels = Q8Panels::new(&bytes, n, k);
            for m in [1, 3, 8, 9, 20] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 37) % 29) as f32 / 9.0 - 1.5)
                    .collect();
                let xq = quantize(&x, m, k);
                let mut y = vec![f32::NAN; m * n + 7];
                matmul(level, &x, m, &panels, &mut y);
                assert!(y[m * n..].iter().all(|v| v.is_nan()), "wrote past y");
                for r in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k)
                            .map(|i| {
                                xq.q[r * k + i] as f32
                                    * xq.d[r * (k / 32) + i / 32]
                                    * dense[j * k + i]
                            })
                            .sum();
                        let got = y[r * n + j];
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "[{n}, {k}] m={m} [{r},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
