//! How far a quantised model file is from the f32 one: teacher-forced logits error and
//! top-1 agreement, on an evaluation set drawn from the catalog. Used by
//! tests/quantize.rs (bounds) and benches/quant_quality.rs (the report).

use anyhow::{Context, Result};
use onerec_engine::{BackendKind, CpuBackend, Engine, Model, ModelFile, Request};
use std::path::Path;
use std::sync::Arc;

/// A teacher-forced case: history and target session, as catalog rows.
#[derive(Debug, Clone)]
pub struct Case {
    pub history: Vec<usize>,
    pub targets: Vec<usize>,
}

/// splitmix64: a fixed, dependency-free stream so every run draws the same cases.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// `n` cases with random catalog items; histories of 1 to `max_history + 2` items (so
/// some are truncated).
pub fn eval_set(file: &ModelFile, n: usize, seed: u64) -> Vec<Case> {
    let mut rng = SplitMix(seed);
    let items = file.catalog.len();
    (0..n)
        .map(|_| {
            let h = 1 + rng.below(file.config.max_history + 2);
            Case {
                history: (0..h).map(|_| rng.below(items)).collect(),
                targets: (0..file.config.session_len)
                    .map(|_| rng.below(items))
                    .collect(),
            }
        })
        .collect()
}

/// What one model file answers on an evaluation set.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Teacher-forced log-probs `[cases · session_len · L, K]`.
    pub logprobs: Vec<f32>,
    pub codebook: usize,
    /// Best session (item ids) per case's history, empty if none.
    pub top: Vec<Vec<u64>>,
}

/// Runs `path` on the CPU backend: teacher-forced log-probs, and a `beam`-wide search
/// per history.
pub fn outputs(path: &Path, set: &[Case], beam: usize) -> Result<Outputs> {
    let file =
        Arc::new(ModelFile::open(path).with_context(|| format!("loading {}", path.display()))?);
    let model = Model::new(CpuBackend::new(), file.clone())?;
    let mut logprobs = Vec::new();
    for c in set {
        logprobs.extend(model.teacher_forced(&c.history, &c.targets, None)?);
    }
    let engine = Engine::from_file(file.clone(), BackendKind::Cpu)?;
    let reqs: Vec<Request> = set
        .iter()
        .map(|c| {
            Request::new(
                c.history.iter().map(|&i| file.catalog.item_id(i)).collect(),
                beam,
                1,
            )
        })
        .collect();
    let top = engine
        .recommend(&reqs)?
        .into_iter()
        .map(|r| {
            r.sessions
                .first()
                .map(|s| s.items.clone())
                .unwrap_or_default()
        })
        .collect();
    Ok(Outputs {
        logprobs,
        codebook: file.config.codebook_size,
        top,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Quality {
    /// ‖ℓ̂ − ℓ‖ / ‖ℓ‖ of the teacher-forced logits, each row centred (log-probs minus
    /// their mean = logits minus theirs, so the log-normaliser does not count).
    pub logits_rel_err: f64,
    /// Share of teacher-forced rows whose best code is the reference's.
    pub code_top1: f64,
    /// Share of histories whose best session is the reference's.
    pub session_top1: f64,
}

fn centred(lp: &[f32], k: usize) -> Vec<f64> {
    lp.chunks(k)
        .flat_map(|r| {
            let mean = r.iter().map(|&v| v as f64).sum::<f64>() / k as f64;
            r.iter().map(move |&v| v as f64 - mean)
        })
        .collect()
}

fn argmax(r: &[f64]) -> usize {
    (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b })
}

/// `other` against `reference` (same evaluation set).
pub fn compare(reference: &Outputs, other: &Outputs) -> Quality {
    let k = reference.codebook.max(1);
    let (a, b) = (centred(&other.logprobs, k), centred(&reference.logprobs, k));
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    let rows = (b.len() / k).max(1);
    let same_code = (0..b.len() / k)
        .filter(|&r| argmax(&a[r * k..(r + 1) * k]) == argmax(&b[r * k..(r + 1) * k]))
        .count();
    let same_session = other
        .top
        .iter()
        .zip(&reference.top)
        .filter(|(x, y)| x == y)
        .count();
    Quality {
        logits_rel_err: if den > 0.0 {
            (num / den).sqrt()
        } else {
            num.sqrt()
        },
        code_top1: same_code as f64 / rows as f64,
        session_top1: same_session as f64 / reference.top.len().max(1) as f64,
    }
}
