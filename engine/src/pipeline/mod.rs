//! The request pipeline (docs/DECISIONS.md "Answers"): a batch of requests runs
//!
//! 1. [`search`]: the constrained session beam search of every valid request, decoded
//!    together; it hands on every surviving beam (and, where asked, the beams right
//!    after the first item: the item list);
//! 2. [`rerank`]: for the requests that ask, the reward model scores every surviving
//!    beam and orders them by reward;
//! 3. [`answer`]: the distinct-session rule, the cut to `results`, ids and SIDs.
//!
//! Each stage is a function over one backend (the model's); another stage (a different
//! reranker, say) takes the [`Searched`] beams and hands them on in the same form.

pub mod answer;
pub mod rerank;
pub mod search;

use crate::backend::Backend;
use crate::catalog::CatalogSnapshot;
use crate::error::{Error, Result};
use crate::generate::{
    estimate, prepare, RequestShape, Response, RunOptions, MAX_BATCH_REQUESTS, MAX_BATCH_ROWS,
};
use crate::model::Model;
use crate::model_file::ModelFile;
use crate::reward::{RewardModel, SessionReward};
use crate::Request;
use std::sync::Arc;

/// One surviving beam as the stages hand it on.
#[derive(Debug, Clone, PartialEq)]
pub struct Beam {
    /// The model's score (sum of the code log-probabilities).
    pub score: f32,
    /// Catalog rows of its session.
    pub rows: Vec<u32>,
    /// Set by the rerank stage.
    pub reward: Option<SessionReward>,
}

/// One request's search result: its beams in the current order (the search's, best
/// first, until a stage reorders them) and the item list's candidates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Searched {
    pub beams: Vec<Beam>,
    /// `(catalog row, score)` of the beams right after the first item, best first
    /// (empty unless the request asked for items).
    pub first_items: Vec<(u32, f32)>,
    /// The scores of every surviving beam in the search's order (best first), whatever
    /// order later stages give the beams.
    pub final_scores: Vec<f32>,
}

/// A model and its optional reward model on one backend: what an engine serves.
pub struct Pipeline<B: Backend> {
    pub model: Model<B>,
    pub reward: Option<RewardModel<B>>,
}

impl<B: Backend> Pipeline<B> {
    /// The model of `file` on `backend`, with its reward model when the file has one.
    pub fn new(backend: B, file: Arc<ModelFile>) -> Result<Self> {
        let model = Model::new(backend, file)?;
        let reward = RewardModel::load(&model.backend, &model.file)?;
        Ok(Pipeline { model, reward })
    }

    /// Serves a batch (see [`crate::generate::recommend_each`]).
    pub fn recommend_each(
        &self,
        snap: &CatalogSnapshot,
        requests: &[Request],
        opts: &RunOptions<'_>,
        budget: u64,
    ) -> Result<Vec<Result<Response>>> {
        run(
            &self.model,
            self.reward.as_ref(),
            snap,
            requests,
            opts,
            budget,
        )
    }
}

/// Validates a batch, checks its work against the bounds and the budget, and runs the
/// stages. Invalid requests get their own errors; the outer error fails the call.
pub fn run<B: Backend>(
    model: &Model<B>,
    reward: Option<&RewardModel<B>>,
    snap: &CatalogSnapshot,
    requests: &[Request],
    opts: &RunOptions<'_>,
    budget: u64,
) -> Result<Vec<Result<Response>>> {
    if requests.len() > MAX_BATCH_REQUESTS {
        return Err(Error::request(format!(
            "{} requests in one call (at most {MAX_BATCH_REQUESTS}; split the batch)",
            requests.len()
        )));
    }
    let cat = snap.catalog();
    let mut out: Vec<Result<Response>> = Vec::with_capacity(requests.len());
    let mut users = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        match prepare(cat, i, r, reward.is_some()) {
            Ok(mut u) => {
                // Removed items stay known (a history may name them) but are never eligible.
                u.excluded.extend_from_slice(snap.removed_rows());
                users.push(u);
                out.push(Ok(Response::default()));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let rows: usize = users.iter().map(|u| u.beam).sum();
    if rows > MAX_BATCH_ROWS {
        return Err(Error::request(format!(
            "the batch decodes {rows} beam rows (the sum of its beams); at most {MAX_BATCH_ROWS} in one call: split it"
        )));
    }
    let shapes: Vec<RequestShape> = users
        .iter()
        .map(|u| RequestShape {
            beam: u.beam,
            history: u.history.len(),
        })
        .collect();
    let mut need = estimate(model.config(), snap.trie().n_nodes(), &shapes).request();
    if let (Some(rm), true) = (reward, users.iter().any(|u| u.rerank)) {
        let m = model.config().session_len;
        need = need.saturating_add(RewardModel::<B>::working_bytes(rm.config(), m));
    }
    if need > budget {
        return Err(Error::Budget { need, budget });
    }
    if users.is_empty() {
        return Ok(out);
    }
    let mut searched = search::run(model, snap, &users, opts)?;
    if let Some(rm) = reward {
        opts.check()?;
        rerank::run(rm, &model.backend, cat, &users, &mut searched)?;
    }
    for (u, s) in users.iter().zip(searched) {
        out[u.index] = answer::run(cat, snap.version(), u, s)?;
    }
    Ok(out)
}
