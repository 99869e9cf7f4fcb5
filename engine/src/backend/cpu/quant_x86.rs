//! AVX2 + FMA + F16C kernels (x86-64 CPUs since 2013), chosen at run time: block
//! decoding (`format::quant::decode_range` is the portable reference it must equal) and
//! integer q8 dot products of quantised weights with q8-quantised activations.
//!
//! Every function here takes spans its caller validated (`CpuWeight` checked the
//! matrix size when it was made; `quant.rs` stays inside `rows × cols`).

use crate::tensor::{DType, QUANT_BLOCK};
use std::arch::x86_64::*;

/// Whether `int_rows` handles weights of this type.
pub fn int_dot_supported(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 32 q8_0 values (one i8 each) times `d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(q: *const u8, d: f32, out: *mut f32) {
    let dv = _mm256_set1_ps(d);
    for p in 0..4 {
        let b = _mm_loadl_epi64(q.add(8 * p) as *const __m128i);
        let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
        _mm256_storeu_ps(out.add(8 * p), _mm256_mul_ps(v, dv));
    }
}

/// 32 q4_0 values times `d`. In the layout (value `8w + n` in nibble `n` of the
/// little-endian word `w`), byte `j` holds value `2j` in its low and `2j + 1` in its
/// high nibble, so unpacking low/high bytes restores the order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_block(q: *const u8, d: f32, out: *mut f32) {
    let dv = _mm256_set1_ps(d);
    let bytes = _mm_loadu_si128(q as *const __m128i);
    let mask = _mm_set1_epi8(0x0f);
    let eight = _mm_set1_epi8(8);
    let lo = _mm_and_si128(bytes, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    let halves = [
        _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), eight),
        _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), eight),
    ];
    for (i, v) in halves.into_iter().enumerate() {
        let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
        let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
        _mm256_storeu_ps(out.add(16 * i), _mm256_mul_ps(a, dv));
        _mm256_storeu_ps(out.add(16 * i + 8), _mm256_mul_ps(b, dv));
    }
}

/// Decodes `out.len()` values of a stored `[rows, cols]` matrix from flat index `start`
/// (whole blocks for q8_0/q4_0).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `matrix` holds `dtype.matrix_bytes(rows, cols)` bytes
/// and `start + out.len() <= rows * cols`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn decode(
    dtype: DType,
    matrix: &[u8],
    rows: usize,
    cols: usize,
    start: usize,
    out: &mut [f32],
) {
    let n = out.len();
    debug_assert!(start + n <= rows * cols && dtype.matrix_bytes(rows, cols) == Some(matrix.len()));
    let (m, o) = (matrix.as_ptr(), out.as_mut_ptr());
    match dtype {
        DType::F16 => {
            let src = m.add(2 * start);
            let mut i = 0;
            while i + 8 <= n {
                _mm256_storeu_ps(
                    o.add(i),
                    _mm256_cvtph_ps(_mm_loadu_si128(src.add(2 * i) as *const __m128i)),
                );
                i += 8;
            }
            while i < n {
                *o.add(i) = f16_at(src.add(2 * i));
                i += 1;
            }
        }
        DType::Q8_0 | DType::Q4_0 => {
            let q4 = dtype == DType::Q4_0;
            let scales = m.add(if q4 { rows * cols / 2 } else { rows * cols });
            let b0 = start / QUANT_BLOCK;
            for b in 0..n / QUANT_BLOCK {
                let d = f16_at(scales.add(2 * (b0 + b)));
                let v = (b0 + b) * QUANT_BLOCK;
                if q4 {
                    q4_block(m.add(v / 2), d, o.add(b * QUANT_BLOCK));
                } else {
                    q8_block(m.add(v), d, o.add(b * QUANT_BLOCK));
                }
            }
        }
        _ => {
            if let Err(msg) =
                crate::format::quant::decode_range(dtype, matrix, rows, cols, start, out)
            {
                unreachable!("{msg}");
            }
        }
    }
}

/// Quantises rows of `k` values to q8 per block of 32 (`d = amax / 127`, values
/// rounded to nearest), the activation side of the integer products.
pub fn quantize_rows(x: &[f32], k: usize, q: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), db) in x
        .chunks_exact(QUANT_BLOCK)
        .zip(q.chunks_exact_mut(QUANT_BLOCK))
        .zip(d.iter_mut())
    {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        *db = scale;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
    debug_assert_eq!(x.len() % k, 0);
}

/// The 32 values of block `b` as i8 (q4_0 nibbles unpacked and re-centred).
#[inline(always)]
unsafe fn block_i8(q4: bool, m: *const u8, b: usize) -> __m256i {
    if !q4 {
        return _mm256_loadu_si256(m.add(b * QUANT_BLOCK) as *const __m256i);
    }
    let bytes = _mm_loadu_si128(m.add(b * QUANT_BLOCK / 2) as *const __m128i);
    let mask = _mm_set1_epi8(0x0f);
    let eight = _mm_set1_epi8(8);
    let lo = _mm_and_si128(bytes, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    _mm256_set_m128i(
        _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), eight),
        _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), eight),
    )
}

/// For weight rows `row0 ..` (as many as `dst` holds): `dst [rows, m]` of integer block
/// products with `m` quantised activation rows (`xq [m, k]`, `xd [m, k / 32]`).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `matrix` holds a q8_0/q4_0 `[rows, cols]` matrix;
/// `row0 + dst.len() / m <= rows`; `xq`, `xd` hold `m` rows; `1 <= m <= 8`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // one flat call into the target-feature region
pub unsafe fn int_rows(
    dtype: DType,
    matrix: &[u8],
    rows: usize,
    cols: usize,
    row0: usize,
    xq: &[i8],
    xd: &[f32],
    m: usize,
    dst: &mut [f32],
) {
    macro_rules! go {
        ($m:literal) => {
            int_rows_m::<$m>(dtype, matrix, rows, cols, row0, xq, xd, dst)
        };
    }
    match m {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        _ => go!(8),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn int_rows_m<const M: usize>(
    dtype: DType,
    matrix: &[u8],
    rows: usize,
    cols: usize,
    row0: usize,
    xq: &[i8],
    xd: &[f32],
    dst: &mut [f32],
) {
    let q4 = dtype == DType::Q4_0;
    let blocks = cols / QUANT_BLOCK;
    debug_assert!(xq.len() >= M * cols && xd.len() >= M * blocks);
    debug_assert!(row0 + dst.len() / M <= rows);
    let m = matrix.as_ptr();
    let scales = m.add(if q4 { rows * cols / 2 } else { rows * cols });
    let ones = _mm256_set1_epi16(1);
    let (xq, xd) = (xq.as_ptr(), xd.as_ptr());
    for (jj, d) in dst.chunks_exact_mut(M).enumerate() {
        let b0 = (row0 + jj) * blocks;
        let mut acc = [_mm256_setzero_ps(); M];
        for b in 0..blocks {
            let wv = block_i8(q4, m, b0 + b);
            let dw = f16_at(scales.add(2 * (b0 + b)));
            // maddubs multiplies unsigned by signed bytes: move w's sign onto x.
            let aw = _mm256_sign_epi8(wv, wv);
            for (i, acc) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_si256(xq.add(i * cols + b * QUANT_BLOCK) as *const __m256i);
                let sx = _mm256_sign_epi8(xv, wv);
                let s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                let scale = _mm256_set1_ps(dw * *xd.add(i * blocks + b));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), scale, *acc);
            }
        }
        for (o, a) in d.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
}

#[inline(always)]
unsafe fn hsum(s: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h)
}
