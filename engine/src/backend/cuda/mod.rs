//! The CUDA backend for server GPUs (feature `cuda`).
//!
//! Kernels are the `.cu` files in `engine/shaders/cuda/` (one op family per file, mirroring
//! the WGSL ones), compiled at run time by NVRTC for the device's architecture and
//! cached on disk. The CUDA libraries are loaded dynamically: a build with this feature
//! runs on machines without CUDA, where creating the backend returns an error.
//!
//! Activations are f32; weights stay in their file type and are widened in the
//! kernels; the decoder's KV cache is f16 unless `ONEREC_CUDA_KV=f32`. The f32 products
//! go through cuBLAS when `libcublas.so.13` is present (`ONEREC_CUDA_CUBLAS=0` turns it
//! off), every other product through the kernels of `matmul.cu`.

mod attention;
mod cache;
pub mod compile;
mod device;
pub mod kernels;
pub mod libs;
mod matmul;
mod moe;
mod select;
mod weight;

pub use select::{CudaCounts, CudaIndex};
pub use weight::CudaWeight;

use super::{
    Backend, BeamInputs, BeamPlan, BeamStep, Candidate, Ffn, Finished, HostBeams, KeyMap, Moe,
    SelectGroup,
};
use crate::error::{Error, Result};
use crate::tensor::WeightView;
use crate::trie::Trie;
use cudarc::driver::CudaSlice;
use device::{drv, Arg, Device};
use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::Backend {
        backend: "cuda".into(),
        msg: msg.into(),
    }
}

/// Choices a caller may override; [`CudaOptions::from_env`] reads them from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    /// Device ordinal (`ONEREC_CUDA_DEVICE`, default 0).
    pub device: usize,
    /// Store the KV caches in f16 (`ONEREC_CUDA_KV=f16|f32`, default f16).
    pub kv_f16: bool,
    /// Use cuBLAS for f32 products when the library is present (`ONEREC_CUDA_CUBLAS=0|1`).
    pub cublas: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            device: 0,
            kv_f16: true,
            cublas: true,
        }
    }
}

impl CudaOptions {
    pub fn from_env() -> Result<Self> {
        let mut o = CudaOptions::default();
        if let Ok(v) = std::env::var("ONEREC_CUDA_DEVICE") {
            o.device = v
                .trim()
                .parse()
                .map_err(|_| err(format!("ONEREC_CUDA_DEVICE=`{v}` is not a device ordinal")))?;
        }
        if let Ok(v) = std::env::var("ONEREC_CUDA_KV") {
            o.kv_f16 = match v.trim() {
                "f16" => true,
                "f32" => false,
                _ => return Err(err(format!("ONEREC_CUDA_KV=`{v}`: expected f16 or f32"))),
            };
        }
        if let Ok(v) = std::env::var("ONEREC_CUDA_CUBLAS") {
            o.cublas = match v.trim() {
                "1" | "on" => true,
                "0" | "off" => false,
                _ => return Err(err(format!("ONEREC_CUDA_CUBLAS=`{v}`: expected 0 or 1"))),
            };
        }
        Ok(o)
    }
}

/// Storage of an activation buffer.
pub(crate) enum BufData {
    F32(CudaSlice<f32>),
    /// Key/value caches (`kv_f16`): read by attention, written by `write_rows`.
    F16(CudaSlice<u16>),
}

/// A row-major `[rows, cols]` matrix on the device.
pub struct CudaBuf {
    rows: usize,
    cols: usize,
    data: BufData,
}

impl CudaBuf {
    fn len(&self) -> usize {
        self.rows * self.cols
    }

    fn f32(&self, op: &str) -> Result<&CudaSlice<f32>> {
        match &self.data {
            BufData::F32(s) => Ok(s),
            BufData::F16(_) => Err(err(format!(
                "{op}: an f16 key/value cache cannot be an input here"
            ))),
        }
    }
}

