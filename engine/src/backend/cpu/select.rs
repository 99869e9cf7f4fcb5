//! Constrained top-B selection: the reference for `Backend::select`.

use super::{err, CpuBuf};
use crate::backend::{Candidate, SelectGroup};
use crate::error::Result;
use crate::trie::Trie;
use rayon::prelude::*;
use std::cmp::Ordering;

/// From this many beams in a group their candidates are scored in parallel.
const PARALLEL_MIN_BEAMS: usize = 16;

fn order(a: &Candidate, b: &Candidate) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.beam.cmp(&b.beam))
        .then(a.code.cmp(&b.code))
}

pub fn select(
    logp: &CpuBuf,
    trie: &Trie,
    counts: &[Vec<u32>],
    level: usize,
    groups: &[SelectGroup<'_>],
) -> Result<Vec<Vec<Candidate>>> {
    let k = logp.cols;
    groups
        .iter()
        .map(|g| {
            let counts = counts
                .get(g.user)
                .ok_or_else(|| err(format!("select: no eligible counts for request {}", g.user)))?;
            if g.row0 + g.beams.len() > logp.rows
                || counts.len() != trie.n_nodes()
                || level >= trie.levels()
            {
                return Err(err(format!(
                    "select: rows {}+{} of {}, level {level}",
                    g.row0,
                    g.beams.len(),
                    logp.rows
                )));
            }
            // Each beam keeps its own best `width` (the group's best `width` are among
            // them, `order` being total), so beams run in parallel and the merge is small.
            // A beam's candidates (up to a level's codes) go through a scratch vector per
            // task: one per beam, kept until the merge, was 128 KiB of fresh pages per
            // beam and step at 8,192 codes (half the page faults of a medium request).
            let beam_best =
                |cands: &mut Vec<Candidate>, (bi, b): (usize, &crate::backend::BeamIn<'_>)| {
                    let lp = logp.row(g.row0 + bi);
                    // The nodes this beam's session already passed through at this level.
                    let taken: Vec<u32> = b
                        .session
                        .iter()
                        .map(|&it| trie.path_node(it as usize, level))
                        .collect();
                    cands.clear();
                    for (code, child) in trie.children(b.node) {
                        let in_session = taken.iter().filter(|&&n| n == child).count() as u32;
                        if counts[child as usize] > in_session && (code as usize) < k {
                            cands.push(Candidate {
                                score: b.score + lp[code as usize],
                                beam: bi as u32,
                                code,
                                child,
                            });
                        }
                    }
                    if cands.len() > g.width && g.width > 0 {
                        cands.select_nth_unstable_by(g.width - 1, order);
                    }
                    cands[..g.width.min(cands.len())].to_vec()
                };
            let per_beam: Vec<Vec<Candidate>> = if g.beams.len() >= PARALLEL_MIN_BEAMS {
                g.beams
                    .par_iter()
                    .enumerate()
                    .map_init(Vec::new, beam_best)
                    .collect()
            } else {
                let mut scratch = Vec::new();
                g.beams
                    .iter()
                    .enumerate()
                    .map(|x| beam_best(&mut scratch, x))
                    .collect()
            };
            let mut cands: Vec<Candidate> = per_beam.into_iter().flatten().collect();
            if cands.len() > g.width && g.width > 0 {
                cands.select_nth_unstable_by(g.width - 1, order);
            }
            cands.truncate(g.width);
            cands.sort_unstable_by(order);
            Ok(cands)
        })
        .collect()
}
