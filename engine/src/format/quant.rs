//! Encoding weights into a stored type and decoding them back, in the layout fixed by
//! `DType::matrix_bytes` (docs/FORMAT.md): f32/f16 little-endian, and the planar block
//! formats q8_0 / q4_0 (all quants of a matrix, then one f16 scale per block of 32).
//!
//! Rounding follows ggml's reference quantisers (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`) so a model quantised here and there agrees value for value.

use crate::error::{Error, Result};
use crate::tensor::{DType, QUANT_BLOCK};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

/// Largest finite f16, the bound for f16 weights and for block scales.
const F16_MAX: f32 = 65504.0;

/// `(matrices, rows, cols)` of a tensor as the stored layout sees it: a 3-D tensor is a
/// stack of matrices, anything else one matrix whose columns are the last dimension.
pub fn matrix_split(shape: &[usize]) -> (usize, usize, usize) {
    let cols = shape.last().copied().unwrap_or(1);
    match shape {
        [n, r, c] => (*n, *r, *c),
        _ => (
            1,
            shape
                .iter()
                .product::<usize>()
                .checked_div(cols)
                .unwrap_or(0),
            cols,
        ),
    }
}

/// Encodes a row-major f32 tensor of `shape` into `dtype`'s bytes. Rejects NaN/Inf and
/// values an f16 (or an f16 block scale) cannot hold, naming the tensor and the index.
pub fn encode(name: &str, dtype: DType, shape: &[usize], values: &[f32]) -> Result<Vec<u8>> {
    let numel: usize = shape.iter().product();
    if values.len() != numel {
        return Err(Error::tensor(
            name,
            format!("{} values for shape {shape:?}", values.len()),
        ));
    }
    check_finite(name, values)?;
    let total = dtype.tensor_bytes(shape).ok_or_else(|| {
        Error::tensor(
            name,
            format!(
                "{dtype} cannot hold shape {shape:?} (rows must be whole blocks of {QUANT_BLOCK})"
            ),
        )
    })?;
    let mut out = vec![0u8; total];
    match dtype {
        DType::F32 if cfg!(target_endian = "little") => {
            out.copy_from_slice(bytemuck::cast_slice(values))
        }
        DType::F32 => out
            .par_chunks_mut(4)
            .zip(values.par_iter())
            .for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes())),
        DType::F16 => {
            if let Some(i) = values.iter().position(|v| v.abs() > F16_MAX) {
                return Err(Error::tensor(
                    name,
                    format!("value {} at index {i} does not fit in f16", values[i]),
                ));
            }
            out.par_chunks_mut(2)
                .zip(values.par_iter())
                .for_each(|(o, v)| o.copy_from_slice(&f16::from_f32(*v).to_le_bytes()));
        }
        DType::BF16 => out
            .par_chunks_mut(2)
            .zip(values.par_iter())
            .for_each(|(o, v)| o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        DType::Q8_0 | DType::Q4_0 => {
            let (n, rows, cols) = matrix_split(shape);
            let per = total / n.max(1);
            for (m, dst) in out.chunks_mut(per.max(1)).enumerate().take(n) {
                let src = &values[m * rows * cols..(m + 1) * rows * cols];
                quantize_matrix(dtype, rows, cols, src, dst)
                    .map_err(|msg| Error::tensor(name, msg))?;
            }
        }
        DType::I32 | DType::I64 => {
            return Err(Error::tensor(
                name,
                format!("cannot encode weights as {dtype}"),
            ))
        }
    }
    Ok(out)
}

fn check_finite(name: &str, values: &[f32]) -> Result<()> {
    match values.par_iter().position_first(|v| !v.is_finite()) {
        Some(i) => Err(Error::tensor(
            name,
            format!("non-finite value {} at index {i}", values[i]),
        )),
        None => Ok(()),
    }
}

