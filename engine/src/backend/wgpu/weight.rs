//! Weights uploaded once, in their file type (f32, f16, bf16, q8_0, q4_0), straight from
//! the mapped file. A matrix larger than the device's largest storage binding is split
//! by rows into parts, each its own buffer; kernels run once per part.

use super::context::{err, Ctx};
use crate::error::Result;
use crate::tensor::{DType, TensorView, WeightView, QUANT_BLOCK};
use std::sync::Arc;

/// Rows `row0 .. row0 + rows` of a weight, inside `buf`.
#[derive(Debug, Clone)]
pub struct Part {
    pub buf: Arc<wgpu::Buffer>,
    pub row0: u32,
    pub rows: u32,
    /// Where the part starts in `buf`: in elements for float types, in words of quants
    /// for Q8_0/Q4_0 (see engine/shaders/weights.wgsl).
    pub base: u32,
    /// Where its f16 block scales start, in halves (Q8_0/Q4_0).
    pub sbase: u32,
}

#[derive(Debug, Clone)]
pub struct WgpuWeight {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub parts: Vec<Part>,
}

fn supported(dtype: DType, name: &str) -> Result<()> {
    if super::shaders::weight_define(dtype).is_none() {
        return Err(err(format!(
            "weight `{name}`: type {dtype} is not a weight type"
        )));
    }
    Ok(())
}

fn matrix_bytes(dtype: DType, rows: usize, cols: usize, name: &str) -> Result<usize> {
    dtype.matrix_bytes(rows, cols).ok_or_else(|| {
        err(format!(
            "weight `{name}`: {dtype} cannot hold [{rows}, {cols}]"
        ))
    })
}

/// The byte size of a weight matrix in a supported type, checked against its bytes.
fn checked_bytes(view: &WeightView<'_>) -> Result<usize> {
    supported(view.dtype, view.name)?;
    let (dtype, rows, cols) = (view.dtype, view.rows, view.cols);
    let total = matrix_bytes(dtype, rows, cols, view.name)?;
    if view.bytes.len() != total {
        return Err(err(format!(
            "weight `{}`: {} bytes for {dtype} [{rows}, {cols}]",
            view.name,
            view.bytes.len()
        )));
    }
    Ok(total)
}

/// `(base, sbase)` of a matrix starting at byte `start` of its buffer.
fn bases(dtype: DType, start: usize, rows: usize, cols: usize) -> (u32, u32) {
    match dtype {
        DType::F32 => ((start / 4) as u32, 0),
        DType::F16 | DType::BF16 => ((start / 2) as u32, 0),
        _ => {
            let quants = if dtype == DType::Q8_0 {
                rows * cols
            } else {
                rows * cols / 2
            };
            ((start / 4) as u32, ((start + quants) / 2) as u32)
        }
    }
}

