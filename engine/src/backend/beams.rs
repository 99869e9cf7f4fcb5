//! The beam state of the constrained session search, as the backends keep it.
//!
//! A batch of requests decodes in lockstep. At each position, request `g` owns the rows
//! `rows[g].row0 .. + rows[g].n` of the decoder's batch; the host knows these layouts in
//! advance (an upper bound on the survivors, [`BeamStep::next`]), so a device backend can
//! keep the beams themselves (scores, trie nodes, sessions, ancestries) on the device and
//! never read them back before the end. A request's live beams are the first rows of
//! its range, best first; the rest are dead rows whose outputs are ignored.
//!
//! Row `r` of position `t` writes its keys and values to cache row `t * cap + r`. The
//! ancestry list of row `r` (stride `positions`) holds at `p <= t` the cache row of its
//! beam's position `p`; entries the beam has not reached yet hold `p * cap + r`, the
//! row's own cache row, so the current position never needs to be written.
//!
//! [`HostBeams`] is the host implementation (the CPU reference, also used by the CUDA
//! backend); the wgpu backend keeps the same state in device buffers.

use super::{BeamIn, Candidate, SelectGroup};
use crate::error::{Error, Result};
use crate::trie::{Trie, ROOT};

/// The rows of one request at one position: `row0 .. row0 + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rows {
    pub row0: usize,
    pub n: usize,
}

/// Lays out `n[g]` rows per request, one request after the other.
pub fn layout(n: impl IntoIterator<Item = usize>) -> Vec<Rows> {
    let mut row0 = 0;
    n.into_iter()
        .map(|n| {
            let r = Rows { row0, n };
            row0 += n;
            r
        })
        .collect()
}

/// The shape of one batch's search, fixed for its whole length.
#[derive(Debug, Clone)]
pub struct BeamPlan {
    /// Beam width of each request.
    pub widths: Vec<usize>,
    /// Rows of the first position: one beam per request, none where no item is eligible.
    pub first: Vec<Rows>,
    /// Cache rows per position (`Σ widths`).
    pub cap: usize,
    /// Decoder positions `T` (the stride of the ancestry lists).
    pub positions: usize,
    /// Items per session `m`.
    pub items: usize,
    /// SID levels `L`.
    pub levels: usize,
    /// Codes per level `K` (every code fed back is below it).
    pub codes: usize,
}

impl BeamPlan {
    pub fn check(&self) -> Result<()> {
        let ok = self.widths.len() == self.first.len()
            && self.widths.iter().sum::<usize>() == self.cap
            && self
                .first
                .iter()
                .zip(&self.widths)
                .all(|(r, &w)| r.n <= w.min(1))
            && self.first.iter().map(|r| r.row0 + r.n).max().unwrap_or(0) <= self.cap
            && self.levels > 0
            && self.codes > 0
            && self
                .cap
                .checked_mul(self.positions)
                .is_some_and(|n| n <= u32::MAX as usize);
        if ok {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "beam plan: widths {:?}, first rows {:?}, {} positions",
                self.widths, self.first, self.positions
            )))
        }
    }
}

/// One scored step: the log-probs of position `t` (trie depth `level`) for the rows
/// `rows`, and room for the survivors at the next position in `next`.
#[derive(Debug, Clone, Copy)]
pub struct BeamStep<'a> {
    pub t: usize,
    pub level: usize,
    pub rows: &'a [Rows],
    /// `next[g].n` is at least `min(width, rows[g].n × fanout)`.
    pub next: &'a [Rows],
    /// The most children any node at depth `level` has.
    pub fanout: usize,
    pub trie: &'a Trie,
}

impl BeamStep<'_> {
    /// Checks the step against the plan and the current rows.
    pub fn check(&self, plan: &BeamPlan, current: &[Rows]) -> Result<()> {
        let bad = self.rows != current
            || self.next.len() != plan.widths.len()
            || self.level >= plan.levels
            || self.t + 1 >= plan.positions
            || self.next.iter().map(|r| r.row0 + r.n).max().unwrap_or(0) > plan.cap
            || self
                .next
                .iter()
                .zip(self.rows)
                .zip(&plan.widths)
                .any(|((nx, r), &w)| nx.n < w.min(r.n.saturating_mul(self.fanout)) || nx.n > w);
        if bad {
            return Err(Error::internal(format!(
                "beam step at position {}: rows {:?} (expected {current:?}), next {:?}",
                self.t, self.rows, self.next
            )));
        }
        Ok(())
    }
}

/// What a decoder position reads of the beams.
pub struct BeamInputs<'a, I> {
    /// `[cap]`: the code each row chose last (fed at slots ≥ 1).
    pub codes: &'a I,
    /// `[cap, positions]`: each row's ancestry (see the module notes).
    pub ancestry: &'a I,
}

/// The ancestry lists before any step: every entry of row `r` at position `p` is the
/// row's own cache row `p * cap + r`. `[cap, positions]`, the largest host list of a
/// search: allocated fallibly, so running out of memory is an error, not an abort.
pub fn identity_ancestry(cap: usize, positions: usize) -> Result<Vec<u32>> {
    let n = cap
        .checked_mul(positions)
        .ok_or_else(|| Error::internal("ancestry lists overflow"))?;
    let mut anc = Vec::new();
    anc.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        what: "beam ancestry lists".into(),
        bytes: n as u64 * 4,
    })?;
    anc.extend((0..n).map(|i| ((i % positions) * cap + i / positions) as u32));
    Ok(anc)
}

