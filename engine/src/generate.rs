//! Requests and answers of the engine: the request (builder), its validation, the work
//! bound (rows, memory budget), and the entry points that serve a batch through the
//! request pipeline (`pipeline/`: search, optional rerank, answer).

use crate::backend::Backend;
use crate::catalog::{Catalog, CatalogSnapshot};
use crate::error::{Error, Result};
use crate::model::Model;

/// Beam widths above this are refused: the KV cache grows linearly with it and no
/// OneRec deployment uses more than a few hundred.
pub const MAX_BEAM: usize = 4096;

/// Requests one call may hold (a device backend lays them out in one grid dimension).
pub const MAX_BATCH_REQUESTS: usize = 65_535;

/// Beam rows (the sum of the beams) one call may decode: 16 users at the largest beam,
/// or 512 at the paper's 128. Larger batches are refused before anything is allocated;
/// a caller splits them.
pub const MAX_BATCH_ROWS: usize = 65_536;

/// One user's request. Make it with [`Request::builder`] (or `Default` and field
/// assignments): the struct is `#[non_exhaustive]`, so new fields do not break callers.
///
/// ```
/// use onerec_engine::Request;
/// let r = Request::builder(vec![42, 7]).beam(16).results(3).exclude(vec![9]).build();
/// assert_eq!((r.beam, r.results, r.exclude_history), (16, 3, false));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// Item ids, oldest first.
    pub history: Vec<u64>,
    /// Beam width, `1..=MAX_BEAM` (default 128, the paper's).
    pub beam: usize,
    /// Sessions returned, `1..=beam` (default 10).
    pub results: usize,
    /// Items never to recommend; ids outside the catalog are ignored.
    pub exclude: Vec<u64>,
    /// Also exclude every history item (including those older than `max_history`).
    pub exclude_history: bool,
    /// Order the surviving beams by the model's reward model before the answer
    /// (docs/REWARD_MODEL.md); [`Error::NoRewardModel`] when the model has none.
    pub rerank: bool,
    /// Return sessions that hold the same set of items as a better one (by default they
    /// are dropped and later beams fill their places; docs/DECISIONS.md "Answers").
    pub keep_permutations: bool,
    /// Also answer the best `items` single items (`0..=beam`, default 0): the beams
    /// right after the first item was completed ([`Response::items`]).
    pub items: usize,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            history: Vec::new(),
            beam: 128,
            results: 10,
            exclude: Vec::new(),
            exclude_history: false,
            rerank: false,
            keep_permutations: false,
            items: 0,
        }
    }
}

impl Request {
    pub fn new(history: Vec<u64>, beam: usize, results: usize) -> Self {
        Request {
            history,
            beam,
            results,
            ..Request::default()
        }
    }

    /// A builder starting from the defaults with this history.
    pub fn builder(history: Vec<u64>) -> RequestBuilder {
        RequestBuilder(Request {
            history,
            ..Request::default()
        })
    }
}

/// Builds a [`Request`]; values are checked when the request is served.
#[derive(Debug, Clone)]
pub struct RequestBuilder(Request);

impl RequestBuilder {
    pub fn beam(mut self, beam: usize) -> Self {
        self.0.beam = beam;
        self
    }
    pub fn results(mut self, results: usize) -> Self {
        self.0.results = results;
        self
    }
    pub fn exclude(mut self, ids: Vec<u64>) -> Self {
        self.0.exclude = ids;
        self
    }
    pub fn exclude_history(mut self, yes: bool) -> Self {
        self.0.exclude_history = yes;
        self
    }
    pub fn rerank(mut self, yes: bool) -> Self {
        self.0.rerank = yes;
        self
    }
    pub fn keep_permutations(mut self, yes: bool) -> Self {
        self.0.keep_permutations = yes;
        self
    }
    pub fn items(mut self, k: usize) -> Self {
        self.0.items = k;
        self
    }
    pub fn build(self) -> Request {
        self.0
    }
}

/// Per-call options: an abort check the engine calls before each user's encoder pass
/// and between decoder steps; when it returns true the call ends with
/// [`Error::Cancelled`] (within one decoder step).
#[derive(Clone, Copy, Default)]
pub struct RunOptions<'a> {
    abort: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a> RunOptions<'a> {
    pub fn abort(mut self, check: &'a (dyn Fn() -> bool + Sync)) -> Self {
        self.abort = Some(check);
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        match self.abort {
            Some(f) if f() => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("abort", &self.abort.is_some())
            .finish()
    }
}

