//! Semantic IDs for new items from their embeddings, the way the tokenizer
//! (`reference/train/tokenizer.py`, `assign_new`) gives them: residual nearest centroid
//! level by level, then its collision rule against the SIDs already taken
//! (docs/DECISIONS.md, "Catalog updates").

use super::update::UpdateError;
use std::collections::{BTreeMap, HashSet};

/// The tokenizer's centroids: `[L, K, D]`, row-major, as stored in the model file
/// (`catalog.codebooks`).
#[derive(Debug, Clone, PartialEq)]
pub struct Codebooks {
    levels: usize,
    codes: usize,
    dim: usize,
    /// Widened once to f64: the tokenizer computes in float64.
    data: Vec<f64>,
}

impl Codebooks {
    /// `data` is `[levels, codes, dim]`; every value must be finite.
    pub fn new(levels: usize, codes: usize, dim: usize, data: &[f32]) -> Result<Self, String> {
        let want = levels
            .checked_mul(codes)
            .and_then(|v| v.checked_mul(dim))
            .ok_or("codebook shape overflows")?;
        if levels == 0 || codes == 0 || dim == 0 || data.len() != want {
            return Err(format!(
                "codebooks hold {} values, expected {levels} levels x {codes} codes x {dim} dims",
                data.len()
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(format!("codebook value {i} is not finite"));
        }
        Ok(Codebooks {
            levels,
            codes,
            dim,
            data: data.iter().map(|&v| v as f64).collect(),
        })
    }

    pub fn levels(&self) -> usize {
        self.levels
    }
    pub fn codes(&self) -> usize {
        self.codes
    }
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The values as stored (f32), `[L, K, D]`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    fn centroid(&self, level: usize, code: usize) -> &[f64] {
        let s = (level * self.codes + code) * self.dim;
        &self.data[s..s + self.dim]
    }

    /// Codes of `level` ordered by squared distance to `r`, nearest first, ties to the
    /// lower code. The distance is `|r|² − 2 r·c + |c|²`, the tokenizer's formula, so
    /// near ties round the same way.
    fn order(&self, level: usize, r: &[f64]) -> Vec<(f64, u32)> {
        let rr: f64 = r.iter().map(|v| v * v).sum();
        let mut d: Vec<(f64, u32)> = (0..self.codes)
            .map(|c| {
                let cent = self.centroid(level, c);
                let (mut dot, mut cc) = (0.0, 0.0);
                for (a, b) in r.iter().zip(cent) {
                    dot += a * b;
                    cc += b * b;
                }
                (rr - 2.0 * dot + cc, c as u32)
            })
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        d
    }
}

/// One embedding's nearest-centroid codes and the residual entering each level.
struct Raw {
    sid: Vec<u32>,
    /// `[L][D]`: `inputs[l]` is the residual level `l` clustered.
    inputs: Vec<Vec<f64>>,
    /// Squared distance of the last residual to its centroid (who keeps a shared SID).
    err: f64,
}

fn raw(cb: &Codebooks, emb: &[f32]) -> Raw {
    let mut r: Vec<f64> = emb.iter().map(|&v| v as f64).collect();
    let mut sid = Vec::with_capacity(cb.levels);
    let mut inputs = Vec::with_capacity(cb.levels);
    let mut err = 0.0;
    for l in 0..cb.levels {
        let (d, c) = cb.order(l, &r)[0];
        sid.push(c);
        inputs.push(r.clone());
        err = d;
        for (v, cv) in r.iter_mut().zip(cb.centroid(l, c as usize)) {
            *v -= cv;
        }
    }
    Raw { sid, inputs, err }
}

/// SIDs for new items (`(id, embedding)`, embeddings already checked for width and
/// finiteness). `taken(sid)` says whether the catalog (or an explicit SID of the same
/// update) holds a SID. Items that share a nearest-centroid SID are ordered by their
/// last-level distance, then by their order in the update; the first keeps it unless
/// the catalog already holds it; every other one moves its last code to the nearest
/// centroid whose SID is free, and if that prefix is full, its last two codes (level
/// L-2 nearest first, then level L-1), exactly as `resolve_collisions` does.
pub fn assign(
    cb: &Codebooks,
    items: &[(u64, &[f32])],
    taken: &dyn Fn(&[u32]) -> bool,
) -> Result<Vec<Vec<u32>>, UpdateError> {
    let raws: Vec<Raw> = items.iter().map(|(_, e)| raw(cb, e)).collect();
    let mut groups: BTreeMap<&[u32], Vec<usize>> = BTreeMap::new();
    for (i, r) in raws.iter().enumerate() {
        groups.entry(&r.sid).or_default().push(i);
    }
    // As in the tokenizer, a moved item never lands on another new item's own SID.
    let mut new_taken: HashSet<Vec<u32>> = groups.keys().map(|s| s.to_vec()).collect();
    let mut out: Vec<Vec<u32>> = raws.iter().map(|r| r.sid.clone()).collect();
    let last = cb.levels - 1;
    for (sid, mut members) in groups {
        members.sort_by(|&a, &b| raws[a].err.total_cmp(&raws[b].err).then(a.cmp(&b)));
        let skip = usize::from(!taken(sid));
        for &i in &members[skip..] {
            let free = |cand: &[u32]| !taken(cand) && !new_taken.contains(cand);
            let mut cand = sid.to_vec();
            let mut found = None;
            for (_, c) in cb.order(last, &raws[i].inputs[last]) {
                cand[last] = c;
                if free(&cand) {
                    found = Some(cand.clone());
                    break;
                }
            }
            if found.is_none() && last > 0 {
                let prev = &raws[i].inputs[last - 1];
                'outer: for (_, c2) in cb.order(last - 1, prev) {
                    let r_last: Vec<f64> = prev
                        .iter()
                        .zip(cb.centroid(last - 1, c2 as usize))
                        .map(|(a, b)| a - b)
                        .collect();
                    for (_, c) in cb.order(last, &r_last) {
                        cand[last - 1] = c2;
                        cand[last] = c;
                        if free(&cand) {
                            found = Some(cand.clone());
                            break 'outer;
                        }
                    }
                }
            }
            let Some(s) = found else {
                return Err(UpdateError::NoFreeSid {
                    id: items[i].0,
                    sid: sid.to_vec(),
                });
            };
            new_taken.insert(s.clone());
            out[i] = s;
        }
    }
    Ok(out)
}
