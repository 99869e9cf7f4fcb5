//! The WGSL runtime: the model on any GPU that wgpu reaches (Vulkan, Metal, DX12), and
//! on lavapipe in CI. Weights are uploaded once in their file type and decoded in the
//! shaders; activations, KV caches (f16 where the device has SHADER_F16), MoE routing,
//! the constrained top-B and the beams themselves (scores, trie nodes, sessions,
//! ancestries) stay on the device. Ops are recorded into one command encoder, submitted
//! once per scored decode step without waiting; the only readback of a request is its
//! final beams.

mod beams;
mod context;
mod kernels;
mod moe;
mod quiet;
pub mod shaders;
mod timing;
mod weight;

pub(crate) use context::adapters;
pub use context::{list_adapters, AdapterDesc, Stats, StatsSnapshot};
pub use weight::WgpuWeight;

use super::{Backend, BeamInputs, BeamPlan, BeamStep, Ffn, Finished, IdList, KeyMap, Moe};
use crate::error::Result;
use crate::tensor::{TensorView, WeightView};
use crate::trie::Trie;
use context::{err, Ctx, GpuBuf};
use std::sync::Arc;

/// An `f32` activation matrix on the device.
pub struct WgpuBuf {
    pub(crate) g: GpuBuf,
    pub rows: usize,
    pub cols: usize,
    /// Stored as f16 (a KV cache on a device with SHADER_F16); only `write_rows`,
    /// `attention` and `download` accept such a buffer.
    pub half: bool,
}

/// A list of `u32` indices on the device, with a bound on its values known to the host
/// (from the data uploaded, or from the kernel that wrote it).
pub struct WgpuIds {
    pub(crate) g: GpuBuf,
    pub(crate) len: usize,
    pub(crate) limit: u64,
}

impl IdList for WgpuIds {
    fn len(&self) -> usize {
        self.len
    }
    fn limit(&self) -> u64 {
        self.limit
    }
}

/// Options for tests and benchmarks; the defaults are what the product uses.
#[derive(Debug, Clone, Default)]
pub struct WgpuOptions {
    /// Split weights above this many bytes across bindings even where the device allows
    /// more (tests exercise the split path with it).
    pub max_binding: Option<u64>,
    /// Fill every new activation buffer with NaN, so that an element a kernel forgets to
    /// write shows up in the comparisons (tests).
    pub poison: bool,
    /// Keep the KV caches in f32 even where the device has SHADER_F16
    /// (`ONEREC_WGPU_KV=f32`; tests at the contract's f32 tolerance use it).
    pub kv_f32: bool,
    /// Time every kernel on the device with timestamps (`ONEREC_WGPU_TIMESTAMPS=1`;
    /// benchmarks): [`WgpuBackend::kernel_times`]. An error where the adapter cannot.
    pub timestamps: bool,
}

impl WgpuOptions {
    /// The defaults, with `ONEREC_WGPU_KV=f16|f32` applied.
    pub fn from_env() -> Result<Self> {
        let mut o = WgpuOptions::default();
        if let Ok(v) = std::env::var("ONEREC_WGPU_KV") {
            o.kv_f32 = match v.trim() {
                "f16" => false,
                "f32" => true,
                _ => return Err(err(format!("ONEREC_WGPU_KV=`{v}`: expected f16 or f32"))),
            };
        }
        o.timestamps = std::env::var("ONEREC_WGPU_TIMESTAMPS").as_deref() == Ok("1");
        Ok(o)
    }
}

/// Cheap to clone: clones share the device, its pipelines and its buffer pool.
#[derive(Clone)]
pub struct WgpuBackend {
    ctx: Arc<Ctx>,
}

/// A GPU adapter if one exists (any of Vulkan, Metal, DX12; `WGPU_BACKEND` narrows the
/// choice). Never panics: a broken driver reads as "no adapter".
pub fn find_adapter() -> Option<::wgpu::Adapter> {
    quiet::quiet_gpu_probe();
    std::panic::catch_unwind(|| {
        let desc = ::wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let instance = ::wgpu::Instance::new(desc);
        let opts = ::wgpu::RequestAdapterOptions {
            power_preference: ::wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        };
        pollster::block_on(instance.request_adapter(&opts)).ok()
    })
    .ok()
    .flatten()
}

impl WgpuBackend {
    /// Opens the first GPU adapter with the options of the environment
    /// ([`WgpuOptions::from_env`]); an error when there is none.
    pub fn new() -> Result<Self> {
        Self::with_options(WgpuOptions::from_env()?)
    }