/// The shape of one request, for [`estimate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestShape {
    pub beam: usize,
    /// History items (those past `max_history` are dropped by the encoder).
    pub history: usize,
}

/// Bytes a model and a call need (an estimate from the shapes, on the high side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEstimate {
    /// The model file (mapped or held) plus what the backend keeps of it.
    pub model: u64,
    /// Self- and cross-attention K/V caches of every decoder layer (f32).
    pub kv_cache: u64,
    /// Activations of the largest encoder pass and decoder step.
    pub activations: u64,
    /// Beam state, candidate keys and eligible counts.
    pub search: u64,
}

impl MemoryEstimate {
    /// Working memory of the call (what the budget is compared with).
    pub fn request(&self) -> u64 {
        self.kv_cache
            .saturating_add(self.activations)
            .saturating_add(self.search)
    }
}

/// Working memory of a call with these request shapes on a model of `cfg` whose trie has
/// `n_nodes` nodes (f32 everywhere; a backend with an f16 KV cache needs less).
pub fn estimate(cfg: &crate::Config, n_nodes: usize, shapes: &[RequestShape]) -> MemoryEstimate {
    let u = |v: usize| v as u64;
    let mul = |a: u64, b: u64| a.saturating_mul(b);
    let add = |a: u64, b: u64| a.saturating_add(b);
    let cap = shapes.iter().fold(0u64, |a, s| add(a, u(s.beam)));
    let hs: Vec<u64> = shapes
        .iter()
        .map(|s| u(s.history.min(cfg.max_history)))
        .collect();
    let h_sum = hs.iter().fold(0u64, |a, &h| add(a, h));
    let h_max = hs.iter().copied().max().unwrap_or(0);
    let (d, k, t) = (u(cfg.d_model), u(cfg.codebook_size), u(cfg.dec_len()));
    let heads = u(cfg.n_heads);
    let ffn = u(cfg.d_ff.max(cfg.top_k * cfg.d_expert));
    let kv = mul(mul(u(cfg.n_dec_layers), 2 * 4 * d), add(mul(t, cap), h_sum));
    // A decoder step: logits and log-probs, FFN/MoE intermediates, attention buffers
    // and scores; an encoder pass (one user at a time) likewise, plus every user's output.
    let step = mul(cap, 4 * (2 * k + 4 * ffn + 10 * d + heads * add(t, h_max)));
    let enc = add(
        mul(h_max, 4 * (4 * ffn + 10 * d + heads * h_max)),
        mul(h_sum, 4 * d),
    );
    // Ancestry lists (host and two device halves), beams, candidate keys, counts.
    let search = add(
        mul(cap, 4 * (3 * t + 4 * (2 + u(cfg.session_len)) + k)),
        mul(u(shapes.len()), 4 * u(n_nodes)),
    );
    MemoryEstimate {
        model: 0,
        kv_cache: kv,
        activations: add(step, enc),
        search,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The model's score: the sum of the log-probabilities of its codes.
    pub score: f32,
    pub items: Vec<u64>,
    pub sids: Vec<Vec<u32>>,
    /// The reward model's `R` when the request was reranked.
    pub reward: Option<f32>,
    /// The reward model's `r_k`, one per signal (`RewardConfig::signals`), when reranked.
    pub signals: Vec<f32>,
}

/// One item of the item-list answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemScore {
    pub item: u64,
    pub sid: Vec<u32>,
    /// The sum of the log-probabilities of the item's codes as the first of a session.
    pub score: f32,
}

/// One request's answer: sessions best first, each `session_len` items with their SIDs.
///
/// ```
/// use onerec_engine::{BackendKind, Engine, Request};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/moe_dec_l2");
/// let engine = Engine::load(path.as_ref(), BackendKind::Cpu)?;
/// let history = vec![engine.file().catalog.item_id(0)];
/// let resp = engine.recommend(&[Request::builder(history).beam(8).results(2).build()])?.remove(0);
/// for pair in resp.sessions.windows(2) {
///     assert!(pair[0].score >= pair[1].score); // best first
/// }
/// for s in &resp.sessions {
///     assert_eq!(s.items.len(), s.sids.len());
///     assert!(s.sids.iter().all(|sid| sid.len() == engine.config().n_levels));
/// }
/// assert!(resp.final_scores.len() >= resp.sessions.len());
/// # Ok::<(), onerec_engine::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    /// Up to `results` sessions, best first (by reward when reranked); no two hold the
    /// same set of items unless the request keeps permutations.
    pub sessions: Vec<Session>,
    /// Up to `items` single items, best first (empty unless asked for).
    pub items: Vec<ItemScore>,
    /// Scores of every beam that survived to the end, best first (for parity checks).
    pub final_scores: Vec<f32>,
    /// The catalog snapshot that served the request (`CatalogSnapshot::version`).
    pub catalog_version: u64,
}

