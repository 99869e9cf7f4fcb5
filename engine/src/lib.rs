//! OneRec inference engine.
//!
//! Data flow: model file → mmap ([`ModelFile`]) → backend weights ([`backend`]) →
//! encoder → decoder steps ([`model`]) → constrained top-B ([`pipeline::search`]) →
//! optional rerank by the reward model ([`reward`]) → the answer ([`generate`]).

pub mod backend;
pub mod catalog;
mod checkpoint;
pub mod config;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod generate;
pub mod model;
pub mod model_file;
pub mod pipeline;
pub mod reward;
pub mod schema;
pub mod tensor;
pub mod trie;

pub use backend::cpu::CpuBackend;
pub use backend::wgpu::WgpuBackend;
pub use backend::Backend;
pub use config::{Config, RewardConfig};
pub use error::{Error, Result};
pub use generate::{
    ItemScore, MemoryEstimate, Request, RequestBuilder, RequestShape, Response, RunOptions,
    Session, MAX_BATCH_REQUESTS, MAX_BATCH_ROWS, MAX_BEAM,
};
pub use model::Model;
pub use model_file::ModelFile;
pub use pipeline::Pipeline;

pub use catalog::{CatalogSnapshot, CatalogUpdate};

use arc_swap::ArcSwap;
use catalog::CatalogContents;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tensor::Blob;

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// A hardware GPU if one is usable, else the CPU; never a software GPU (see
    /// [`Engine::open`]).
    #[default]
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendKind::Auto),
            "cpu" => Ok(BackendKind::Cpu),
            "wgpu" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(Error::request(format!(
                "unknown backend `{other}` (expected auto, cpu, wgpu or cuda)"
            ))),
        }
    }
}

/// How the KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvPrecision {
    /// The backend's default: f32 on the CPU, f16 on a GPU that has it (on wgpu,
    /// `ONEREC_WGPU_KV=f32|f16` overrides; on CUDA `ONEREC_CUDA_KV`).
    #[default]
    Auto,
    F32,
    /// f16 (MODEL_SPEC v1.1 "KV-cache precision"); an error where the backend cannot.
    F16,
}

/// Whether loading reads every tensor to check its CRC-32 and that every weight is finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Verify files of at most [`VERIFY_AUTO_MAX_BYTES`].
    #[default]
    Auto,
    Always,
    Never,
}

/// `Verify::Auto` verifies files up to this size: reading every byte costs about 0.1 s
/// per 100 MB on a phone and pages the whole file in, which a memory-mapped engine
/// otherwise avoids; below 64 MiB (every quantized model of the MovieLens scale, the
/// built-in one is 1 MB) it is lost in the load time.
pub const VERIFY_AUTO_MAX_BYTES: u64 = 64 << 20;

/// The working memory one call may use by default (see [`EngineOptions::memory_budget`]).
pub const DEFAULT_MEMORY_BUDGET: u64 = 4 << 30;

/// How to load a model. Start from `EngineOptions::new()` (the defaults) and set what
/// you need:
///
/// ```
/// use onerec_engine::{BackendKind, EngineOptions, KvPrecision, Verify};
/// let opts = EngineOptions::new()
///     .backend(BackendKind::Cpu)
///     .threads(2)
///     .verify(Verify::Always)
///     .memory_budget(512 << 20);
/// assert_eq!(opts.kv_precision, KvPrecision::Auto);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineOptions {
    pub backend: BackendKind,
    /// GPU adapter index (in `backend::wgpu::list_adapters()` order; the CUDA ordinal on
    /// CUDA). `None`: the first suitable one.
    pub device: Option<usize>,
    /// CPU backend threads, in a pool the engine owns (`None`: rayon's global pool, one
    /// thread per core).
    pub threads: Option<usize>,
    pub kv_precision: KvPrecision,
    pub verify: Verify,
    /// Working memory (KV cache, activations, beam state) one call may use, estimated
    /// from its shape before anything is allocated; over it, [`Error::Budget`].
    pub memory_budget: u64,
    /// CPU backend: on a CPU with AVX-512 VNNI, q8_0 products quantise the activations to
    /// q8 per block of 32 and use integer dot products, as ggml does (`Int8::Vnni`). On
    /// by default: 2x faster at beam 16 on the medium config, but scores move by ~1e-3
    /// relative, so answers can differ from the reference's where sessions nearly tie.
    /// `false` (or `ONEREC_CPU_INT8=0`) multiplies the decoded weights with f32
    /// activations, the reference's arithmetic; `ONEREC_CPU_INT8=1` adds the AVX2
    /// kernel for products of at most 8 rows (`Int8::All`).
    pub cpu_int8: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backend: BackendKind::Auto,
            device: None,
            threads: None,
            kv_precision: KvPrecision::Auto,
            verify: Verify::Auto,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            cpu_int8: true,
        }
    }
}