/// Quantises one `[rows, cols]` matrix into `dst` (`dtype.matrix_bytes(rows, cols)` bytes).
fn quantize_matrix(
    dtype: DType,
    rows: usize,
    cols: usize,
    src: &[f32],
    dst: &mut [u8],
) -> std::result::Result<(), String> {
    let n = rows * cols;
    if n == 0 {
        return Ok(());
    }
    let per_row = cols / QUANT_BLOCK;
    let block_bytes = if dtype == DType::Q8_0 {
        QUANT_BLOCK
    } else {
        QUANT_BLOCK / 2
    };
    let (quants, scales) = dst.split_at_mut(block_bytes * per_row * rows);
    let scales = &mut scales[..2 * (n / QUANT_BLOCK)];
    let bad = quants
        .par_chunks_mut(block_bytes * per_row)
        .zip(scales.par_chunks_mut(2 * per_row))
        .zip(src.par_chunks(cols))
        .enumerate()
        .find_map_any(|(r, ((q, s), x))| {
            for (b, ((qb, sb), xb)) in q
                .chunks_exact_mut(block_bytes)
                .zip(s.chunks_exact_mut(2))
                .zip(x.chunks_exact(QUANT_BLOCK))
                .enumerate()
            {
                let xb: &[f32; QUANT_BLOCK] =
                    xb.try_into().expect("chunks_exact yields whole blocks");
                let d = if dtype == DType::Q8_0 {
                    q8_block(xb, qb)
                } else {
                    q4_block(xb, qb)
                };
                if d.abs() > F16_MAX {
                    return Some((r, b));
                }
                sb.copy_from_slice(&f16::from_f32(d).to_le_bytes());
            }
            None
        });
    match bad {
        Some((r, b)) => Err(format!(
            "block {b} of row {r} needs a scale beyond the f16 range; keep this tensor f32"
        )),
        None => Ok(()),
    }
}

/// ggml `quantize_row_q8_0_ref`: `d = max|x| / 127`, `q = round(x / d)`. Returns `d`.
#[inline]
fn q8_block(x: &[f32; QUANT_BLOCK], q: &mut [u8]) -> f32 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(x) {
        *q = ((v * id).round() as i8) as u8;
    }
    d
}

/// ggml `quantize_row_q4_0_ref`: `d = m / -8` with `m` the value of largest magnitude
/// (sign kept, the first one on ties), `q = min(15, trunc(x / d + 8.5))`, stored as
/// 8 nibbles per little-endian u32 (value `8w + n` in nibble `n`). Returns `d`.
#[inline]
fn q4_block(x: &[f32; QUANT_BLOCK], q: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (word, xs) in q.chunks_exact_mut(4).zip(x.chunks_exact(8)) {
        let mut w = 0u32;
        for (n, v) in xs.iter().enumerate() {
            // `as u8` truncates toward zero and saturates, like ggml's (int8_t) cast here
            // (the argument is in [0, 16.5]).
            let nib = ((v * id + 8.5) as u8).min(15) as u32;
            w |= nib << (4 * n);
        }
        word.copy_from_slice(&w.to_le_bytes());
    }
    d
}