pub struct CudaBackend {
    dev: Device,
    blas: Option<cudarc::cublas::CudaBlas>,
    opts: CudaOptions,
    /// Per MoE layer, the device table of expert weight addresses, keyed by its content.
    moe_tables: Mutex<HashMap<Vec<u64>, CudaSlice<u64>>>,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

impl CudaBackend {
    /// Opens the device named by the environment (see [`CudaOptions::from_env`]).
    pub fn new() -> Result<Self> {
        Self::with_options(CudaOptions::from_env()?)
    }

    pub fn with_options(opts: CudaOptions) -> Result<Self> {
        // The libraries' presence is checked first; this also catches cudarc's panic on a
        // library too old to hold a symbol it loads.
        std::panic::catch_unwind(|| Self::open(opts.clone())).unwrap_or_else(|p| {
            Err(err(format!(
                "the CUDA libraries failed to initialise: {}",
                panic_text(&*p)
            )))
        })
    }

    fn open(opts: CudaOptions) -> Result<Self> {
        let dev = Device::open(opts.device)?;
        let blas = if opts.cublas && libs::cublas_present() {
            match cudarc::cublas::CudaBlas::new(dev.stream.clone()) {
                Ok(b) => Some(b),
                Err(e) => {
                    log::warn!(
                        "cuda: cuBLAS unusable ({e}); f32 products use the built-in kernels"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(CudaBackend {
            dev,
            blas,
            opts,
            moe_tables: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> &CudaOptions {
        &self.opts
    }

    fn new_f32(&self, rows: usize, cols: usize) -> Result<CudaBuf> {
        Ok(CudaBuf {
            rows,
            cols,
            data: BufData::F32(self.dev.alloc::<f32>(rows * cols)?),
        })
    }

    fn ptr(&self, b: &CudaBuf) -> u64 {
        match &b.data {
            BufData::F32(s) => self.dev.ptr(s),
            BufData::F16(s) => self.dev.ptr(s),
        }
    }
}

/// Kernel arguments are 32-bit: refuse sizes beyond that before launching.
pub(crate) fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| err(format!("{what} = {v} exceeds the kernels' 32-bit sizes")))
}

fn check_cols(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(err(format!("{what}: width {got}, expected {want}")));
    }
    Ok(())
}

impl Backend for CudaBackend {
    type Weight = CudaWeight;
    type Buf = CudaBuf;
    type Ids = Vec<u32>;
    type Beams = HostBeams;
    type Index = CudaIndex;
    type Counts = CudaCounts;

    fn describe(&self) -> String {
        let d = &self.dev;
        format!(
            "cuda ({}, sm_{}{}, kernels {} by NVRTC {}.{}, f32 products by {}, KV cache {})",
            d.name,
            d.compute_capability.0,
            d.compute_capability.1,
            d.target.arch(),
            d.nvrtc.0,
            d.nvrtc.1,
            if self.blas.is_some() {
                "cuBLAS"
            } else {
                "built-in kernels"
            },
            if self.opts.kv_f16 { "f16" } else { "f32" },
        )
    }

    fn weight(&self, view: &WeightView<'_>) -> Result<CudaWeight> {
        CudaWeight::new(&self.dev, view)
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaBuf> {
        if data.len() != rows * cols {
            return Err(err(format!(
                "upload of {} values into [{rows}, {cols}]",
                data.len()
            )));
        }
        Ok(CudaBuf {
            rows,
            cols,
            data: BufData::F32(self.dev.upload(data)?),
        })
    }

    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        match &buf.data {
            BufData::F32(s) => self.dev.download(s, buf.len()),
            BufData::F16(s) => Ok(self
                .dev
                .download(s, buf.len())?
                .into_iter()
                .map(|h| half::f16::from_bits(h).to_f32())
                .collect()),
        }
    }

    fn zeros(&self, rows: usize, cols: usize) -> Result<CudaBuf> {
        Ok(CudaBuf {
            rows,
            cols,
            data: BufData::F32(self.dev.zeros::<f32>(rows * cols)?),
        })
    }

    fn shape(&self, buf: &CudaBuf) -> (usize, usize) {
        (buf.rows, buf.cols)
    }

    fn kv_cache(&self, rows: usize, cols: usize) -> Result<CudaBuf> {
        let n = rows * cols;
        let data = if self.opts.kv_f16 {
            BufData::F16(self.dev.zeros::<u16>(n)?)
        } else {
            BufData::F32(self.dev.zeros::<f32>(n)?)
        };
        Ok(CudaBuf { rows, cols, data })
    }

    fn ids(&self, data: &[u32]) -> Result<Vec<u32>> {
        Ok(data.to_vec())
    }

    fn gather_sum(&self, parts: &[(&CudaWeight, &Vec<u32>)], rows: usize) -> Result<CudaBuf> {
        let cols = parts.first().map(|(w, _)| w.cols).unwrap_or(0);
        if parts.is_empty() {
            return self.zeros(rows, 0);
        }
        let out = self.new_f32(rows, cols)?;
        for (i, (w, idx)) in parts.iter().enumerate() {
            check_cols("gather_sum", w.cols, cols)?;
            if idx.len() < rows {
                return Err(err(format!(
                    "gather_sum: {} indices for {rows} rows",
                    idx.len()
                )));
            }
            let idx = &idx[..rows];
            if let Some(&bad) = idx.iter().find(|&&i| i as usize >= w.rows) {
                return Err(err(format!(
                    "gather_sum: row {bad} of a {}-row table",
                    w.rows
                )));
            }
            let idx_dev = self.dev.upload(idx)?;
            let args = [
                Arg::Ptr(w.ptr(&self.dev)),
                Arg::Ptr(w.scales_ptr(&self.dev)),
                Arg::Ptr(self.dev.ptr(&idx_dev)),
                Arg::Ptr(self.ptr(&out)),
                Arg::I32(i32_of("rows", rows)?),
                Arg::I32(i32_of("cols", cols)?),
                Arg::I32((i > 0) as i32),
            ];
            let grid = (i32_of("rows", rows)? as u32, cols.div_ceil(256) as u32, 1);
            self.dev
                .launch(&format!("gather_{}", w.suffix()), grid, 256, &args)?;
        }
        Ok(out)
    }

    fn matmul(&self, x: &CudaBuf, w: &CudaWeight) -> Result<CudaBuf> {
        self.matmul_impl(x, w)
    }

    fn rms_norm(&self, x: &CudaBuf, w: &CudaWeight, eps: f32) -> Result<CudaBuf> {
        check_cols("rms_norm", x.cols, w.rows * w.cols)?;
        if !w.is_float() {
            return Err(err(format!(
                "rms_norm: a {} weight is not supported (norm weights are float)",
                w.dtype
            )));
        }
        let y = self.new_f32(x.rows, x.cols)?;
        let args = [
            Arg::Ptr(self.dev.ptr(x.f32("rms_norm")?)),
            Arg::Ptr(w.ptr(&self.dev)),
            Arg::Ptr(self.ptr(&y)),
            Arg::I32(i32_of("cols", x.cols)?),
            Arg::F32(eps),
        ];
        self.dev.launch(
            &format!("rms_norm_{}", w.suffix()),
            (i32_of("rows", x.rows)? as u32, 1, 1),
            256,
            &args,
        )?;
        Ok(y)
    }

    fn add_assign(&self, x: &mut CudaBuf, y: &CudaBuf) -> Result<()> {
        if (x.rows, x.cols) != (y.rows, y.cols) {
            return Err(err(format!(
                "add: [{}, {}] += [{}, {}]",
                x.rows, x.cols, y.rows, y.cols
            )));
        }
        let n = i32_of("elements", x.len())?;
        let args = [
            Arg::Ptr(self.dev.ptr(x.f32("add")?)),
            Arg::Ptr(self.dev.ptr(y.f32("add")?)),
            Arg::I32(n),
        ];
        self.dev
            .launch("add_assign", ((n as u32).div_ceil(256), 1, 1), 256, &args)
    }

    fn write_rows(&self, dst: &mut CudaBuf, row0: usize, src: &CudaBuf) -> Result<()> {
        check_cols("write_rows", src.cols, dst.cols)?;
        if row0 + src.rows > dst.rows {
            return Err(err(format!(
                "write_rows: rows {row0}..{} of {}",
                row0 + src.rows,
                dst.rows
            )));
        }
        let (start, n) = (row0 * dst.cols, src.len());
        if n == 0 {
            return Ok(());
        }
        let s = src.f32("write_rows")?;
        match &mut dst.data {
            BufData::F32(d) => {
                let mut view = d.slice_mut(start..start + n);
                self.dev
                    .stream
                    .memcpy_dtod(&s.slice(..n), &mut view)
                    .map_err(drv("write_rows"))
            }
            BufData::F16(d) => {
                let args = [
                    Arg::Ptr(self.dev.ptr(s)),
                    Arg::Ptr(self.dev.ptr(d) + 2 * start as u64),
                    Arg::I32(i32_of("elements", n)?),
                ];
                self.dev
                    .launch("f32_to_f16", ((n as u32).div_ceil(256), 1, 1), 256, &args)
            }
        }
    }

    fn attention(
        &self,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        n_heads: usize,
        keys: KeyMap<'_, Vec<u32>>,
    ) -> Result<CudaBuf> {
        self.attention_impl(q, k, v, n_heads, keys)
    }

    fn ffn(&self, x: &CudaBuf, ffn: &Ffn<CudaWeight>) -> Result<CudaBuf> {
        self.ffn_impl(x, ffn)
    }

    fn moe(
        &self,
        x: &CudaBuf,
        moe: &Moe<CudaWeight>,
        routes: Option<&mut Vec<u32>>,
    ) -> Result<CudaBuf> {
        self.moe_impl(x, moe, routes)
    }

    fn log_softmax(&self, x: &CudaBuf) -> Result<CudaBuf> {
        let y = self.new_f32(x.rows, x.cols)?;
        if x.cols == 0 {
            return Ok(y);
        }
        let args = [
            Arg::Ptr(self.dev.ptr(x.f32("log_softmax")?)),
            Arg::Ptr(self.ptr(&y)),
            Arg::I32(i32_of("cols", x.cols)?),
        ];
        self.dev.launch(
            "log_softmax",
            (i32_of("rows", x.rows)? as u32, 1, 1),
            256,
            &args,
        )?;
        Ok(y)
    }

    fn index(&self, trie: &Trie) -> Result<CudaIndex> {
        self.index_impl(trie)
    }

    fn counts(&self, per_user: &[Vec<u32>]) -> Result<CudaCounts> {
        self.counts_impl(per_user)
    }

    fn beams_start(&self, plan: &BeamPlan) -> Result<Self::Beams> {
        HostBeams::start(plan)
    }

    fn beams_inputs<'a>(&self, beams: &'a Self::Beams) -> BeamInputs<'a, Vec<u32>> {
        beams.inputs()
    }

    fn beams_step(
        &self,
        beams: &mut Self::Beams,
        logp: &CudaBuf,
        index: &CudaIndex,
        counts: &CudaCounts,
        step: &BeamStep<'_>,
    ) -> Result<()> {
        // The selection runs on the device; the survivors come back to the host beams.
        beams.step(step, |groups| {
            self.select(logp, index, counts, step.level, groups)
        })
    }

    fn beams_finish(&self, beams: &Self::Beams) -> Result<Vec<Finished>> {
        Ok(beams.finish())
    }
}

impl CudaBackend {
    /// Constrained top-B over host beams on the device (topk.cu): only the survivors
    /// come back.
    pub fn select(
        &self,
        logp: &CudaBuf,
        index: &CudaIndex,
        counts: &CudaCounts,
        level: usize,
        groups: &[SelectGroup<'_>],
    ) -> Result<Vec<Vec<Candidate>>> {
        self.select_impl(logp, index, counts, level, groups)
    }
}
