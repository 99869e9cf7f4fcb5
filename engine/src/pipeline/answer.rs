//! The answer stage: from one request's beams in their final order, the distinct-session
//! rule (docs/DECISIONS.md "Answers"), the cut to `results`, and the item list; catalog
//! rows become ids and SIDs.

use super::Searched;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::generate::{ItemScore, Response, Session, UserState};
use std::collections::HashSet;

/// One request's answer. A catalog row outside the catalog is a broken invariant of the
/// search (the whole call fails: `Internal`); a non-finite score or reward fails only
/// this request (`NonFinite`).
pub(crate) fn run(
    cat: &Catalog,
    catalog_version: u64,
    u: &UserState,
    s: Searched,
) -> Result<Result<Response>> {
    let check = |i: u32| -> Result<usize> {
        let i = i as usize;
        if i >= cat.len() {
            return Err(Error::internal(format!(
                "the beam search produced catalog row {i} of {} (request {})",
                cat.len(),
                u.index
            )));
        }
        Ok(i)
    };
    let picked = pick(&s, u.results, u.keep_permutations);
    let mut sessions = Vec::with_capacity(picked.len());
    for b in picked.into_iter().map(|i| &s.beams[i]) {
        let mut items = Vec::with_capacity(b.rows.len());
        let mut sids = Vec::with_capacity(b.rows.len());
        for &i in &b.rows {
            let i = check(i)?;
            items.push(cat.item_id(i));
            sids.push(cat.sid(i).to_vec());
        }
        sessions.push(Session {
            score: b.score,
            items,
            sids,
            reward: b.reward.as_ref().map(|r| r.reward),
            signals: b
                .reward
                .as_ref()
                .map(|r| r.signals.clone())
                .unwrap_or_default(),
        });
    }
    let mut items = Vec::with_capacity(s.first_items.len());
    for &(row, score) in &s.first_items {
        let i = check(row)?;
        items.push(ItemScore {
            item: cat.item_id(i),
            sid: cat.sid(i).to_vec(),
            score,
        });
    }
    let scores = s.beams.iter().map(|b| b.score);
    let rewards = s
        .beams
        .iter()
        .filter_map(|b| b.reward.as_ref())
        .flat_map(|r| std::iter::once(r.reward).chain(r.signals.iter().copied()));
    let non_finite = |what: &str, v: Option<f32>| {
        v.map(|value| Error::NonFinite {
            what: what.into(),
            value,
        })
    };
    if let Some(e) = non_finite(
        "session score",
        scores
            .chain(s.first_items.iter().map(|f| f.1))
            .find(|v| !v.is_finite()),
    )
    .or_else(|| non_finite("session reward", rewards.clone().find(|v| !v.is_finite())))
    {
        return Ok(Err(e));
    }
    Ok(Ok(Response {
        sessions,
        items,
        final_scores: s.final_scores,
        catalog_version,
    }))
}

/// Indices of the beams answered: walking the beams in order, a beam whose set of items
/// equals an earlier answered one's is skipped (unless `keep`), until `results`.
pub fn pick(s: &Searched, results: usize, keep: bool) -> Vec<usize> {
    let mut seen: HashSet<Vec<u32>> = HashSet::new();
    let mut out = Vec::with_capacity(results.min(s.beams.len()));
    for (i, b) in s.beams.iter().enumerate() {
        if out.len() == results {
            break;
        }
        let mut set = b.rows.clone();
        set.sort_unstable();
        if seen.insert(set) || keep {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Beam;
    use super::*;

    fn user(results: usize, keep: bool) -> UserState {
        UserState {
            index: 0,
            beam: 4,
            results,
            history: vec![0],
            excluded: vec![],
            rerank: false,
            keep_permutations: keep,
            items: 0,
        }
    }

    fn catalog() -> Catalog {
        Catalog::new(vec![10, 20, 30], vec![0, 1, 1, 0, 1, 1], 2, 2).unwrap()
    }

    fn searched(beams: &[(f32, &[u32])]) -> Searched {
        Searched {
            beams: beams
                .iter()
                .map(|&(score, rows)| Beam {
                    score,
                    rows: rows.to_vec(),
                    reward: None,
                })
                .collect(),
            first_items: vec![],
            final_scores: beams.iter().map(|b| b.0).collect(),
        }
    }

    /// Issue 11 item 1: the "no item" sentinel (or any row past the catalog) coming out of
    /// a backend is an internal error, never an index.
    #[test]
    fn a_row_outside_the_catalog_is_an_internal_error() {
        let s = searched(&[(-1.0, &[1, u32::MAX])]);
        let e = run(&catalog(), 0, &user(2, false), s).unwrap_err();
        assert!(
            matches!(e, Error::Internal(ref m) if m.contains("4294967295")),
            "{e}"
        );
    }

    #[test]
    fn a_non_finite_score_fails_only_its_request() {
        let s = searched(&[(-1.0, &[0]), (f32::NAN, &[1])]);
        let r = run(&catalog(), 0, &user(2, false), s).unwrap();
        assert!(matches!(r, Err(Error::NonFinite { .. })), "{r:?}");
        let ok = searched(&[(-1.0, &[0]), (-2.0, &[1])]);
        let r = run(&catalog(), 0, &user(2, false), ok).unwrap().unwrap();
        assert_eq!(r.sessions[1].items, vec![20]);
    }

    /// A permutation of a better session is dropped and the next distinct beam takes its
    /// place; with `keep` the order is untouched.
    #[test]
    fn permutations_are_dropped_unless_kept() {
        let beams: &[(f32, &[u32])] = &[
            (-1.0, &[0, 1]),
            (-2.0, &[1, 0]),
            (-3.0, &[0, 2]),
            (-4.0, &[2, 0]),
            (-5.0, &[1, 2]),
        ];
        let s = searched(beams);
        assert_eq!(pick(&s, 3, false), vec![0, 2, 4]);
        assert_eq!(pick(&s, 3, true), vec![0, 1, 2]);
        assert_eq!(pick(&s, 5, false), vec![0, 2, 4]); // fewer distinct sets than asked
        let r = run(&catalog(), 0, &user(2, false), s).unwrap().unwrap();
        let got: Vec<Vec<u64>> = r.sessions.iter().map(|s| s.items.clone()).collect();
        assert_eq!(got, vec![vec![10, 20], vec![10, 30]]);
        assert_eq!(r.final_scores.len(), 5);
    }
}
