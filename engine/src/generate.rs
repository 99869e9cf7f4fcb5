//! Constrained session beam search (MODEL_SPEC "Constrained session decoding") for a
//! batch of requests: the trie, exclusions, beam bookkeeping and the KV-cache ancestry
//! live here, above the backend.

use crate::backend::{Backend, BeamIn, Candidate, SelectGroup};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::trie::{Trie, ROOT};

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
}

#[derive(Debug, Clone)]
struct Beam {
    score: f32,
    /// Trie node of the current item's prefix.
    node: u32,
    /// Catalog rows of the completed items.
    session: Vec<u32>,
    /// Cache rows of this beam's positions so far.
    ancestry: Vec<u32>,
    /// Code chosen at the last step (fed at the next position).
    last_code: u32,
}

struct UserState {
    beam: usize,
    results: usize,
    counts: Vec<u32>,
    beams: Vec<Beam>,
}

/// Checks a request against the model and turns ids into catalog rows.
fn prepare(
    model_catalog: &crate::catalog::Catalog,
    trie: &Trie,
    r: &Request,
) -> Result<(Vec<usize>, UserState)> {
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
    let counts = trie.eligible_counts(&excluded);
    let start = Beam {
        score: 0.0,
        node: ROOT,
        session: Vec::new(),
        ancestry: Vec::new(),
        last_code: 0,
    };
    let beams = if counts[ROOT as usize] > 0 {
        vec![start]
    } else {
        Vec::new()
    };
    Ok((
        history,
        UserState {
            beam: r.beam,
            results: r.results,
            counts,
            beams,
        },
    ))
}

pub fn recommend<B: Backend>(
    model: &Model<B>,
    trie: &Trie,
    requests: &[Request],
) -> Result<Vec<Response>> {
    let cfg = model.config().clone();
    let cat = &model.file.catalog;
    let big_l = cfg.n_levels;
    let mut users = Vec::with_capacity(requests.len());
    let mut encs = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let (history, user) = prepare(cat, trie, r).map_err(|e| {
            if requests.len() > 1 {
                Error::request(format!("request {i}: {e}"))
            } else {
                e
            }
        })?;
        encs.push(model.encode(&history, None)?);
        users.push(user);
    }
    let cap: usize = users.iter().map(|u| u.beam).sum();
    let enc_refs: Vec<&B::Buf> = encs.iter().collect();
    let mut st = model.start_decode(&enc_refs, cap)?;
    let index = model.index(trie)?;
    let counts: Vec<Vec<u32>> = users
        .iter_mut()
        .map(|u| std::mem::take(&mut u.counts))
        .collect();
    let counts = model.backend.counts(&counts)?;
    let last_t = cfg.dec_len() - 1; // the final item's last-code position is never scored

    for t in 0..last_t {
        let slot = t % (big_l + 1);
        let mut codes = Vec::new();
        let mut row_user = Vec::new();
        let mut ancestry = Vec::new();
        for (u, user) in users.iter().enumerate() {
            for b in &user.beams {
                codes.push(b.last_code);
                row_user.push(u as u32);
                ancestry.extend_from_slice(&b.ancestry);
            }
        }
        if row_user.is_empty() {
            break;
        }
        let logp = model.decode_step(&mut st, t, &codes, &row_user, &ancestry, None)?;
        let Some(logp) = logp else {
            // Unscored slot: every beam keeps its place and records its cache row.
            let mut row = 0;
            for user in &mut users {
                for b in &mut user.beams {
                    b.ancestry.push((t * cap + row) as u32);
                    row += 1;
                }
            }
            continue;
        };
        // The constrained top-B runs on the backend (on a GPU next to the log-probs);
        // only the survivors come back.
        let chosen = {
            let ins: Vec<Vec<BeamIn<'_>>> = users
                .iter()
                .map(|u| {
                    u.beams
                        .iter()
                        .map(|b| BeamIn {
                            score: b.score,
                            node: b.node,
                            session: &b.session,
                        })
                        .collect()
                })
                .collect();
            let mut row0 = 0;
            let groups: Vec<SelectGroup<'_>> = ins
                .iter()
                .zip(&users)
                .enumerate()
                .map(|(u, (beams, user))| {
                    let g = SelectGroup {
                        user: u,
                        row0,
                        width: user.beam,
                        beams,
                    };
                    row0 += beams.len();
                    g
                })
                .collect();
            model
                .backend
                .select(&logp, &index, &counts, slot, &groups)?
        };
        let mut row0 = 0;
        for (user, cands) in users.iter_mut().zip(chosen) {
            let n = user.beams.len();
            advance(user, trie, &cands, slot, t, cap, row0);
            row0 += n;
        }
    }
    Ok(users
        .into_iter()
        .map(|u| Response {
            final_scores: u.beams.iter().map(|b| b.score).collect(),
            sessions: u
                .beams
                .iter()
                .take(u.results)
                .map(|b| Session {
                    score: b.score,
                    items: b.session.iter().map(|&i| cat.item_id(i as usize)).collect(),
                    sids: b
                        .session
                        .iter()
                        .map(|&i| cat.sid(i as usize).to_vec())
                        .collect(),
                })
                .collect(),
        })
        .collect())
}

/// Moves one user's beams (rows `row0..` of position `t`) to the chosen candidates.
fn advance(
    user: &mut UserState,
    trie: &Trie,
    cands: &[Candidate],
    level: usize,
    t: usize,
    cap: usize,
    row0: usize,
) {
    let last_level = level + 1 == trie.levels();
    user.beams = cands
        .iter()
        .map(|c| {
            let parent = &user.beams[c.beam as usize];
            let mut ancestry = Vec::with_capacity(parent.ancestry.len() + 1);
            ancestry.extend_from_slice(&parent.ancestry);
            ancestry.push((t * cap + row0 + c.beam as usize) as u32);
            let mut session = parent.session.clone();
            let node = if last_level {
                if let Some(item) = trie.leaf_item(c.child) {
                    session.push(item as u32);
                }
                ROOT
            } else {
                c.child
            };
            Beam {
                score: c.score,
                node,
                session,
                ancestry,
                last_code: c.code,
            }
        })
        .collect();
}