/// A valid request, its ids turned into catalog rows: what the pipeline's stages read.
#[derive(Debug, Clone)]
pub(crate) struct UserState {
    /// Index of the request in the caller's batch.
    pub index: usize,
    pub beam: usize,
    pub results: usize,
    pub history: Vec<usize>,
    pub excluded: Vec<usize>,
    pub rerank: bool,
    pub keep_permutations: bool,
    pub items: usize,
}

/// Checks a request against the model and turns ids into catalog rows (no work sized
/// by the model yet: that comes after the budget check). `has_reward`: whether the
/// model can rerank.
pub(crate) fn prepare(
    cat: &Catalog,
    index: usize,
    r: &Request,
    has_reward: bool,
) -> Result<UserState> {
    if r.history.is_empty() {
        return Err(Error::request(
            "the history is empty: give at least one item",
        ));
    }
    if r.beam == 0 {
        return Err(Error::request("beam must be at least 1"));
    }
    if r.beam > MAX_BEAM {
        return Err(Error::request(format!(
            "beam {} is larger than the maximum {MAX_BEAM}",
            r.beam
        )));
    }
    if r.results == 0 || r.results > r.beam {
        return Err(Error::request(format!(
            "results must be in 1..=beam ({}), got {}",
            r.beam, r.results
        )));
    }
    if r.items > r.beam {
        return Err(Error::request(format!(
            "items must be in 0..=beam ({}), got {}",
            r.beam, r.items
        )));
    }
    if r.rerank && !has_reward {
        return Err(Error::NoRewardModel);
    }
    let history = cat.resolve(&r.history)?;
    // Excluded ids outside the catalog can never be recommended anyway; an app's
    // block list may name items this model version does not know, so they are skipped.
    let mut excluded: Vec<usize> = r
        .exclude
        .iter()
        .filter_map(|&id| cat.index_of(id))
        .collect();
    if r.exclude_history {
        excluded.extend_from_slice(&history);
    }
    Ok(UserState {
        index,
        beam: r.beam,
        results: r.results,
        history,
        excluded,
        rerank: r.rerank,
        keep_permutations: r.keep_permutations,
        items: r.items,
    })
}

/// Serves a batch with the default options and budget (see [`recommend_each`]); fails
/// if any request fails, naming it ([`Error::InRequest`]) when the batch has several.
pub fn recommend<B: Backend>(
    model: &Model<B>,
    snap: &CatalogSnapshot,
    requests: &[Request],
) -> Result<Vec<Response>> {
    let each = recommend_each(
        model,
        snap,
        requests,
        &RunOptions::default(),
        crate::DEFAULT_MEMORY_BUDGET,
    )?;
    all_or_first_error(each)
}

/// Every response, or the first request's error (wrapped with its index in a batch).
pub(crate) fn all_or_first_error(each: Vec<Result<Response>>) -> Result<Vec<Response>> {
    let many = each.len() > 1;
    each.into_iter()
        .enumerate()
        .map(|(index, r)| {
            r.map_err(|e| match many {
                true => Error::InRequest {
                    index,
                    error: Box::new(e),
                },
                false => e,
            })
        })
        .collect()
}

/// Serves a batch of requests (one per user): the valid ones are decoded together, each
/// invalid one gets its own error. The outer error is a failure of the whole call
/// (backend, budget, cancellation, an internal error). Without a reward model: a
/// request that asks to rerank gets [`Error::NoRewardModel`] (see
/// [`crate::pipeline::Pipeline`] for a model with one).
pub fn recommend_each<B: Backend>(
    model: &Model<B>,
    snap: &CatalogSnapshot,
    requests: &[Request],
    run: &RunOptions<'_>,
    budget: u64,
) -> Result<Vec<Result<Response>>> {
    crate::pipeline::run(model, None, snap, requests, run, budget)
}