impl EngineOptions {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }
    pub fn device(mut self, index: usize) -> Self {
        self.device = Some(index);
        self
    }
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }
    pub fn kv_precision(mut self, p: KvPrecision) -> Self {
        self.kv_precision = p;
        self
    }
    pub fn verify(mut self, v: Verify) -> Self {
        self.verify = v;
        self
    }
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }
    pub fn cpu_int8(mut self, on: bool) -> Self {
        self.cpu_int8 = on;
        self
    }
}

/// A pipeline (model + optional reward model) on one backend, behind an object-safe face
/// so callers need not be generic.
trait Runner: Send + Sync {
    fn recommend_each(
        &self,
        snap: &CatalogSnapshot,
        requests: &[Request],
        run: &RunOptions<'_>,
        budget: u64,
    ) -> Result<Vec<Result<Response>>>;
    fn snapshot(&self, contents: Arc<CatalogContents>, version: u64) -> Result<CatalogSnapshot>;
    fn describe(&self) -> String;
    fn has_reward(&self) -> bool;
}

impl<B: Backend> Runner for Pipeline<B> {
    fn recommend_each(
        &self,
        snap: &CatalogSnapshot,
        requests: &[Request],
        run: &RunOptions<'_>,
        budget: u64,
    ) -> Result<Vec<Result<Response>>> {
        Pipeline::recommend_each(self, snap, requests, run, budget)
    }
    fn snapshot(&self, contents: Arc<CatalogContents>, version: u64) -> Result<CatalogSnapshot> {
        self.model.snapshot(contents, version)
    }
    fn describe(&self) -> String {
        self.model.backend.describe()
    }
    fn has_reward(&self) -> bool {
        self.reward.is_some()
    }
}

/// A loaded model ready to serve requests. `Engine` is `Send + Sync`: one instance can
/// serve several threads.
///
/// ```
/// use onerec_engine::{BackendKind, Engine, EngineOptions, Request};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/dense_l3");
/// let engine = Engine::open(path.as_ref(), &EngineOptions::new().backend(BackendKind::Cpu))?;
/// let first = engine.file().catalog.item_id(0);
/// let req = Request::builder(vec![first]).beam(8).results(3).build();
/// let resp = &engine.recommend(&[req])?[0];
/// assert!(resp.sessions.len() <= 3);
/// for s in &resp.sessions {
///     assert_eq!(s.items.len(), engine.config().session_len);
///     assert!(s.score.is_finite());
/// }
/// # Ok::<(), onerec_engine::Error>(())
/// ```
pub struct Engine {
    file: Arc<ModelFile>,
    /// The live catalog: a request loads the current snapshot once and keeps it.
    catalog: ArcSwap<CatalogSnapshot>,
    /// Serialises updates (each reads the current snapshot and swaps in the next).
    catalog_writer: Mutex<()>,
    runner: Box<dyn Runner>,
    pool: Option<rayon::ThreadPool>,
    budget: u64,
}

impl Engine {
    /// Loads a model (checkpoint directory or model file) with `opts`.
    pub fn open(path: &Path, opts: &EngineOptions) -> Result<Self> {
        Self::from_model(Arc::new(ModelFile::open(path)?), opts)
    }

    /// Loads a model file (docs/FORMAT.md) from bytes the engine takes over (a buffer
    /// the host read or downloaded). Only model files, not checkpoint directories.
    pub fn from_bytes(bytes: Vec<u8>, opts: &EngineOptions) -> Result<Self> {
        let file = format::from_blob(Arc::new(Blob::Owned(bytes)), Path::new("<memory>"))?;
        Self::from_model(Arc::new(file), opts)
    }

