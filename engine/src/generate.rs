//! Constrained session beam search (MODEL_SPEC "Constrained session decoding") for a
//! batch of requests: validation, exclusions (eligible counts) and the layout of each
//! position's rows live here, above the backend; the beams themselves (scores, trie
//! nodes, sessions, KV-cache ancestries) live in the backend (`backend/beams.rs`).

use crate::backend::beams::layout;
use crate::backend::{Backend, BeamPlan, BeamStep, Finished};
use crate::catalog::{Catalog, CatalogSnapshot};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::trie::ROOT;

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
}

impl Default for Request {
    fn default() -> Self {
        Request {
            history: Vec::new(),
            beam: 128,
            results: 10,
            exclude: Vec::new(),
            exclude_history: false,
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

    fn check(&self) -> Result<()> {
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
    pub score: f32,
    pub items: Vec<u64>,
    pub sids: Vec<Vec<u32>>,
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
    /// Up to `results` sessions, best first.
    pub sessions: Vec<Session>,
    /// Scores of every beam that survived to the end, best first (for parity checks).
    pub final_scores: Vec<f32>,
    /// The catalog snapshot that served the request (`CatalogSnapshot::version`).
    pub catalog_version: u64,
}

struct UserState {
    /// Index of the request in the caller's batch.
    index: usize,
    beam: usize,
    results: usize,
    history: Vec<usize>,
    excluded: Vec<usize>,
}

/// Checks a request against the model and turns ids into catalog rows (no work sized
/// by the model yet: that comes after the budget check).
fn prepare(cat: &Catalog, index: usize, r: &Request) -> Result<UserState> {
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
/// (backend, budget, cancellation, an internal error).
pub fn recommend_each<B: Backend>(
    model: &Model<B>,
    snap: &CatalogSnapshot,
    requests: &[Request],
    run: &RunOptions<'_>,
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
        match prepare(cat, i, r) {
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
    let need = estimate(model.config(), snap.trie().n_nodes(), &shapes).request();
    if need > budget {
        return Err(Error::Budget { need, budget });
    }
    if users.is_empty() {
        return Ok(out);
    }
    let done = search(model, snap, &users, run)?;
    for (u, resp) in users.iter().zip(done) {
        out[u.index] = resp;
    }
    Ok(out)
}

/// The beam search of the valid requests of a batch, decoded together.
fn search<B: Backend>(
    model: &Model<B>,
    snap: &CatalogSnapshot,
    users: &[UserState],
    run: &RunOptions<'_>,
) -> Result<Vec<Result<Response>>> {
    let cfg = model.config().clone();
    let cat = snap.catalog();
    let trie = snap.trie();
    let index: &B::Index = snap.resident()?;
    let big_l = cfg.n_levels;
    let mut encs = Vec::with_capacity(users.len());
    let mut counts = Vec::with_capacity(users.len());
    for u in users {
        run.check()?;
        encs.push(model.encode_in(cat, &u.history, None)?);
        counts.push(trie.eligible_counts(&u.excluded));
    }
    let alive: Vec<bool> = counts.iter().map(|c| c[ROOT as usize] > 0).collect();
    let cap: usize = users.iter().map(|u| u.beam).sum();
    let enc_refs: Vec<&B::Buf> = encs.iter().collect();
    let mut st = model.start_decode(&enc_refs, cap)?;
    let be = &model.backend;
    let counts = be.counts(&counts)?;
    let plan = BeamPlan {
        widths: users.iter().map(|u| u.beam).collect(),
        first: layout(alive.iter().map(|&a| usize::from(a))),
        cap,
        positions: cfg.dec_len(),
        items: cfg.session_len,
        levels: big_l,
        codes: cfg.codebook_size,
    };
    let mut beams = be.beams_start(&plan)?;
    let mut rows = plan.first.clone();
    let last_t = cfg.dec_len() - 1; // the final item's last-code position is never scored

    for t in 0..last_t {
        run.check()?;
        let slot = t % (big_l + 1);
        let row_user: Vec<u32> = rows
            .iter()
            .enumerate()
            .flat_map(|(u, r)| std::iter::repeat_n(u as u32, r.n))
            .collect();
        if row_user.is_empty() {
            break;
        }
        let inputs = be.beams_inputs(&beams);
        let Some(logp) = model.decode_step(&mut st, t, &inputs, &row_user, None)? else {
            continue; // unscored slot: every beam keeps its row
        };
        // Room for every survivor the trie allows; the beams themselves stay in the
        // backend (on a GPU, next to the log-probs) until the end.
        let fanout = trie.max_fanout(slot);
        let next = layout(
            rows.iter()
                .zip(&plan.widths)
                .map(|(r, &w)| w.min(r.n.saturating_mul(fanout))),
        );
        let step = BeamStep {
            t,
            level: slot,
            rows: &rows,
            next: &next,
            fanout,
            trie,
        };
        be.beams_step(&mut beams, &logp, index, &counts, &step)?;
        rows = next;
    }
    run.check()?;
    let finished = be.beams_finish(&beams)?;
    if finished.len() != users.len() {
        return Err(Error::internal(format!(
            "the beam search returned {} requests of {}",
            finished.len(),
            users.len()
        )));
    }
    users
        .iter()
        .zip(finished)
        .map(|(u, f)| answer(cat, snap.version(), u, f))
        .collect()
}

/// One request's answer from its surviving beams. A catalog row outside the catalog is
/// a broken invariant of the search (the whole call fails: `Internal`); a non-finite
/// score fails only this request (`NonFinite`).
fn answer(
    cat: &Catalog,
    catalog_version: u64,
    u: &UserState,
    f: Finished,
) -> Result<Result<Response>> {
    if f.scores.len() != f.sessions.len() {
        return Err(Error::internal("beam scores and sessions differ in number"));
    }
    let mut sessions = Vec::with_capacity(u.results.min(f.sessions.len()));
    for (s, &score) in f.sessions.iter().zip(&f.scores).take(u.results) {
        let mut items = Vec::with_capacity(s.len());
        let mut sids = Vec::with_capacity(s.len());
        for &i in s {
            let i = i as usize;
            if i >= cat.len() {
                return Err(Error::internal(format!(
                    "the beam search produced catalog row {i} of {} (request {})",
                    cat.len(),
                    u.index
                )));
            }
            items.push(cat.item_id(i));
            sids.push(cat.sid(i).to_vec());
        }
        sessions.push(Session { score, items, sids });
    }
    if let Some(&value) = f.scores.iter().find(|s| !s.is_finite()) {
        return Ok(Err(Error::NonFinite {
            what: "session score".into(),
            value,
        }));
    }
    Ok(Ok(Response {
        sessions,
        final_scores: f.scores,
        catalog_version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserState {
        UserState {
            index: 0,
            beam: 2,
            results: 2,
            history: vec![0],
            excluded: vec![],
        }
    }

    fn catalog() -> Catalog {
        Catalog::new(vec![10, 20], vec![0, 1, 1, 0], 2, 2).unwrap()
    }

    /// Issue 11 item 1: the "no item" sentinel (or any row past the catalog) coming out of
    /// a backend is an internal error, never an index.
    #[test]
    fn a_row_outside_the_catalog_is_an_internal_error() {
        let f = Finished {
            scores: vec![-1.0],
            sessions: vec![vec![1, u32::MAX]],
        };
        let e = answer(&catalog(), 0, &user(), f).unwrap_err();
        assert!(
            matches!(e, Error::Internal(ref m) if m.contains("4294967295")),
            "{e}"
        );
    }

    #[test]
    fn a_non_finite_score_fails_only_its_request() {
        let f = Finished {
            scores: vec![-1.0, f32::NAN],
            sessions: vec![vec![0], vec![1]],
        };
        let r = answer(&catalog(), 0, &user(), f).unwrap();
        assert!(matches!(r, Err(Error::NonFinite { .. })), "{r:?}");
        let ok = Finished {
            scores: vec![-1.0, -2.0],
            sessions: vec![vec![0], vec![1]],
        };
        let r = answer(&catalog(), 0, &user(), ok).unwrap().unwrap();
        assert_eq!(r.sessions[1].items, vec![20]);
    }
}
