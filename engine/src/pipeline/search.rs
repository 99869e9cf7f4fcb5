//! The search stage: the constrained session beam search (MODEL_SPEC "Constrained
//! session decoding") of a batch of requests, decoded together. Validation, exclusions
//! (eligible counts) and the layout of each position's rows live here, above the
//! backend; the beams themselves (scores, trie nodes, sessions, KV-cache ancestries)
//! live in the backend (`backend/beams.rs`) and are read back once at the end, and once
//! after the first item when a request asks for the item list.

use super::{Beam, Searched};
use crate::backend::beams::layout;
use crate::backend::{Backend, BeamPlan, BeamStep, Finished};
use crate::catalog::CatalogSnapshot;
use crate::error::{Error, Result};
use crate::generate::{RunOptions, UserState};
use crate::model::Model;
use crate::trie::ROOT;

/// Every surviving beam of every request (in `users` order), best first.
pub(crate) fn run<B: Backend>(
    model: &Model<B>,
    snap: &CatalogSnapshot,
    users: &[UserState],
    run: &RunOptions<'_>,
) -> Result<Vec<Searched>> {
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
    let want_items = users.iter().any(|u| u.items > 0);
    let mut first: Option<Vec<Finished>> = None;

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
        // The first item's last code: these beams are the item list (one readback).
        if want_items && t + 1 == big_l {
            first = Some(be.beams_finish(&beams)?);
        }
    }
    run.check()?;
    let finished = be.beams_finish(&beams)?;
    if finished.len() != users.len() || first.as_ref().is_some_and(|f| f.len() != users.len()) {
        return Err(Error::internal(format!(
            "the beam search returned {} requests of {}",
            finished.len(),
            users.len()
        )));
    }
    let mut first = first.map(Vec::into_iter);
    users
        .iter()
        .zip(finished)
        .map(|(u, f)| {
            let items = first.as_mut().and_then(Iterator::next);
            searched(u, f, items)
        })
        .collect()
}

/// One request's beams in the stages' form.
fn searched(u: &UserState, f: Finished, first: Option<Finished>) -> Result<Searched> {
    if f.scores.len() != f.sessions.len() {
        return Err(Error::internal("beam scores and sessions differ in number"));
    }
    let final_scores = f.scores.clone();
    let beams = f
        .sessions
        .into_iter()
        .zip(f.scores)
        .map(|(rows, score)| Beam {
            score,
            rows,
            reward: None,
        })
        .collect();
    let mut first_items = Vec::new();
    if let Some(f) = first.filter(|_| u.items > 0) {
        for (s, &score) in f.sessions.iter().zip(&f.scores).take(u.items) {
            match s.as_slice() {
                [row] => first_items.push((*row, score)),
                _ => {
                    return Err(Error::internal(format!(
                        "the item list read {} items of a beam after the first item",
                        s.len()
                    )))
                }
            }
        }
    }
    Ok(Searched {
        beams,
        first_items,
        final_scores,
    })
}