    /// Loads a model file that lives for the whole program (embedded with
    /// `include_bytes!`); read in place, never copied.
    pub fn from_static(bytes: &'static [u8], opts: &EngineOptions) -> Result<Self> {
        let file = format::from_blob(Arc::new(Blob::Static(bytes)), Path::new("<static>"))?;
        Self::from_model(Arc::new(file), opts)
    }

    /// Loads a model (checkpoint directory) on the chosen backend, other options default.
    pub fn load(path: &Path, backend: BackendKind) -> Result<Self> {
        Self::open(path, &EngineOptions::new().backend(backend))
    }

    pub fn from_file(file: Arc<ModelFile>, backend: BackendKind) -> Result<Self> {
        Self::from_model(file, &EngineOptions::new().backend(backend))
    }

    /// Serves an opened model with `opts` (verification, backend, threads).
    pub fn from_model(file: Arc<ModelFile>, opts: &EngineOptions) -> Result<Self> {
        let pool = match opts.threads {
            Some(0) => return Err(Error::request("threads must be at least 1")),
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("onerec-cpu-{i}"))
                    .build()
                    .map_err(|e| Error::Backend {
                        backend: "cpu".into(),
                        msg: format!("starting {n} threads: {e}"),
                    })?,
            ),
            None => None,
        };
        let verify = match opts.verify {
            Verify::Always => true,
            Verify::Never => false,
            Verify::Auto => file.file_bytes() as u64 <= VERIFY_AUTO_MAX_BYTES,
        };
        if verify {
            file.verify()?;
        }
        // Weights are prepared on the engine's threads.
        let make = || runner(file.clone(), opts);
        let runner = match &pool {
            Some(p) => p.install(make)?,
            None => make()?,
        };
        Self::serve(file, runner, pool, opts.memory_budget)
    }

    fn serve(
        file: Arc<ModelFile>,
        runner: Box<dyn Runner>,
        pool: Option<rayon::ThreadPool>,
        budget: u64,
    ) -> Result<Self> {
        let snap = runner.snapshot(Arc::new(file.catalog_contents()?), 0)?;
        Ok(Engine {
            file,
            catalog: ArcSwap::from_pointee(snap),
            catalog_writer: Mutex::new(()),
            runner,
            pool,
            budget,
        })
    }

    /// Serves `file` on a backend the caller made (to choose its options, such as
    /// `WgpuOptions` or `CudaOptions`).
    pub fn with_backend<B: Backend + 'static>(file: Arc<ModelFile>, backend: B) -> Result<Self> {
        let runner: Box<dyn Runner> = Box::new(Pipeline::new(backend, file.clone())?);
        Self::serve(file, runner, None, DEFAULT_MEMORY_BUDGET)
    }

    pub fn config(&self) -> &Config {
        &self.file.config
    }

    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    pub fn describe_backend(&self) -> String {
        self.in_pool(|| self.runner.describe())
    }

    /// Whether the model carries a reward model (docs/REWARD_MODEL.md), so requests can
    /// rerank.
    pub fn has_reward_model(&self) -> bool {
        self.runner.has_reward()
    }

    /// The working-memory budget of one call, in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.budget
    }

    /// Bytes the model holds and a call of these request shapes would need (compared
    /// with the budget before a call allocates anything).
    ///
    /// ```
    /// use onerec_engine::{BackendKind, Engine, RequestShape};
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/dense_l3");
    /// let engine = Engine::load(path.as_ref(), BackendKind::Cpu)?;
    /// let one = engine.memory_estimate(&[RequestShape { beam: 8, history: 10 }]);
    /// let two = engine.memory_estimate(&[RequestShape { beam: 16, history: 10 }]);
    /// assert!(one.model > 0 && one.request() < two.request());
    /// # Ok::<(), onerec_engine::Error>(())
    /// ```
    pub fn memory_estimate(&self, shapes: &[RequestShape]) -> MemoryEstimate {
        MemoryEstimate {
            model: self.file.file_bytes() as u64,
            ..generate::estimate(
                &self.file.config,
                self.catalog.load().trie().n_nodes(),
                shapes,
            )
        }
    }

    /// Recommends sessions for a batch of requests (one per user), decoded together;
    /// fails if any request fails ([`Error::InRequest`] names it in a batch).
    pub fn recommend(&self, requests: &[Request]) -> Result<Vec<Response>> {
        generate::all_or_first_error(self.recommend_each_with(requests, &RunOptions::default())?)
    }

    /// Like [`Engine::recommend`], with a result per request: an invalid request (say,
    /// an unknown history item) fails alone while the others are decoded together. The
    /// outer error fails the whole call (backend, budget, cancellation, internal).
    ///
    /// ```
    /// use onerec_engine::{BackendKind, Engine, Error, Request};
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/dense_l3");
    /// let engine = Engine::load(path.as_ref(), BackendKind::Cpu)?;
    /// let good = Request::builder(vec![engine.file().catalog.item_id(0)]).beam(4).results(2).build();
    /// let bad = Request::builder(vec![u64::MAX]).beam(4).results(2).build();
    /// let out = engine.recommend_each(&[good, bad])?;
    /// assert!(out[0].is_ok());
    /// assert!(matches!(&out[1], Err(Error::UnknownItems { ids }) if ids == &[u64::MAX]));
    /// # Ok::<(), onerec_engine::Error>(())
    /// ```
    pub fn recommend_each(&self, requests: &[Request]) -> Result<Vec<Result<Response>>> {
        self.recommend_each_with(requests, &RunOptions::default())
    }

    /// [`Engine::recommend_each`] with per-call options (an abort check).
    pub fn recommend_each_with(
        &self,
        requests: &[Request],
        run: &RunOptions<'_>,
    ) -> Result<Vec<Result<Response>>> {
        // The request holds this snapshot to its end, whatever updates happen meanwhile.
        let snap = self.catalog.load_full();
        self.in_pool(|| {
            self.runner
                .recommend_each(&snap, requests, run, self.budget)
        })
    }

    /// Runs `f` on a worker of the engine's pool, or of rayon's global one. On a worker,
    /// the request's parallel ops fork from a thread that joins in and stays awake;
    /// called from outside, each op would park this thread and wake it when done (two
    /// futex round trips per op, ~1,000 ops in a medium beam-128 request; on a worker it
    /// took 0.94 of the time, median of 8 interleaved rounds at 2 threads).
    fn in_pool<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(p) => p.install(f),
            // From outside the pool `scope` runs its body on a worker (from inside, here).
            None => rayon::scope(|_| f()),
        }
    }

    /// The catalog snapshot serving now. Holding it keeps it (and its resident trie)
    /// alive; it never changes.
    pub fn catalog(&self) -> Arc<CatalogSnapshot> {
        self.catalog.load_full()
    }

    /// Applies an update to the serving catalog: validated as a whole against the
    /// current snapshot, then the next snapshot is built (trie, backend upload) and
    /// swapped in. On error nothing changes. Requests in flight finish on the snapshot
    /// they started with.
    pub fn update_catalog(&self, update: &CatalogUpdate) -> Result<Arc<CatalogSnapshot>> {
        let _writer = self
            .catalog_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let cur = self.catalog.load_full();
        let next = catalog::update::apply(cur.contents(), update)?;
        self.swap_in(Arc::new(next), cur.version() + 1)
    }

    /// Serves `contents` (such as a catalog file's, `catalog::file::read`) from now on;
    /// the model's codebooks stay.
    pub fn replace_catalog(&self, contents: CatalogContents) -> Result<Arc<CatalogSnapshot>> {
        let _writer = self
            .catalog_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let version = self.catalog.load().version() + 1;
        self.swap_in(Arc::new(contents), version)
    }

    fn swap_in(
        &self,
        contents: Arc<CatalogContents>,
        version: u64,
    ) -> Result<Arc<CatalogSnapshot>> {
        let snap = Arc::new(self.runner.snapshot(contents, version)?);
        self.catalog.store(snap.clone());
        log::info!("catalog version {version} serving ({snap:?})");
        Ok(snap)
    }
}