impl WgpuWeight {
    pub fn new(ctx: &Ctx, view: &WeightView<'_>) -> Result<Self> {
        let total = checked_bytes(view)?;
        let (dtype, rows, cols) = (view.dtype, view.rows, view.cols);
        if (total as u64) <= ctx.max_binding {
            let buf = Arc::new(ctx.upload_weight(view.bytes)?);
            let (base, sbase) = bases(dtype, 0, rows, cols);
            return Ok(WgpuWeight {
                dtype,
                rows,
                cols,
                parts: vec![Part {
                    buf,
                    row0: 0,
                    rows: rows as u32,
                    base,
                    sbase,
                }],
            });
        }
        // Split by rows: each part is a self-contained matrix of the same type.
        let row_bytes = matrix_bytes(dtype, 1, cols, view.name)?.max(1);
        let per_part = ((ctx.max_binding as usize - 4) / row_bytes).max(1);
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = per_part.min(rows - row0);
            let bytes = part_bytes(view, row0, n)?;
            if bytes.len() as u64 > ctx.max_binding {
                return Err(err(format!(
                    "weight `{}`: one row does not fit in a storage binding",
                    view.name
                )));
            }
            let buf = Arc::new(ctx.upload_weight(&bytes)?);
            let (base, sbase) = bases(dtype, 0, n, cols);
            parts.push(Part {
                buf,
                row0: row0 as u32,
                rows: n as u32,
                base,
                sbase,
            });
            row0 += n;
        }
        Ok(WgpuWeight {
            dtype,
            rows,
            cols,
            parts,
        })
    }

    /// A whole matrix starting at byte `start` of a shared buffer.
    fn in_buffer(
        buf: &Arc<wgpu::Buffer>,
        dtype: DType,
        rows: usize,
        cols: usize,
        start: usize,
    ) -> Self {
        let (base, sbase) = bases(dtype, start, rows, cols);
        WgpuWeight {
            dtype,
            rows,
            cols,
            parts: vec![Part {
                buf: buf.clone(),
                row0: 0,
                rows: rows as u32,
                base,
                sbase,
            }],
        }
    }

    /// Several matrices of one type in one buffer, one after another, where they all fit
    /// one binding and each ends on a word, so that one kernel reads them together (a
    /// layer's key and value projections, or its query, key and value projections); else
    /// each on its own.
    pub fn together(ctx: &Ctx, views: &[&WeightView<'_>]) -> Result<Vec<Self>> {
        let Some(first) = views.first() else {
            return Ok(Vec::new());
        };
        let sizes = views
            .iter()
            .map(|v| checked_bytes(v))
            .collect::<Result<Vec<_>>>()?;
        let total: usize = sizes.iter().sum();
        let one = views.len() > 1
            && views.iter().all(|v| v.dtype == first.dtype)
            && sizes.iter().all(|n| n % 4 == 0)
            && (total as u64) <= ctx.max_binding;
        if !one {
            return views.iter().map(|v| Self::new(ctx, v)).collect();
        }
        let parts: Vec<&[u8]> = views.iter().map(|v| v.bytes).collect();
        let buf = Arc::new(ctx.upload_weights(&parts)?);
        let mut start = 0;
        Ok(views
            .iter()
            .zip(&sizes)
            .map(|(v, n)| {
                let w = Self::in_buffer(&buf, v.dtype, v.rows, v.cols, start);
                start += n;
                w
            })
            .collect())
    }

    /// [`WgpuWeight::stack`] of several 3-D tensors of one type and shape, in one buffer
    /// (`ts[0]`'s matrices, then `ts[1]`'s, ...) where they all fit one binding, so that
    /// one kernel reads them together (the experts' gate and up matrices); else each
    /// tensor stacked on its own.
    pub fn stacks(ctx: &Ctx, ts: &[&TensorView<'_>]) -> Result<Vec<Vec<Self>>> {
        let Some(first) = ts.first() else {
            return Ok(Vec::new());
        };
        // One buffer only for several tensors of one type and 3-D shape whose matrices
        // start on words and all fit one binding.
        let same = ts
            .iter()
            .all(|t| t.dtype == first.dtype && t.shape == first.shape);
        let (&[n, rows, cols], true) = (first.shape, same && ts.len() > 1) else {
            return ts.iter().map(|t| Self::stack(ctx, t)).collect();
        };
        let fits = matrix_bytes(first.dtype, rows, cols, first.name).is_ok_and(|per| {
            per % 4 == 0
                && (per as u64)
                    .checked_mul((n * ts.len()) as u64)
                    .is_some_and(|all| all <= ctx.max_binding)
        });
        if !fits {
            return ts.iter().map(|t| Self::stack(ctx, t)).collect();
        }
        supported(first.dtype, first.name)?;
        let per = matrix_bytes(first.dtype, rows, cols, first.name)?;
        for t in ts {
            if t.bytes.len() != per * n {
                return Err(err(format!(
                    "weight `{}`: {} bytes for {} [{n}, {rows}, {cols}]",
                    t.name,
                    t.bytes.len(),
                    t.dtype
                )));
            }
        }
        let parts: Vec<&[u8]> = ts.iter().map(|t| t.bytes).collect();
        let buf = Arc::new(ctx.upload_weights(&parts)?);
        Ok((0..ts.len())
            .map(|s| {
                (0..n)
                    .map(|j| Self::in_buffer(&buf, first.dtype, rows, cols, (s * n + j) * per))
                    .collect()
            })
            .collect())
    }

    /// The matrices of a 3-D tensor (e.g. a MoE layer's experts) in shared buffers, as
    /// many whole matrices per buffer as a binding holds, so that grouped kernels reach
    /// every expert through one binding.
    pub fn stack(ctx: &Ctx, t: &TensorView<'_>) -> Result<Vec<Self>> {
        let [n, rows, cols] = *t.shape else {
            return Err(err(format!(
                "weight `{}`: expected 3 dimensions, got {:?}",
                t.name, t.shape
            )));
        };
        supported(t.dtype, t.name)?;
        let per = matrix_bytes(t.dtype, rows, cols, t.name)?;
        // f16/bf16 matrices with an odd element count would start mid-word: stack only
        // where every matrix starts on a word.
        if per as u64 > ctx.max_binding || per % 4 != 0 {
            return (0..n).map(|i| Self::new(ctx, &t.slice3(i)?)).collect();
        }
        let per_buf = (ctx.max_binding as usize / per.max(1)).max(1);
        let mut out = Vec::with_capacity(n);
        let mut i0 = 0;
        while i0 < n {
            let m = per_buf.min(n - i0);
            let buf = Arc::new(ctx.upload_weight(&t.bytes[i0 * per..(i0 + m) * per])?);
            for j in 0..m {
                out.push(Self::in_buffer(&buf, t.dtype, rows, cols, j * per));
            }
            i0 += m;
        }
        Ok(out)
    }
}

/// The bytes of rows `row0 .. row0 + n` of a matrix, laid out as a matrix of their own.
fn part_bytes(view: &WeightView<'_>, row0: usize, n: usize) -> Result<Vec<u8>> {
    let (dtype, rows, cols) = (view.dtype, view.rows, view.cols);
    let b = view.bytes;
    Ok(match dtype {
        DType::F32 => b[row0 * cols * 4..(row0 + n) * cols * 4].to_vec(),
        DType::F16 | DType::BF16 => b[row0 * cols * 2..(row0 + n) * cols * 2].to_vec(),
        DType::Q8_0 | DType::Q4_0 => {
            let qrow = if dtype == DType::Q8_0 { cols } else { cols / 2 };
            let srow = 2 * cols / QUANT_BLOCK;
            let scales = rows * qrow;
            let mut v = b[row0 * qrow..(row0 + n) * qrow].to_vec();
            v.extend_from_slice(&b[scales + row0 * srow..scales + (row0 + n) * srow]);
            v.resize(v.len().next_multiple_of(4), 0);
            v
        }
        d => {
            return Err(err(format!(
                "weight `{}`: type {d} is not a weight type",
                view.name
            )))
        }
    })
}
