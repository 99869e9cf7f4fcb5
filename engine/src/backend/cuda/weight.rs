//! Weights uploaded once in their file type (f32, f16, bf16, q8_0, q4_0); the kernels
//! widen them to f32 as they read.

use super::device::Device;
use super::err;
use crate::error::Result;
use crate::tensor::{DType, WeightView};
use cudarc::driver::CudaSlice;

pub struct CudaWeight {
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    /// The matrix bytes exactly as in the file (quants, then block scales).
    data: CudaSlice<u8>,
    /// Byte offset of the f16 block scales (quantised types).
    scales_at: usize,
}

impl CudaWeight {
    pub fn new(dev: &Device, view: &WeightView<'_>) -> Result<Self> {
        let (rows, cols, dtype) = (view.rows, view.cols, view.dtype);
        if !matches!(
            dtype,
            DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0 | DType::Q4_0
        ) {
            return Err(err(format!(
                "weight `{}`: type {dtype} cannot be a weight",
                view.name
            )));
        }
        let want = dtype.matrix_bytes(rows, cols).ok_or_else(|| {
            err(format!(
                "weight `{}`: {dtype} cannot hold [{rows}, {cols}]",
                view.name
            ))
        })?;
        if view.bytes.len() != want {
            return Err(err(format!(
                "weight `{}`: {} bytes for {dtype} [{rows}, {cols}], expected {want}",
                view.name,
                view.bytes.len()
            )));
        }
        let scales_at = match dtype {
            DType::Q8_0 => rows * cols,
            DType::Q4_0 => rows * cols / 2,
            _ => 0,
        };
        Ok(CudaWeight {
            rows,
            cols,
            dtype,
            data: dev.upload(view.bytes)?,
            scales_at,
        })
    }

    /// Kernel-name suffix of the storage type.
    pub fn suffix(&self) -> &'static str {
        match self.dtype {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q8_0 => "q8",
            DType::Q4_0 => "q4",
            _ => "f32",
        }
    }

    pub fn is_float(&self) -> bool {
        self.dtype.is_float()
    }

    pub fn ptr(&self, dev: &Device) -> u64 {
        dev.ptr(&self.data)
    }

    /// Address of the block scales; 0 (unused by the kernels) for float types.
    pub fn scales_ptr(&self, dev: &Device) -> u64 {
        if self.dtype.is_quantized() {
            self.ptr(dev) + self.scales_at as u64
        } else {
            0
        }
    }

    /// Bytes held on the device.
    pub fn device_bytes(&self) -> usize {
        self.data.len()
    }
}