/// Makes the backend `opts` ask for.
fn runner(file: Arc<ModelFile>, opts: &EngineOptions) -> Result<Box<dyn Runner>> {
    match opts.backend {
        BackendKind::Cpu => cpu_runner(file, opts),
        BackendKind::Cuda => cuda_runner(file, opts),
        BackendKind::Wgpu => {
            let adapter = pick_adapter(opts.device, false)?.ok_or_else(|| Error::Backend {
                backend: "wgpu".into(),
                msg: "no GPU adapter found (Vulkan, Metal or DX12; on Linux without a GPU install mesa-vulkan-drivers for lavapipe and set WGPU_BACKEND=vulkan)".into(),
            })?;
            Ok(Box::new(Pipeline::new(wgpu_backend(adapter, opts)?, file)?))
        }
        // A hardware GPU adapter if one exists; software adapters (lavapipe, llvmpipe,
        // SwiftShader: device type CPU) run this model 20-40x slower than the CPU
        // backend, so they are never chosen. A GPU that then fails to open is reported
        // in the log and the CPU serves instead.
        BackendKind::Auto => match pick_adapter(opts.device, true)? {
            Some(a) => match wgpu_backend(a, opts).and_then(|gpu| Pipeline::new(gpu, file.clone()))
            {
                Ok(m) => Ok(Box::new(m)),
                Err(e) => {
                    log::warn!("GPU adapter found but unusable ({e}); using the CPU");
                    cpu_runner(file, opts)
                }
            },
            None => cpu_runner(file, opts),
        },
    }
}

