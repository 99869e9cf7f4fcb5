//! CPU-resident weights: zero-copy `f32` views of the mapped file where the bytes are
//! aligned, otherwise a converted copy (f16/bf16 checkpoints are widened once at load).

use crate::error::Result;
use crate::tensor::{Blob, DType, WeightView};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug)]
enum Data {
    Mapped { blob: Arc<Blob>, offset: usize, len: usize },
    Owned(Vec<f32>),
}

#[derive(Debug)]
pub struct CpuWeight {
    pub rows: usize,
    pub cols: usize,
    data: Data,
}

impl CpuWeight {
    pub fn new(view: &WeightView<'_>) -> Result<Self> {
        let aligned = view.bytes.as_ptr() as usize % std::mem::align_of::<f32>() == 0;
        let data = match (view.dtype, view.blob.offset_of(view.bytes)) {
            (DType::F32, Some(offset)) if aligned && cfg!(target_endian = "little") => {
                Data::Mapped { blob: view.blob.clone(), offset, len: view.bytes.len() / 4 }
            }
            _ => Data::Owned(view.to_f32()?),
        };
        Ok(CpuWeight { rows: view.rows, cols: view.cols, data })
    }

    pub fn from_f32(data: Vec<f32>, rows: usize, cols: usize) -> Self {
        CpuWeight { rows, cols, data: Data::Owned(data) }
    }

    pub fn f32(&self) -> &[f32] {
        match &self.data {
            Data::Mapped { blob, offset, len } => bytemuck::cast_slice(&blob.bytes()[*offset..*offset + *len * 4]),
            Data::Owned(v) => v,
        }
    }

    pub fn to_f32_cow(&self) -> Cow<'_, [f32]> {
        Cow::Borrowed(self.f32())
    }

    pub fn add_row_into(&self, row: usize, dst: &mut [f32]) {
        let src = &self.f32()[row * self.cols..(row + 1) * self.cols];
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    }

    /// Bytes this weight holds outside the mapped file.
    pub fn owned_bytes(&self) -> usize {
        match &self.data {
            Data::Mapped { .. } => 0,
            Data::Owned(v) => v.len() * 4,
        }
    }
}
