//! The options every serving command shares: which model, on which backend.

use anyhow::{Context, Result};
use clap::ValueEnum;
use onerec_engine::{BackendKind, Engine, EngineOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// `--backend`: a closed list, so a bad value is a usage error with the choices.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum BackendArg {
    /// A GPU if one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// Vulkan, Metal or DX12 through wgpu.
    Wgpu,
    /// NVIDIA GPUs (builds with `--features cuda`).
    Cuda,
}

impl From<BackendArg> for BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => BackendKind::Auto,
            BackendArg::Cpu => BackendKind::Cpu,
            BackendArg::Wgpu => BackendKind::Wgpu,
            BackendArg::Cuda => BackendKind::Cuda,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Checkpoint directory (config.json + model.safetensors) or model file (onerec-quantize);
    /// without it, the built-in model trained on MovieLens-100K (item ids = MovieLens ids).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Which backend runs the model.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// CPU backend: multiply q8_0 weights with f32 activations, the reference's
    /// arithmetic, instead of quantising the activations to q8 for integer dot products
    /// (the default on AVX-512 VNNI: faster, scores move by ~1e-3). `ONEREC_CPU_INT8=0`
    /// does the same.
    #[arg(long)]
    pub cpu_exact: bool,
    /// Print the backend in use on stderr.
    #[arg(long)]
    pub verbose: bool,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Engine> {
        let opts = EngineOptions::new()
            .backend(BackendKind::from(self.backend))
            .cpu_int8(!self.cpu_exact);
        let engine = match &self.model {
            Some(model) => Engine::open(model, &opts)
                .with_context(|| format!("loading {}", model.display()))?,
            // No --model: the built-in MovieLens-100K model (src/default_model.rs).
            None => {
                let file = crate::default_model::open().context("opening the built-in model")?;
                Engine::from_model(Arc::new(file), &opts).context("loading the built-in model")?
            }
        };
        if self.verbose {
            eprintln!("backend: {}", engine.describe_backend());
        }
        Ok(engine)
    }
}
