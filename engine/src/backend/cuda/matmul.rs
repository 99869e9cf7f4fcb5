//! `y = x · Wᵀ` and the SwiGLU FFN: cuBLAS for f32 weights where available, the
//! dequantising tiled kernels of `matmul.cu` for everything else.

use super::device::Arg;
use super::{check_cols, err, i32_of, CudaBackend, CudaBuf, CudaWeight};
use crate::backend::Ffn;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::cublas::{result as blas, sys as blas_sys};

/// Tile sizes of `gemm.cuh`.
pub(crate) const TILE_M: usize = 64;
pub(crate) const TILE_N: usize = 64;
pub(crate) const GEMM_THREADS: u32 = 256;

pub(crate) fn gemm_grid(m: usize, n: usize, groups: usize) -> Result<(u32, u32, u32)> {
    Ok((
        n.div_ceil(TILE_N) as u32,
        i32_of("rows", m.div_ceil(TILE_M))? as u32,
        groups as u32,
    ))
}

impl CudaBackend {
    pub(super) fn matmul_impl(&self, x: &CudaBuf, w: &CudaWeight) -> Result<CudaBuf> {
        check_cols("matmul", x.cols, w.cols)?;
        let (m, n, k) = (x.rows, w.rows, w.cols);
        let (mi, ni, ki) = (
            i32_of("rows", m)?,
            i32_of("out features", n)?,
            i32_of("in features", k)?,
        );
        let y = self.new_f32(m, n)?;
        if m == 0 || n == 0 {
            return Ok(y);
        }
        let xp = self.dev.ptr(x.f32("matmul")?);
        if w.dtype == DType::F32 && k > 0 {
            if let Some(blas) = &self.blas {
                // Column-major view: yᵀ [n, m] = W [n, k] · xᵀ [k, m], W read transposed.
                let (alpha, beta) = (1.0f32, 0.0f32);
                self.dev
                    .ctx
                    .bind_to_thread()
                    .map_err(super::device::drv("binding the CUDA context"))?;
                // SAFETY: x holds m·k, W n·k and y m·n f32 values (checked above), all on
                // the stream cuBLAS was created with.
                unsafe {
                    blas::sgemm(
                        *blas.handle(),
                        blas_sys::cublasOperation_t::CUBLAS_OP_T,
                        blas_sys::cublasOperation_t::CUBLAS_OP_N,
                        ni,
                        mi,
                        ki,
                        &alpha,
                        w.ptr(&self.dev) as *const f32,
                        ki,
                        xp as *const f32,
                        ki,
                        &beta,
                        self.ptr(&y) as *mut f32,
                        ni,
                    )
                }
                .map_err(|e| err(format!("cuBLAS sgemm [{m}, {k}] x [{n}, {k}]ᵀ: {e:?}")))?;
                return Ok(y);
            }
        }
        let args = [
            Arg::Ptr(xp),
            Arg::Ptr(w.ptr(&self.dev)),
            Arg::Ptr(w.scales_ptr(&self.dev)),
            Arg::Ptr(self.ptr(&y)),
            Arg::I32(mi),
            Arg::I32(ni),
            Arg::I32(ki),
        ];
        self.dev.launch(
            &format!("matmul_{}", w.suffix()),
            gemm_grid(m, n, 1)?,
            GEMM_THREADS,
            &args,
        )?;
        Ok(y)
    }

    /// `(silu(x Gᵀ) ⊙ x Uᵀ) Dᵀ`: gate and up in one kernel, then the down product.
    pub(super) fn ffn_impl(&self, x: &CudaBuf, f: &Ffn<CudaWeight>) -> Result<CudaBuf> {
        if x.cols != f.gate.cols
            || x.cols != f.up.cols
            || f.gate.rows != f.up.rows
            || f.down.cols != f.gate.rows
        {
            return Err(err("ffn: weight shapes do not chain"));
        }
        if f.gate.dtype != f.up.dtype {
            return Err(err(format!(
                "ffn: gate is {} but up is {}",
                f.gate.dtype, f.up.dtype
            )));
        }
        let (m, n, k) = (x.rows, f.gate.rows, x.cols);
        let h = self.new_f32(m, n)?;
        if m > 0 && n > 0 {
            let args = [
                Arg::Ptr(self.dev.ptr(x.f32("ffn")?)),
                Arg::Ptr(f.gate.ptr(&self.dev)),
                Arg::Ptr(f.gate.scales_ptr(&self.dev)),
                Arg::Ptr(f.up.ptr(&self.dev)),
                Arg::Ptr(f.up.scales_ptr(&self.dev)),
                Arg::Ptr(self.ptr(&h)),
                Arg::I32(i32_of("rows", m)?),
                Arg::I32(i32_of("hidden", n)?),
                Arg::I32(i32_of("width", k)?),
            ];
            self.dev.launch(
                &format!("swiglu_{}", f.gate.suffix()),
                gemm_grid(m, n, 1)?,
                GEMM_THREADS,
                &args,
            )?;
        }
        self.matmul_impl(&h, &f.down)
    }
}
