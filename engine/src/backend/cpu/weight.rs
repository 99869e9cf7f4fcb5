//! CPU-resident weights: zero-copy views of the mapped file in their stored type (f32,
//! f16, q8_0, q4_0), decoded block by block inside the kernels. Only bf16 and f32 bytes
//! that are not 4-byte aligned (possible in a checkpoint) are widened to an f32 copy.

use super::err;
use super::packed::Packed;
use super::simd::SimdLevel;
use crate::error::Result;
use crate::format::quant;
use crate::tensor::{Blob, DType, WeightView};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

#[derive(Debug)]
enum Data {
    /// `len` bytes at `offset` of the blob, in `CpuWeight::dtype`.
    Mapped {
        blob: Arc<Blob>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

#[derive(Debug)]
pub struct CpuWeight {
    pub rows: usize,
    pub cols: usize,
    dtype: DType,
    data: Data,
    /// f32 values packed for the microkernel of `packed.rs`, made on the first product
    /// (weights never multiplied, such as embedding tables, are never copied).
    packed: OnceLock<Packed>,
    /// q8_0 values interleaved for the VNNI kernel of `q8_vnni.rs`, made on the first
    /// integer product.
    #[cfg(target_arch = "x86_64")]
    q8_panels: OnceLock<super::q8_vnni::Q8Panels>,
}

impl CpuWeight {
    pub fn new(view: &WeightView<'_>) -> Result<Self> {
        let (rows, cols) = (view.rows, view.cols);
        if view.dtype.matrix_bytes(rows, cols) != Some(view.bytes.len()) {
            return Err(err(format!(
                "weight `{}`: {} bytes do not hold a {} [{rows}, {cols}] matrix",
                view.name,
                view.bytes.len(),
                view.dtype
            )));
        }
        let mapped = |dtype| {
            view.blob.offset_of(view.bytes).map(|offset| CpuWeight {
                rows,
                cols,
                dtype,
                data: Data::Mapped {
                    blob: view.blob.clone(),
                    offset,
                    len: view.bytes.len(),
                },
                packed: OnceLock::new(),
                #[cfg(target_arch = "x86_64")]
                q8_panels: OnceLock::new(),
            })
        };
        let aligned = (view.bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>());
        let zero_copy = match view.dtype {
            DType::F32 => aligned && cfg!(target_endian = "little"),
            // The kernels read these through byte loads: any alignment will do.
            DType::F16 | DType::Q8_0 | DType::Q4_0 => true,
            _ => false,
        };
        if let Some(w) = zero_copy.then(|| mapped(view.dtype)).flatten() {
            return Ok(w);
        }
        Ok(CpuWeight {
            rows,
            cols,
            dtype: DType::F32,
            data: Data::Owned(view.to_f32()?),
            packed: OnceLock::new(),
            #[cfg(target_arch = "x86_64")]
            q8_panels: OnceLock::new(),
        })
    }

    pub fn from_f32(data: Vec<f32>, rows: usize, cols: usize) -> Self {
        CpuWeight {
            rows,
            cols,
            dtype: DType::F32,
            data: Data::Owned(data),
            packed: OnceLock::new(),
            #[cfg(target_arch = "x86_64")]
            q8_panels: OnceLock::new(),
        }
    }

    /// The type the kernels read: the stored type, or f32 for a widened copy.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The values as an f32 slice, when the weight is held as f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::Owned(v) => Some(v),
            Data::Mapped { .. } if self.dtype == DType::F32 => {
                Some(bytemuck::cast_slice(self.bytes()))
            }
            Data::Mapped { .. } => None,
        }
    }

    /// The f32 values packed for `level` (made on first use), or None for a weight not
    /// held as f32.
    pub(super) fn packed(&self, level: SimdLevel) -> Option<&Packed> {
        let v = self.as_f32()?;
        let p = self.packed.get_or_init(|| {
            let p = Packed::new(level, v, self.rows, self.cols);
            // Products only read the packed copy from now on: keep RSS at one copy.
            self.release_mapped();
            p
        });
        // One backend, one level: a copy for another level is never asked for.
        (p.width == super::packed::width(level)).then_some(p)
    }

    /// The q8_0 values interleaved for the VNNI kernel (made on first use), or None for
    /// another type.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn q8_panels(&self) -> Option<&super::q8_vnni::Q8Panels> {
        (self.dtype == DType::Q8_0).then(|| {
            self.q8_panels.get_or_init(|| {
                let p = super::q8_vnni::Q8Panels::new(self.bytes(), self.rows, self.cols);
                // Only the panels are read from now on: keep RSS at one copy.
                self.release_mapped();
                p
            })
        })
    }

    /// Lets the OS drop the mapped pages of the stored bytes (a copy in the kernels'
    /// layout replaced them); a later read faults them back in from the file.
    fn release_mapped(&self) {
        if let Data::Mapped { blob, offset, len } = &self.data {
            blob.release(*offset, *len);
        }
    }

    /// The stored bytes (f32 values as bytes for an owned copy).
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Mapped { blob, offset, len } => &blob.bytes()[*offset..*offset + *len],
            Data::Owned(v) => bytemuck::cast_slice(v),
        }
    }

    /// Decodes `out.len()` values starting at flat index `start` (whole blocks for
    /// quantised weights; rows always are).
    #[inline(always)]
    pub fn decode(&self, start: usize, out: &mut [f32]) {
        if let Some(v) = self.as_f32() {
            out.copy_from_slice(&v[start..start + out.len()]);
            return;
        }
        // Sizes were checked when the weight was made; callers pass in-range spans.
        if let Err(msg) =
            quant::decode_range(self.dtype, self.bytes(), self.rows, self.cols, start, out)
        {
            unreachable!("{msg}");
        }
    }

    /// All values as f32: borrowed when held as f32, else decoded (small tensors only:
    /// norm weights).
    pub fn to_f32_cow(&self) -> Cow<'_, [f32]> {
        match self.as_f32() {
            Some(v) => Cow::Borrowed(v),
            None => {
                let mut out = vec![0f32; self.rows * self.cols];
                self.decode(0, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// `dst += row`, decoding a block at a time.
    pub fn add_row_into(&self, row: usize, dst: &mut [f32]) {
        let start = row * self.cols;
        if let Some(v) = self.as_f32() {
            dst.iter_mut()
                .zip(&v[start..start + self.cols])
                .for_each(|(d, s)| *d += s);
            return;
        }
        let mut buf = [0f32; 8 * crate::tensor::QUANT_BLOCK];
        for (i, d) in dst[..self.cols].chunks_mut(buf.len()).enumerate() {
            let tmp = &mut buf[..d.len()];
            self.decode(start + i * 8 * crate::tensor::QUANT_BLOCK, tmp);
            d.iter_mut().zip(tmp.iter()).for_each(|(d, s)| *d += s);
        }
    }

    /// Bytes this weight holds outside the mapped file (a widened copy, a packed copy).
    pub fn owned_bytes(&self) -> usize {
        let packed = self.packed.get().map_or(0, Packed::bytes);
        #[cfg(target_arch = "x86_64")]
        let packed = packed + self.q8_panels.get().map_or(0, |p| p.bytes());
        packed
            + match &self.data {
                Data::Mapped { .. } => 0,
                Data::Owned(v) => v.len() * 4,
            }
    }
}