/// One request's surviving beams at the end, best first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Finished {
    pub scores: Vec<f32>,
    /// Catalog rows of each beam's session.
    pub sessions: Vec<Vec<u32>>,
}

#[derive(Debug, Clone)]
struct Beam {
    score: f32,
    node: u32,
    session: Vec<u32>,
    /// Cache rows of positions `0 .. ancestry.len()`; later positions are implicit.
    ancestry: Vec<u32>,
    code: u32,
}

/// The beam state on the host, for backends whose index lists are host vectors; the
/// lists the next position reads are rebuilt after each step.
pub struct HostBeams {
    plan: BeamPlan,
    rows: Vec<Rows>,
    beams: Vec<Vec<Beam>>,
    codes: Vec<u32>,
    ancestry: Vec<u32>,
}

impl HostBeams {
    pub fn start(plan: &BeamPlan) -> Result<Self> {
        plan.check()?;
        let beams = plan
            .first
            .iter()
            .map(|r| {
                (0..r.n)
                    .map(|_| Beam {
                        score: 0.0,
                        node: ROOT,
                        session: Vec::new(),
                        ancestry: Vec::new(),
                        code: 0,
                    })
                    .collect()
            })
            .collect();
        let mut hb = HostBeams {
            plan: plan.clone(),
            rows: plan.first.clone(),
            beams,
            codes: Vec::new(),
            ancestry: Vec::new(),
        };
        hb.refresh()?;
        Ok(hb)
    }

    pub fn inputs(&self) -> BeamInputs<'_, Vec<u32>> {
        BeamInputs {
            codes: &self.codes,
            ancestry: &self.ancestry,
        }
    }

    /// Selects with `select` (the backend's constrained top-B over host beams) and
    /// moves every request's beams to the survivors.
    pub fn step(
        &mut self,
        step: &BeamStep<'_>,
        select: impl FnOnce(&[SelectGroup<'_>]) -> Result<Vec<Vec<Candidate>>>,
    ) -> Result<()> {
        step.check(&self.plan, &self.rows)?;
        let chosen = if self.beams.iter().all(Vec::is_empty) {
            vec![Vec::new(); self.beams.len()]
        } else {
            let ins: Vec<Vec<BeamIn<'_>>> = self
                .beams
                .iter()
                .map(|bs| {
                    bs.iter()
                        .map(|b| BeamIn {
                            score: b.score,
                            node: b.node,
                            session: &b.session,
                        })
                        .collect()
                })
                .collect();
            let groups: Vec<SelectGroup<'_>> = ins
                .iter()
                .enumerate()
                .map(|(g, beams)| SelectGroup {
                    user: g,
                    row0: self.rows[g].row0,
                    width: step.next[g].n,
                    beams,
                })
                .collect();
            select(&groups)?
        };
        if chosen.len() != self.beams.len() {
            return Err(Error::internal("beam step: selection lost a request"));
        }
        let (cap, t) = (self.plan.cap, step.t);
        let last_level = step.level + 1 == self.plan.levels;
        for (g, cands) in chosen.iter().enumerate() {
            let row0 = self.rows[g].row0;
            let old = &self.beams[g];
            let mut new = Vec::with_capacity(cands.len());
            for c in cands.iter().take(step.next[g].n) {
                let parent = old
                    .get(c.beam as usize)
                    .ok_or_else(|| Error::internal("beam step: a survivor names no beam"))?;
                let prow = row0 + c.beam as usize;
                let mut ancestry = Vec::with_capacity(t + 1);
                ancestry.extend_from_slice(&parent.ancestry);
                ancestry.extend((parent.ancestry.len()..=t).map(|p| (p * cap + prow) as u32));
                let mut session = parent.session.clone();
                let node = if last_level {
                    if let Some(item) = step.trie.leaf_item(c.child) {
                        session.push(item as u32);
                    }
                    ROOT
                } else {
                    c.child
                };
                new.push(Beam {
                    score: c.score,
                    node,
                    session,
                    ancestry,
                    code: c.code,
                });
            }
            self.beams[g] = new;
        }
        self.rows = step.next.to_vec();
        self.refresh()
    }

    /// Rebuilds the index lists of the current rows.
    fn refresh(&mut self) -> Result<()> {
        let (cap, tn) = (self.plan.cap, self.plan.positions);
        let mut codes = vec![0u32; cap];
        let mut anc = identity_ancestry(cap, tn)?;
        for (rows, beams) in self.rows.iter().zip(&self.beams) {
            for (i, b) in beams.iter().enumerate() {
                let r = rows.row0 + i;
                codes[r] = b.code;
                anc[r * tn..r * tn + b.ancestry.len()].copy_from_slice(&b.ancestry);
            }
        }
        self.codes = codes;
        self.ancestry = anc;
        Ok(())
    }

    pub fn finish(&self) -> Vec<Finished> {
        self.beams
            .iter()
            .map(|bs| Finished {
                scores: bs.iter().map(|b| b.score).collect(),
                sessions: bs.iter().map(|b| b.session.clone()).collect(),
            })
            .collect()
    }
}
