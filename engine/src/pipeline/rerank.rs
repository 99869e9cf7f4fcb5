//! The rerank stage (docs/REWARD_MODEL.md "In the engine"): for each request that asks,
//! the reward model scores every surviving beam, and the beams are ordered by reward,
//! descending; ties go to the higher model score, then to the search's order.

use super::Searched;
use crate::backend::Backend;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::generate::UserState;
use crate::reward::{RewardInput, RewardModel};

/// Scores and reorders the beams of the requests that set `rerank` (all of them in one
/// batch of reward-model calls).
pub(crate) fn run<B: Backend>(
    rm: &RewardModel<B>,
    be: &B,
    cat: &Catalog,
    users: &[UserState],
    searched: &mut [Searched],
) -> Result<()> {
    let picked: Vec<usize> = (0..users.len())
        .filter(|&g| users[g].rerank && !searched[g].beams.is_empty())
        .collect();
    if picked.is_empty() {
        return Ok(());
    }
    let sessions: Vec<Vec<Vec<u32>>> = picked
        .iter()
        .map(|&g| searched[g].beams.iter().map(|b| b.rows.clone()).collect())
        .collect();
    let inputs: Vec<RewardInput<'_>> = picked
        .iter()
        .zip(&sessions)
        .map(|(&g, s)| RewardInput {
            history: &users[g].history,
            sessions: s,
        })
        .collect();
    let scored = rm.score(be, cat, &inputs)?;
    for (&g, rewards) in picked.iter().zip(scored) {
        let beams = &mut searched[g].beams;
        if rewards.len() != beams.len() {
            return Err(Error::internal("reward: a session lost its score"));
        }
        for (b, r) in beams.iter_mut().zip(rewards) {
            b.reward = Some(r);
        }
        order(beams);
    }
    Ok(())
}

/// Reward descending, then model score descending; the sort is stable, so the search's
/// order breaks the remaining ties (a non-finite reward fails its request in the answer).
pub fn order(beams: &mut [super::Beam]) {
    let key = |b: &super::Beam| b.reward.as_ref().map_or(f32::NEG_INFINITY, |r| r.reward);
    beams.sort_by(|a, b| {
        let (ra, rb) = (key(a), key(b));
        rb.total_cmp(&ra).then_with(|| b.score.total_cmp(&a.score))
    });
}
