//! Constrained session beam search (MODEL_SPEC "Constrained session decoding") for a
//! batch of requests: validation, exclusions (eligible counts) and the layout of each
//! position's rows live here, above the backend; the beams themselves (scores, trie
//! nodes, sessions, KV-cache ancestries) live in the backend (`backend/beams.rs`).

use crate::backend::beams::layout;
use crate::backend::{Backend, BeamPlan, BeamStep};
use crate::catalog::CatalogSnapshot;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::trie::ROOT;

/// Beam widths above this are refused: the KV cache grows linearly with it and no
/// OneRec deployment uses more than a few hundred.
pub const MAX_BEAM: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Item ids, oldest first.
    pub history: Vec<u64>,
    pub beam: usize,
    pub results: usize,
    /// Items never to recommend; ids outside the catalog are ignored.
    pub exclude: Vec<u64>,
    /// Also exclude every history item (including those older than `max_history`).
    pub exclude_history: bool,
}

impl Request {
    pub fn new(history: Vec<u64>, beam: usize, results: usize) -> Self {
        Request {
            history,
            beam,
            results,
            exclude: Vec::new(),
            exclude_history: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub score: f32,
    pub items: Vec<u64>,
    pub sids: Vec<Vec<u32>>,
}

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
    beam: usize,
    results: usize,
    counts: Vec<u32>,
    /// Some item is eligible: the search starts with one beam.
    alive: bool,
}

/// Checks a request against the model and turns ids into catalog rows.
fn prepare(snap: &CatalogSnapshot, r: &Request) -> Result<(Vec<usize>, UserState)> {
    let model_catalog = snap.catalog();
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
    let history = model_catalog.resolve(&r.history)?;
    // Excluded ids outside the catalog can never be recommended anyway; an app's
    // block list may name items this model version does not know, so they are skipped.
    let mut excluded: Vec<usize> = r
        .exclude
        .iter()
        .filter_map(|&id| model_catalog.index_of(id))
        .collect();
    if r.exclude_history {
        excluded.extend_from_slice(&history);
    }
    // Removed items stay known (a history may name them) but are never eligible.
    excluded.extend_from_slice(snap.removed_rows());
    let counts = snap.trie().eligible_counts(&excluded);
    Ok((
        history,
        UserState {
            beam: r.beam,
            results: r.results,
            alive: counts[ROOT as usize] > 0,
            counts,
        },
    ))
}

/// Serves `requests` from one catalog snapshot, held to the end (made by
/// `Model::snapshot` for this model's backend).
pub fn recommend<B: Backend>(
    model: &Model<B>,
    snap: &CatalogSnapshot,
    requests: &[Request],
) -> Result<Vec<Response>> {
    let cfg = model.config().clone();
    let cat = snap.catalog();
    let trie = snap.trie();
    let index: &B::Index = snap.resident()?;
    let big_l = cfg.n_levels;
    let mut users = Vec::with_capacity(requests.len());
    let mut encs = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let (history, user) = prepare(snap, r).map_err(|e| {
            if requests.len() > 1 {
                Error::request(format!("request {i}: {e}"))
            } else {
                e
            }
        })?;
        encs.push(model.encode_in(cat, &history, None)?);
        users.push(user);
    }
    let cap: usize = users.iter().map(|u| u.beam).sum();
    let enc_refs: Vec<&B::Buf> = encs.iter().collect();
    let mut st = model.start_decode(&enc_refs, cap)?;
    let counts: Vec<Vec<u32>> = users
        .iter_mut()
        .map(|u| std::mem::take(&mut u.counts))
        .collect();
    let be = &model.backend;
    let counts = be.counts(&counts)?;
    let plan = BeamPlan {
        widths: users.iter().map(|u| u.beam).collect(),
        first: layout(users.iter().map(|u| usize::from(u.alive))),
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
    let finished = be.beams_finish(&beams)?;
    Ok(users
        .iter()
        .zip(finished)
        .map(|(u, f)| Response {
            sessions: f
                .sessions
                .iter()
                .zip(&f.scores)
                .take(u.results)
                .map(|(s, &score)| Session {
                    score,
                    items: s.iter().map(|&i| cat.item_id(i as usize)).collect(),
                    sids: s.iter().map(|&i| cat.sid(i as usize).to_vec()).collect(),
                })
                .collect(),
            final_scores: f.scores,
            catalog_version: snap.version(),
        })
        .collect())
}