/// The adapter at `device` (an error if there is none), else the first suitable one;
/// `hardware_only` skips software adapters.
fn pick_adapter(device: Option<usize>, hardware_only: bool) -> Result<Option<::wgpu::Adapter>> {
    let software = |a: &::wgpu::Adapter| a.get_info().device_type == ::wgpu::DeviceType::Cpu;
    match device {
        Some(i) => {
            let mut all = backend::wgpu::adapters();
            if i >= all.len() {
                return Err(Error::Backend {
                    backend: "wgpu".into(),
                    msg: format!("no GPU adapter {i} ({} found)", all.len()),
                });
            }
            let a = all.swap_remove(i);
            Ok((!(hardware_only && software(&a))).then_some(a))
        }
        None if hardware_only => Ok(backend::wgpu::adapters().into_iter().find(|a| !software(a))),
        None => Ok(backend::wgpu::find_adapter()),
    }
}

fn wgpu_backend(adapter: ::wgpu::Adapter, opts: &EngineOptions) -> Result<WgpuBackend> {
    let mut wo = backend::wgpu::WgpuOptions::from_env()?;
    match opts.kv_precision {
        KvPrecision::Auto => {}
        KvPrecision::F32 => wo.kv_f32 = true,
        KvPrecision::F16 => wo.kv_f32 = false,
    }
    let gpu = WgpuBackend::from_adapter(adapter, wo)?;
    if opts.kv_precision == KvPrecision::F16 && !gpu.kv_f16() {
        return Err(Error::Backend {
            backend: "wgpu".into(),
            msg: "an f16 KV cache was asked for, but the device lacks SHADER_F16".into(),
        });
    }
    Ok(gpu)
}

fn cpu_runner(file: Arc<ModelFile>, opts: &EngineOptions) -> Result<Box<dyn Runner>> {
    // F16 rounds every stored K/V value to f16, as a GPU's f16 cache does (the model of
    // that precision the GPU backends are tested against); Auto and F32 keep f32.
    let mut cpu = CpuBackend::new().with_kv_f16(opts.kv_precision == KvPrecision::F16);
    if !opts.cpu_int8 {
        cpu = cpu.with_int8(false);
    }
    Ok(Box::new(Pipeline::new(cpu, file)?))
}

#[cfg(feature = "cuda")]
fn cuda_runner(file: Arc<ModelFile>, opts: &EngineOptions) -> Result<Box<dyn Runner>> {
    let mut co = backend::cuda::CudaOptions::from_env()?;
    if let Some(d) = opts.device {
        co.device = d;
    }
    match opts.kv_precision {
        KvPrecision::Auto => {}
        KvPrecision::F32 => co.kv_f16 = false,
        KvPrecision::F16 => co.kv_f16 = true,
    }
    Ok(Box::new(Pipeline::new(
        backend::cuda::CudaBackend::with_options(co)?,
        file,
    )?))
}

#[cfg(not(feature = "cuda"))]
fn cuda_runner(_file: Arc<ModelFile>, _opts: &EngineOptions) -> Result<Box<dyn Runner>> {
    Err(Error::Backend {
        backend: "cuda".into(),
        msg: "this build does not include the CUDA backend (built without the `cuda` feature; rebuild with `cargo build --release --features cuda`)".into(),
    })
}
