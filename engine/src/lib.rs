//! OneRec inference engine.
//!
//! Data flow: model file → mmap ([`ModelFile`]) → backend weights ([`backend`]) →
//! encoder → decoder steps ([`model`]) → constrained top-B ([`generate`]) → sessions.

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
pub mod schema;
pub mod tensor;
pub mod trie;

pub use backend::cpu::CpuBackend;
pub use backend::wgpu::WgpuBackend;
pub use backend::Backend;
pub use config::Config;
pub use error::{Error, Result};
pub use generate::{Request, Response, Session, MAX_BEAM};
pub use model::Model;
pub use model_file::ModelFile;

pub use catalog::{CatalogSnapshot, CatalogUpdate};

use arc_swap::ArcSwap;
use catalog::CatalogContents;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// A GPU if one is usable, else the CPU.
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

/// A model on one backend, behind an object-safe face so callers need not be generic.
trait Runner: Send + Sync {
    fn recommend(&self, snap: &CatalogSnapshot, requests: &[Request]) -> Result<Vec<Response>>;
    fn snapshot(&self, contents: Arc<CatalogContents>, version: u64) -> Result<CatalogSnapshot>;
    fn describe(&self) -> String;
}

impl<B: Backend> Runner for Model<B> {
    fn recommend(&self, snap: &CatalogSnapshot, requests: &[Request]) -> Result<Vec<Response>> {
        generate::recommend(self, snap, requests)
    }
    fn snapshot(&self, contents: Arc<CatalogContents>, version: u64) -> Result<CatalogSnapshot> {
        Model::snapshot(self, contents, version)
    }
    fn describe(&self) -> String {
        self.backend.describe()
    }
}

/// A loaded model ready to serve requests. `Engine` is `Send + Sync`: one instance can
/// serve several threads.
pub struct Engine {
    file: Arc<ModelFile>,
    /// The live catalog: a request loads the current snapshot once and keeps it.
    catalog: ArcSwap<CatalogSnapshot>,
    /// Serialises updates (each reads the current snapshot and swaps in the next).
    catalog_writer: Mutex<()>,
    runner: Box<dyn Runner>,
}

impl Engine {
    /// Loads a model (checkpoint directory) on the chosen backend.
    pub fn load(path: &Path, backend: BackendKind) -> Result<Self> {
        Self::from_file(Arc::new(ModelFile::open(path)?), backend)
    }

    pub fn from_file(file: Arc<ModelFile>, backend: BackendKind) -> Result<Self> {
        let runner: Box<dyn Runner> = match backend {
            BackendKind::Cpu => Box::new(Model::new(CpuBackend::new(), file.clone())?),
            BackendKind::Cuda => cuda_runner(file.clone())?,
            BackendKind::Wgpu => Box::new(Model::new(WgpuBackend::new()?, file.clone())?),
            // A GPU adapter if one exists; a device that then fails to open is reported
            // in the log and the CPU serves instead.
            BackendKind::Auto => match backend::wgpu::find_adapter()
                .map(|a| WgpuBackend::from_adapter(a, backend::wgpu::WgpuOptions::from_env()?))
            {
                Some(Ok(gpu)) => Box::new(Model::new(gpu, file.clone())?),
                Some(Err(e)) => {
                    log::warn!("GPU adapter found but unusable ({e}); using the CPU");
                    Box::new(Model::new(CpuBackend::new(), file.clone())?)
                }
                None => Box::new(Model::new(CpuBackend::new(), file.clone())?),
            },
        };
        Self::serve(file, runner)
    }

    fn serve(file: Arc<ModelFile>, runner: Box<dyn Runner>) -> Result<Self> {
        let snap = runner.snapshot(Arc::new(file.catalog_contents()?), 0)?;
        Ok(Engine {
            file,
            catalog: ArcSwap::from_pointee(snap),
            catalog_writer: Mutex::new(()),
            runner,
        })
    }

    /// Serves `file` on a backend the caller made (to choose its options, such as
    /// `WgpuOptions` or `CudaOptions`).
    pub fn with_backend<B: Backend + 'static>(file: Arc<ModelFile>, backend: B) -> Result<Self> {
        let runner: Box<dyn Runner> = Box::new(Model::new(backend, file.clone())?);
        Self::serve(file, runner)
    }

    pub fn config(&self) -> &Config {
        &self.file.config
    }

    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    pub fn describe_backend(&self) -> String {
        self.runner.describe()
    }

    /// Recommends sessions for a batch of requests (one per user), decoded together.
    pub fn recommend(&self, requests: &[Request]) -> Result<Vec<Response>> {
        let snap = self.catalog.load_full();
        self.runner.recommend(&snap, requests)
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

#[cfg(feature = "cuda")]
fn cuda_runner(file: Arc<ModelFile>) -> Result<Box<dyn Runner>> {
    Ok(Box::new(Model::new(
        backend::cuda::CudaBackend::new()?,
        file,
    )?))
}

#[cfg(not(feature = "cuda"))]
fn cuda_runner(_file: Arc<ModelFile>) -> Result<Box<dyn Runner>> {
    Err(Error::Backend {
        backend: "cuda".into(),
        msg: "this build does not include the CUDA backend (built without the `cuda` feature; rebuild with `cargo build --release --features cuda`)".into(),
    })
}
