//! AVX2 + FMA + F16C versions of the decoding kernels (x86-64 CPUs since 2013), chosen
//! at run time; `format::quant::decode_range` is the portable reference they must equal.
//!
//! Every function here takes spans its caller validated (`CpuWeight` checked the
//! matrix size when it was made; `quant.rs` stays inside `rows × cols`).

use crate::tensor::{DType, QUANT_BLOCK};
use std::arch::x86_64::*;

/// Whether this CPU runs the functions below.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
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

/// `Σ a[i] b[i]` with four FMA accumulators.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8 * j)),
                _mm256_loadu_ps(pb.add(i + 8 * j)),
                *acc,
            );
        }
        i += 32;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    let mut r = _mm_cvtss_f32(h);
    while i < n {
        r += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    r
}

/// For weight rows `row0 ..`: decode each row into `row` (L1-resident) and dot it with
/// every activation row; `dst [rows, m]`.
///
/// # Safety
/// As `decode`; `row.len() == cols`, `x.len() >= m * cols`, the rows exist.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // one flat call into the target-feature region
pub unsafe fn rows_dot(
    dtype: DType,
    matrix: &[u8],
    rows: usize,
    cols: usize,
    row0: usize,
    x: &[f32],
    m: usize,
    row: &mut [f32],
    dst: &mut [f32],
) {
    for (j, d) in dst.chunks_exact_mut(m).enumerate() {
        decode(dtype, matrix, rows, cols, (row0 + j) * cols, row);
        for (r, d) in d.iter_mut().enumerate() {
            *d = dot(row, &x[r * cols..(r + 1) * cols]);
        }
    }
}