/// Decodes a whole tensor of `shape` to row-major f32.
pub fn decode(name: &str, dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Vec<f32>> {
    if dtype.tensor_bytes(shape) != Some(bytes.len()) {
        return Err(Error::tensor(
            name,
            format!("{} bytes do not hold {dtype} {shape:?}", bytes.len()),
        ));
    }
    let (n, rows, cols) = matrix_split(shape);
    let mut out = vec![0f32; n * rows * cols];
    if n * rows * cols == 0 {
        return Ok(out);
    }
    let per = bytes.len() / n;
    for (m, dst) in out.chunks_mut(rows * cols).enumerate() {
        decode_range(dtype, &bytes[m * per..(m + 1) * per], rows, cols, 0, dst)
            .map_err(|msg| Error::tensor(name, msg))?;
    }
    Ok(out)
}

/// Decodes `out.len()` values of one stored `[rows, cols]` matrix, starting at flat
/// (row-major) index `start`, into `out`. For q8_0/q4_0, `start` and `out.len()` must be
/// whole blocks. The hot loop of the CPU backend's kernels: no allocation, no alignment
/// requirement on `matrix`, written so the compiler vectorises it.
#[inline(always)]
pub fn decode_range(
    dtype: DType,
    matrix: &[u8],
    rows: usize,
    cols: usize,
    start: usize,
    out: &mut [f32],
) -> std::result::Result<(), String> {
    let (a, b) = (start, start + out.len());
    let blocks_ok = !dtype.is_quantized() || (a % QUANT_BLOCK == 0 && b % QUANT_BLOCK == 0);
    if b > rows * cols || !blocks_ok || dtype.matrix_bytes(rows, cols) != Some(matrix.len()) {
        return Err(format!(
            "cannot decode values {a}..{b} of {dtype} [{rows}, {cols}] from {} bytes",
            matrix.len()
        ));
    }
    match dtype {
        DType::F32 => {
            for (o, v) in out.iter_mut().zip(matrix[4 * a..4 * b].chunks_exact(4)) {
                *o = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            }
        }
        DType::F16 => match bytemuck::try_cast_slice::<u8, f16>(&matrix[2 * a..2 * b]) {
            Ok(h) if cfg!(target_endian = "little") => h.convert_to_f32_slice(out),
            _ => {
                for (o, v) in out.iter_mut().zip(matrix[2 * a..2 * b].chunks_exact(2)) {
                    *o = f16::from_le_bytes([v[0], v[1]]).to_f32();
                }
            }
        },
        DType::BF16 => {
            for (o, v) in out.iter_mut().zip(matrix[2 * a..2 * b].chunks_exact(2)) {
                *o = bf16::from_le_bytes([v[0], v[1]]).to_f32();
            }
        }
        DType::Q8_0 => {
            let base = rows * cols;
            let scales = &matrix[base + 2 * (a / QUANT_BLOCK)..base + 2 * (b / QUANT_BLOCK)];
            for ((o, q), s) in out
                .chunks_exact_mut(QUANT_BLOCK)
                .zip(matrix[a..b].chunks_exact(QUANT_BLOCK))
                .zip(scales.chunks_exact(2))
            {
                let d = f16::from_le_bytes([s[0], s[1]]).to_f32();
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = (q as i8) as f32 * d;
                }
            }
        }
        DType::Q4_0 => {
            let base = rows * cols / 2;
            let scales = &matrix[base + 2 * (a / QUANT_BLOCK)..base + 2 * (b / QUANT_BLOCK)];
            for ((o, q), s) in out
                .chunks_exact_mut(QUANT_BLOCK)
                .zip(matrix[a / 2..b / 2].chunks_exact(QUANT_BLOCK / 2))
                .zip(scales.chunks_exact(2))
            {
                let d = f16::from_le_bytes([s[0], s[1]]).to_f32();
                for (o, w) in o.chunks_exact_mut(8).zip(q.chunks_exact(4)) {
                    let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                    for (n, o) in o.iter_mut().enumerate() {
                        *o = (((w >> (4 * n)) & 15) as i32 - 8) as f32 * d;
                    }
                }
            }
        }
        DType::I32 | DType::I64 => return Err(format!("{dtype} is not a weight type")),
    }
    Ok(())
}

/// The f16 block scales of a quantised matrix, for checks (finite, in range).
pub fn block_scales(
    dtype: DType,
    matrix: &[u8],
    rows: usize,
    cols: usize,
) -> impl Iterator<Item = f32> + '_ {
    let n = rows * cols;
    let base = match dtype {
        DType::Q8_0 => n,
        DType::Q4_0 => n / 2,
        _ => matrix.len(),
    };
    let end = if dtype.is_quantized() {
        base + 2 * (n / QUANT_BLOCK)
    } else {
        base
    };
    matrix
        .get(base..end)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|s| f16::from_le_bytes([s[0], s[1]]).to_f32())
}