    pub fn with_options(opts: WgpuOptions) -> Result<Self> {
        let adapter = find_adapter().ok_or_else(|| {
            err("no GPU adapter found (Vulkan, Metal or DX12; on Linux without a GPU install mesa-vulkan-drivers for lavapipe and set WGPU_BACKEND=vulkan)")
        })?;
        Self::from_adapter(adapter, opts)
    }

    pub fn from_adapter(adapter: ::wgpu::Adapter, opts: WgpuOptions) -> Result<Self> {
        // Everything the adapter offers (storage binding sizes above all). f16 weights are
        // decoded with unpack2x16float (core); SHADER_F16, where offered, halves the KV
        // caches.
        let kv_f16 = !opts.kv_f32 && adapter.features().contains(::wgpu::Features::SHADER_F16);
        let mut features = if kv_f16 {
            ::wgpu::Features::SHADER_F16
        } else {
            ::wgpu::Features::empty()
        };
        if opts.timestamps {
            let ts =
                ::wgpu::Features::TIMESTAMP_QUERY | ::wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
            if !adapter.features().contains(ts) {
                return Err(err(
                    "kernel timestamps were asked for, but the adapter has no TIMESTAMP_QUERY_INSIDE_PASSES",
                ));
            }
            features |= ts;
        }
        let desc = ::wgpu::DeviceDescriptor {
            label: Some("onerec"),
            required_features: features,
            required_limits: adapter.limits(),
            experimental_features: ::wgpu::ExperimentalFeatures::disabled(),
            memory_hints: ::wgpu::MemoryHints::Performance,
            trace: ::wgpu::Trace::Off,
        };
        let (device, queue) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pollster::block_on(adapter.request_device(&desc))
        }))
        .map_err(|_| err("the driver panicked while opening the device"))?
        .map_err(|e| err(format!("opening the device: {e}")))?;
        let mut ctx = Ctx::new(&adapter, device, queue, opts.max_binding);
        ctx.poison = opts.poison;
        ctx.kv_f16 = kv_f16;
        if opts.timestamps {
            ctx.timestamps = Some(timing::Timestamps::new(&ctx.device, &ctx.queue));
        }
        Ok(WgpuBackend { ctx: Arc::new(ctx) })
    }

    pub fn adapter_info(&self) -> &::wgpu::AdapterInfo {
        &self.ctx.info
    }

    /// Launch and transfer counters since the backend was made.
    pub fn stats(&self) -> StatsSnapshot {
        self.ctx.stats.snapshot()
    }

    /// Kernel timings when `ONEREC_WGPU_PROFILE=1` (see `Ctx::profile`).
    pub fn profile(&self) -> Vec<(String, u64, f64)> {
        self.ctx.profile()
    }

    /// GPU time per kernel (launches, seconds), slowest first, since the backend was
    /// made or [`WgpuBackend::reset_kernel_times`]; empty unless `timestamps` is on.
    /// Counted once each submission completes: call [`WgpuBackend::sync`] first.
    pub fn kernel_times(&self) -> Vec<(String, u64, f64)> {
        self.ctx
            .timestamps
            .as_ref()
            .map_or_else(Vec::new, |t| t.totals())
    }

    pub fn reset_kernel_times(&self) {
        if let Some(t) = &self.ctx.timestamps {
            t.reset();
        }
    }

    /// Reads an index list back (tests).
    pub fn read_ids(&self, ids: &WgpuIds) -> Result<Vec<u32>> {
        let bytes = self.ctx.read(ids.g.raw(), 0, ids.len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Whether the KV caches are stored in f16.
    pub fn kv_f16(&self) -> bool {
        self.ctx.kv_f16
    }

    /// Largest storage binding in use (weights above it are split).
    pub fn max_binding(&self) -> u64 {
        self.ctx.max_binding
    }

    /// Submits recorded work and waits for the device (benchmarks).
    pub fn sync(&self) -> Result<()> {
        let probe = self.ctx.alloc(4)?;
        self.ctx.fill(&probe, 0)?;
        self.ctx.read(probe.raw(), 0, 4).map(|_| ())
    }

    pub(crate) fn new_buf(&self, rows: usize, cols: usize) -> Result<WgpuBuf> {
        let bytes = (rows as u64) * (cols as u64) * 4;
        Ok(WgpuBuf {
            g: self.ctx.alloc(bytes)?,
            rows,
            cols,
            half: false,
        })
    }
}

impl Backend for WgpuBackend {
    type Weight = WgpuWeight;
    type Buf = WgpuBuf;
    type Ids = WgpuIds;
    type Beams = beams::Beams;
    type Index = beams::Index;
    type Counts = beams::Counts;

    fn describe(&self) -> String {
        let i = &self.ctx.info;
        let driver = if i.driver_info.is_empty() {
            i.driver.clone()
        } else {
            format!("{} {}", i.driver, i.driver_info)
        };
        format!(
            "wgpu: {} ({:?}, {:?}, driver {}); max storage binding {} MiB; features used: {}",
            i.name,
            i.backend,
            i.device_type,
            driver.trim(),
            self.ctx.max_binding >> 20,
            if self.ctx.kv_f16 {
                "SHADER_F16 (f16 KV cache)"
            } else {
                "none beyond core WGSL (f32 KV cache)"
            }
        )
    }

    fn weight(&self, view: &WeightView<'_>) -> Result<WgpuWeight> {
        WgpuWeight::new(&self.ctx, view)
    }

    fn weight_stack(&self, t: &TensorView<'_>) -> Result<Vec<WgpuWeight>> {
        WgpuWeight::stack(&self.ctx, t)
    }

    fn weight_stacks(&self, ts: &[&TensorView<'_>]) -> Result<Vec<Vec<WgpuWeight>>> {
        WgpuWeight::stacks(&self.ctx, ts)
    }

    fn weights_together(&self, views: &[&WeightView<'_>]) -> Result<Vec<WgpuWeight>> {
        WgpuWeight::together(&self.ctx, views)
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<WgpuBuf> {
        if data.len() != rows * cols {
            return Err(err(format!(
                "upload of {} values into [{rows}, {cols}]",
                data.len()
            )));
        }
        Ok(WgpuBuf {
            g: self.ctx.upload(bytemuck::cast_slice(data))?,
            rows,
            cols,
            half: false,
        })
    }

    fn download(&self, buf: &WgpuBuf) -> Result<Vec<f32>> {
        let n = buf.rows * buf.cols;
        if buf.half {
            let bytes = self
                .ctx
                .read(buf.g.raw(), 0, (n * 2).next_multiple_of(4) as u64)?;
            return Ok(bytes
                .chunks_exact(2)
                .take(n)
                .map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32())
                .collect());
        }
        let bytes = self.ctx.read(buf.g.raw(), 0, (n * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn kv_cache(&self, rows: usize, cols: usize) -> Result<WgpuBuf> {
        if !self.ctx.kv_f16 {
            return self.zeros(rows, cols);
        }
        let bytes = (rows as u64 * cols as u64 * 2).next_multiple_of(4);
        let b = WgpuBuf {
            g: self.ctx.alloc(bytes)?,
            rows,
            cols,
            half: true,
        };
        self.ctx.fill(&b.g, 0)?;
        Ok(b)
    }

    fn zeros(&self, rows: usize, cols: usize) -> Result<WgpuBuf> {
        let b = self.new_buf(rows, cols)?;
        self.ctx.fill(&b.g, 0)?;
        Ok(b)
    }

    fn shape(&self, buf: &WgpuBuf) -> (usize, usize) {
        (buf.rows, buf.cols)
    }

    fn ids(&self, data: &[u32]) -> Result<WgpuIds> {
        Ok(WgpuIds {
            g: self.ctx.upload(bytemuck::cast_slice(data))?,
            len: data.len(),
            limit: data.iter().max().map_or(0, |&m| m as u64 + 1),
        })
    }

    fn gather_sum(&self, parts: &[(&WgpuWeight, &WgpuIds)], rows: usize) -> Result<WgpuBuf> {
        kernels::gather_sum(self, parts, rows)
    }

    fn matmul(&self, x: &WgpuBuf, w: &WgpuWeight) -> Result<WgpuBuf> {
        kernels::matmul(self, x, w)
    }

    fn rms_norm(&self, x: &WgpuBuf, w: &WgpuWeight, eps: f32) -> Result<WgpuBuf> {
        kernels::rms_norm(self, x, w, eps)
    }

    fn add_rms_norm(
        &self,
        x: &mut WgpuBuf,
        y: &WgpuBuf,
        w: &WgpuWeight,
        eps: f32,
    ) -> Result<WgpuBuf> {
        kernels::add_rms_norm(self, x, y, w, eps)
    }

    fn add_assign(&self, x: &mut WgpuBuf, y: &WgpuBuf) -> Result<()> {
        kernels::binary(self, "add", x, y)
    }

    fn write_rows(&self, dst: &mut WgpuBuf, row0: usize, src: &WgpuBuf) -> Result<()> {
        if src.cols != dst.cols || row0 + src.rows > dst.rows || src.half {
            return Err(err(format!(
                "write_rows: [{}, {}] at row {row0} of [{}, {}]",
                src.rows, src.cols, dst.rows, dst.cols
            )));
        }
        if dst.half {
            return kernels::store_f16(self, dst, row0 * dst.cols, src);
        }
        let row_bytes = (dst.cols * 4) as u64;
        self.ctx.copy(
            src.g.raw(),
            0,
            dst.g.raw(),
            row0 as u64 * row_bytes,
            src.rows as u64 * row_bytes,
        );
        Ok(())
    }

    fn project_kv(
        &self,
        x: &WgpuBuf,
        wk: &WgpuWeight,
        wv: &WgpuWeight,
        k_cache: &mut WgpuBuf,
        v_cache: &mut WgpuBuf,
        row0: usize,
    ) -> Result<()> {
        if kernels::project_kv(self, x, wk, wv, k_cache, v_cache, row0, None)? {
            return Ok(());
        }
        // Weights apart, or shapes the one launch does not take (the two launches name
        // any mismatch).
        self.write_rows(k_cache, row0, &self.matmul(x, wk)?)?;
        self.write_rows(v_cache, row0, &self.matmul(x, wv)?)
    }

    fn project_qkv(
        &self,
        x: &WgpuBuf,
        wq: &WgpuWeight,
        wk: &WgpuWeight,
        wv: &WgpuWeight,
        k_cache: &mut WgpuBuf,
        v_cache: &mut WgpuBuf,
        row0: usize,
    ) -> Result<WgpuBuf> {
        let q = self.new_buf(x.rows, wq.rows)?;
        if kernels::project_kv(self, x, wk, wv, k_cache, v_cache, row0, Some((wq, &q)))? {
            return Ok(q);
        }
        self.project_kv(x, wk, wv, k_cache, v_cache, row0)?;
        self.matmul(x, wq)
    }

    fn attention(
        &self,
        q: &WgpuBuf,
        k: &WgpuBuf,
        v: &WgpuBuf,
        n_heads: usize,
        keys: KeyMap<'_, WgpuIds>,
    ) -> Result<WgpuBuf> {
        kernels::attention(self, q, k, v, n_heads, keys)
    }

    fn ffn(&self, x: &WgpuBuf, ffn: &Ffn<WgpuWeight>) -> Result<WgpuBuf> {
        kernels::swiglu_ffn(self, x, ffn)
    }

    fn moe(
        &self,
        x: &WgpuBuf,
        m: &Moe<WgpuWeight>,
        routes: Option<&mut Vec<u32>>,
    ) -> Result<WgpuBuf> {
        moe::moe(self, x, m, routes)
    }

    fn moe_add_rms_norm(
        &self,
        x: &mut WgpuBuf,
        h: &WgpuBuf,
        m: &Moe<WgpuWeight>,
        routes: Option<&mut Vec<u32>>,
        w: &WgpuWeight,
        eps: f32,
    ) -> Result<WgpuBuf> {
        moe::moe_add_rms_norm(self, x, h, m, routes, w, eps)
    }

    fn log_softmax(&self, x: &WgpuBuf) -> Result<WgpuBuf> {
        kernels::log_softmax(self, x)
    }

    fn index(&self, trie: &Trie) -> Result<beams::Index> {
        beams::Index::new(&self.ctx, trie)
    }

    fn counts(&self, per_user: &[Vec<u32>]) -> Result<beams::Counts> {
        beams::Counts::new(&self.ctx, per_user)
    }

    fn beams_start(&self, plan: &BeamPlan) -> Result<beams::Beams> {
        beams::start(self, plan)
    }

    fn beams_inputs<'a>(&self, b: &'a beams::Beams) -> BeamInputs<'a, WgpuIds> {
        let (codes, ancestry) = b.inputs();
        BeamInputs { codes, ancestry }
    }

    fn beams_step(
        &self,
        b: &mut beams::Beams,
        logp: &WgpuBuf,
        index: &beams::Index,
        counts: &beams::Counts,
        step: &BeamStep<'_>,
    ) -> Result<()> {
        beams::step(self, b, logp, index, counts, step)
    }

    fn beams_finish(&self, b: &beams::Beams) -> Result<Vec<Finished>> {
        beams::finish(self, b)
    }
}
