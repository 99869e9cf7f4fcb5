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

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use trie::Trie;

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
    fn recommend(&self, trie: &Trie, requests: &[Request]) -> Result<Vec<Response>>;
    fn describe(&self) -> String;
}

impl<B: Backend> Runner for Model<B> {
    fn recommend(&self, trie: &Trie, requests: &[Request]) -> Result<Vec<Response>> {
        generate::recommend(self, trie, requests)
    }
    fn describe(&self) -> String {
        self.backend.describe()
    }
}

/// A loaded model ready to serve requests. `Engine` is `Send + Sync`: one instance can
/// serve several threads.
pub struct Engine {
    file: Arc<ModelFile>,
    trie: Trie,
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
        let trie = Trie::new(&file.catalog);
        Ok(Engine { file, trie, runner })
    }

    /// Serves `file` on a backend the caller made (to choose its options, such as
    /// `WgpuOptions` or `CudaOptions`).
    pub fn with_backend<B: Backend + 'static>(file: Arc<ModelFile>, backend: B) -> Result<Self> {
        let runner: Box<dyn Runner> = Box::new(Model::new(backend, file.clone())?);
        let trie = Trie::new(&file.catalog);
        Ok(Engine { file, trie, runner })
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
        self.runner.recommend(&self.trie, requests)
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
