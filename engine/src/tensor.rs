//! Typed views of tensor bytes that live in a memory-mapped model file.

use crate::error::{Error, Result};
use half::{bf16, f16};
use std::sync::Arc;

/// Storage type of a tensor in a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    /// 8-bit block quantisation, see `QUANT_BLOCK` and docs/FORMAT.md.
    Q8_0,
    /// 4-bit block quantisation, see `QUANT_BLOCK` and docs/FORMAT.md.
    Q4_0,
}

/// Values per quantisation block (one f16 scale each), along a matrix row.
pub const QUANT_BLOCK: usize = 32;

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
        }
    }

    /// The type named `name` (as written by `name()`).
    pub fn from_name(name: &str) -> Option<DType> {
        [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I32,
            DType::I64,
            DType::Q8_0,
            DType::Q4_0,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8_0 | DType::Q4_0)
    }

    /// Bytes of one `[rows, cols]` matrix in this type, `None` when the type cannot hold
    /// that shape (quantised rows must be whole blocks).
    ///
    /// Quantised layout (planar, so kernels read aligned words): all quants row-major
    /// (q8: one i8 per value; q4: 8 values per little-endian u32, value `8w + n` in
    /// nibble `n`), then one f16 scale per block row-major, zero-padded to 4 bytes.
    pub fn matrix_bytes(self, rows: usize, cols: usize) -> Option<usize> {
        // Every step checked: shapes come from files, and a wrapped size would let a
        // tiny tensor pass for a huge one.
        let n = rows.checked_mul(cols)?;
        match self {
            DType::F32 | DType::I32 => n.checked_mul(4),
            DType::F16 | DType::BF16 => n.checked_mul(2),
            DType::I64 => n.checked_mul(8),
            DType::Q8_0 | DType::Q4_0 => {
                if !cols.is_multiple_of(QUANT_BLOCK) {
                    return None;
                }
                let quants = if self == DType::Q8_0 { n } else { n / 2 };
                let scales = (2 * (n / QUANT_BLOCK)).checked_next_multiple_of(4)?;
                quants.checked_add(scales)
            }
        }
    }

    /// Bytes of a tensor of `shape`: a stack of `[rows, last]` matrices.
    pub fn tensor_bytes(self, shape: &[usize]) -> Option<usize> {
        let cols = shape.last().copied().unwrap_or(1);
        let rows = shape[..shape.len().saturating_sub(1)]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))?;
        if !self.is_quantized() {
            return self.matrix_bytes(rows, cols);
        }
        // Quantised tensors are stored matrix by matrix along the first dimension so a
        // slice (one expert, one level) is one contiguous range.
        let (outer, inner) = match shape {
            [n, r, _] => (*n, *r),
            _ => (1, rows),
        };
        outer.checked_mul(self.matrix_bytes(inner, cols)?)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A borrowed tensor: name, type, shape and its raw little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
    pub blob: &'a Arc<Blob>,
}

/// A 2-D weight matrix `[rows, cols]` (rows = output features), possibly a slice of a
/// larger tensor (one level of `head`, one expert of `moe.gate`). It keeps the blob it
/// points into, so a backend can hold on to the bytes without copying them.
#[derive(Debug, Clone, Copy)]
pub struct WeightView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
    pub blob: &'a Arc<Blob>,
}

/// The bytes of a model file: memory-mapped, embedded in the binary, or owned.
pub enum Blob {
    Mapped(memmap2::Mmap),
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

impl Blob {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Blob::Mapped(m) => m,
            Blob::Static(s) => s,
            Blob::Owned(v) => v,
        }
    }

    /// Lets the OS drop the resident pages of `offset .. offset + len` (mapped bytes a
    /// backend copied into its own layout, so they are not held twice); a later read
    /// faults them back in from the file. A no-op for other blobs and platforms.
    pub fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Blob::Mapped(m) = self {
            // SAFETY: the map is read-only and never written, so MADV_DONTNEED only drops
            // clean file pages (the partial pages at both ends included) and any later
            // read sees the same file bytes again.
            let dropped = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
            if let Err(e) = dropped {
                log::debug!("madvise(DONTNEED) of {len} mapped bytes: {e}");
            }
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }

    /// Byte offset of `sub` inside this blob (`sub` must be borrowed from it).
    pub fn offset_of(&self, sub: &[u8]) -> Option<usize> {
        let base = self.bytes().as_ptr() as usize;
        let p = sub.as_ptr() as usize;
        (p >= base && p + sub.len() <= base + self.bytes().len()).then(|| p - base)
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.bytes().len())
    }
}

impl<'a> TensorView<'a> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major f32 copy of the whole tensor. A quantised 3-D tensor is stored slice by
    /// slice (each slice's quants, then its scales), so it decodes by its full shape, never
    /// through `as_matrix()`, whose single-matrix layout only 1-D and 2-D tensors share.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.dtype.is_quantized() {
            return crate::format::quant::decode(self.name, self.dtype, self.shape, self.bytes);
        }
        to_f32(self.name, self.dtype, self.bytes)
    }

    /// The tensor as a `[rows, cols]` matrix where `cols` is the last dimension (for a
    /// quantised 3-D tensor, use `slice3` or `to_f32`: see there).
    pub fn as_matrix(&self) -> WeightView<'a> {
        let cols = self.shape.last().copied().unwrap_or(1);
        let rows = self.numel().checked_div(cols).unwrap_or(0);
        WeightView {
            name: self.name,
            dtype: self.dtype,
            rows,
            cols,
            bytes: self.bytes,
            blob: self.blob,
        }
    }

    /// Slice `i` along the first dimension of a 3-D tensor, as a matrix.
    pub fn slice3(&self, i: usize) -> Result<WeightView<'a>> {
        let [n, r, c] = self.shape else {
            return Err(Error::tensor(
                self.name,
                format!("expected 3 dimensions, got {:?}", self.shape),
            ));
        };
        if i >= *n {
            return Err(Error::tensor(
                self.name,
                format!("slice {i} out of range {n}"),
            ));
        }
        let per = self.dtype.matrix_bytes(*r, *c).ok_or_else(|| {
            Error::tensor(self.name, format!("{} cannot hold [{r}, {c}]", self.dtype))
        })?;
        Ok(WeightView {
            name: self.name,
            dtype: self.dtype,
            rows: *r,
            cols: *c,
            bytes: &self.bytes[i * per..(i + 1) * per],
            blob: self.blob,
        })
    }

    pub fn to_i64(&self) -> Result<Vec<i64>> {
        match self.dtype {
            DType::I64 => Ok(self
                .bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect()),
            DType::I32 => Ok(self
                .bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64)
                .collect()),
            d => Err(Error::tensor(
                self.name,
                format!("expected an integer tensor, got {d}"),
            )),
        }
    }
}

impl<'a> WeightView<'a> {
    /// Row-major f32 copy of the weight (converting from f16/bf16, dequantising q8_0/q4_0).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.dtype.is_quantized() {
            return crate::format::quant::decode(
                self.name,
                self.dtype,
                &[self.rows, self.cols],
                self.bytes,
            );
        }
        to_f32(self.name, self.dtype, self.bytes)
    }
}

pub fn to_f32(name: &str, dtype: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        d => {
            return Err(Error::tensor(
                name,
                format!("expected a float tensor, got {d}"),
            ))
        }
    })
}
