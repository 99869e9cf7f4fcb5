//! Which stored type each tensor gets for a requested output type.

use anyhow::{bail, Context, Result};
use onerec_engine::tensor::{DType, QUANT_BLOCK};

/// The `--dtype` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    F32,
    F16,
    Q8,
    Q4,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::F32 => "f32",
            Target::F16 => "f16",
            Target::Q8 => "q8",
            Target::Q4 => "q4",
        }
    }
}

/// Whether block quantisation applies: matrices (or stacks of them) whose rows are whole
/// blocks. Routers stay f32: an expert choice flips discontinuously with the logits, and
/// an `[E, d]` matrix is a negligible share of the file. The reward model's position
/// tables stay f32 too (docs/REWARD_MODEL.md, "Tensors").
pub fn quantizable(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2
        && shape.last().is_some_and(|&c| c > 0 && c % QUANT_BLOCK == 0)
        && !name.ends_with(".moe.router")
        && !onerec_engine::schema::reward_keeps_f32(name)
}

/// The stored type of weight `name` (catalog tensors keep their integer type elsewhere).
/// 1-D tensors (norms, `dec.bos`), routers and rows that are not whole blocks stay f32
/// in q8/q4 files.
pub fn stored_dtype(name: &str, shape: &[usize], target: Target, keep_f16: bool) -> DType {
    if keep_f16 {
        return DType::F16;
    }
    match target {
        Target::F32 => DType::F32,
        Target::F16 => DType::F16,
        Target::Q8 if quantizable(name, shape) => DType::Q8_0,
        Target::Q4 if quantizable(name, shape) => DType::Q4_0,
        Target::Q8 | Target::Q4 => DType::F32,
    }
}

/// `--keep-f16` patterns: shell globs over tensor names (`dec.layers.*.moe.down`); a
/// pattern also covers every tensor below it (`dec.layers.1` keeps that whole layer).
#[derive(Debug, Default)]
pub struct KeepF16 {
    patterns: Vec<(String, glob::Pattern, glob::Pattern)>,
}

impl KeepF16 {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        for p in patterns {
            let exact = glob::Pattern::new(p)
                .with_context(|| format!("--keep-f16 `{p}` is not a valid pattern"))?;
            let below = glob::Pattern::new(&format!("{p}.*"))
                .with_context(|| format!("--keep-f16 `{p}` is not a valid pattern"))?;
            out.push((p.clone(), exact, below));
        }
        Ok(KeepF16 { patterns: out })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.patterns
            .iter()
            .any(|(_, a, b)| a.matches(name) || b.matches(name))
    }

    /// Errors on a pattern that names no tensor: most likely a typo.
    pub fn check_used<'a>(&self, names: impl Iterator<Item = &'a str> + Clone) -> Result<()> {
        for (p, a, b) in &self.patterns {
            if !names.clone().any(|n| a.matches(n) || b.matches(n)) {
                bail!("--keep-f16 `{p}` matches no weight tensor of this model");
            }
        }
        Ok(())
    }

    pub fn patterns(&self) -> Vec<String> {
        self.patterns.iter().map(|(p, _, _)| p.clone()).collect()
    }
}
