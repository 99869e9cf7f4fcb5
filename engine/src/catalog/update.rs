//! A catalog update (add, remove, re-enable), validated as a whole before anything
//! changes: either every part of it applies, or the error names what is wrong and the
//! serving snapshot stays as it was.

use super::sid_assign;
use super::snapshot::CatalogContents;
use super::Catalog;
use std::collections::{HashMap, HashSet};

/// How a new item gets its semantic ID.
#[derive(Debug, Clone, PartialEq)]
pub enum SidSource {
    /// Given by the caller: `L` codes in `[0, K)`, not held by any catalog item.
    Sid(Vec<u32>),
    /// Assigned from the item's embedding with the model's codebooks (`sid_assign`).
    Embedding(Vec<f32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    pub id: u64,
    pub sid: SidSource,
}

/// One update. Ids must be distinct across the three lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogUpdate {
    /// Items the catalog does not know yet.
    pub add: Vec<NewItem>,
    /// Active items to stop recommending (they keep their SID).
    pub remove: Vec<u64>,
    /// Removed items to recommend again.
    pub enable: Vec<u64>,
}

impl CatalogUpdate {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.enable.is_empty()
    }
}

/// What is wrong with an update. Lists of ids are capped at 10 in the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    #[error("item id(s) {} appear more than once in the update", show(.ids))]
    DuplicateIds { ids: Vec<u64> },
    #[error("cannot {action} item id(s) {}: not in the catalog", show(.ids))]
    UnknownIds { action: &'static str, ids: Vec<u64> },
    #[error("cannot add item id(s) {}: already in the catalog (re-enable a removed item instead)", show(.ids))]
    AlreadyInCatalog { ids: Vec<u64> },
    #[error("cannot remove item id(s) {}: already removed", show(.ids))]
    AlreadyRemoved { ids: Vec<u64> },
    #[error("cannot re-enable item id(s) {}: not removed", show(.ids))]
    NotRemoved { ids: Vec<u64> },
    #[error("item {id}: bad SID {sid:?}: {reason}")]
    BadSid {
        id: u64,
        sid: Vec<u32>,
        reason: String,
    },
    #[error("item {id}: SID {sid:?} is already held by item {holder}")]
    SidTaken { id: u64, sid: Vec<u32>, holder: u64 },
    #[error("item {id}: the embedding has {got} values, the codebooks {want}")]
    EmbeddingWidth { id: u64, got: usize, want: usize },
    #[error("item {id}: embedding value {index} is not finite")]
    EmbeddingNotFinite { id: u64, index: usize },
    #[error("item {id}: the model file has no codebooks (`catalog.codebooks`); give a SID instead of an embedding")]
    NoCodebooks { id: u64 },
    #[error("item {id}: no free SID near {sid:?} (every last code under that prefix, and every last-two-code choice, is taken)")]
    NoFreeSid { id: u64, sid: Vec<u32> },
    #[error("the catalog would hold {items} items, more than {max}")]
    TooManyItems { items: usize, max: usize },
    #[error("the catalog would hold no active item")]
    NothingActive,
    #[error("the updated catalog is inconsistent: {0}")]
    Inconsistent(String),
}

fn show(ids: &[u64]) -> String {
    let mut s: Vec<String> = ids.iter().take(10).map(u64::to_string).collect();
    if ids.len() > 10 {
        s.push(format!("and {} more", ids.len() - 10));
    }
    s.join(", ")
}

/// The most items a catalog may hold (the engine indexes rows and trie nodes with u32).
pub const MAX_ITEMS: usize = (u32::MAX / 4) as usize;

/// Checks `update` against `cur` and returns the next contents; `cur` is untouched.
pub fn apply(
    cur: &CatalogContents,
    update: &CatalogUpdate,
) -> Result<CatalogContents, UpdateError> {
    let cat = &cur.catalog;
    let (levels, codes) = (cat.levels(), cat.codebook_size());
    let mut seen = HashSet::new();
    let dup: Vec<u64> = update
        .add
        .iter()
        .map(|a| a.id)
        .chain(update.remove.iter().copied())
        .chain(update.enable.iter().copied())
        .filter(|&id| !seen.insert(id))
        .collect();
    if !dup.is_empty() {
        return Err(UpdateError::DuplicateIds { ids: dup });
    }
    let rows = |ids: &[u64], action: &'static str| -> Result<Vec<usize>, UpdateError> {
        let unknown: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| cat.index_of(id).is_none())
            .collect();
        if !unknown.is_empty() {
            return Err(UpdateError::UnknownIds {
                action,
                ids: unknown,
            });
        }
        Ok(ids.iter().filter_map(|&id| cat.index_of(id)).collect())
    };
    let remove = rows(&update.remove, "remove")?;
    let enable = rows(&update.enable, "re-enable")?;
    let gone: Vec<u64> = remove
        .iter()
        .filter(|&&r| cur.is_removed(r))
        .map(|&r| cat.item_id(r))
        .collect();
    if !gone.is_empty() {
        return Err(UpdateError::AlreadyRemoved { ids: gone });
    }
    let live: Vec<u64> = enable
        .iter()
        .filter(|&&r| !cur.is_removed(r))
        .map(|&r| cat.item_id(r))
        .collect();
    if !live.is_empty() {
        return Err(UpdateError::NotRemoved { ids: live });
    }
    let known: Vec<u64> = update
        .add
        .iter()
        .map(|a| a.id)
        .filter(|&id| cat.index_of(id).is_some())
        .collect();
    if !known.is_empty() {
        return Err(UpdateError::AlreadyInCatalog { ids: known });
    }
    let total = cat.len() + update.add.len();
    if total > MAX_ITEMS {
        return Err(UpdateError::TooManyItems {
            items: total,
            max: MAX_ITEMS,
        });
    }

    // Explicit SIDs first: they are fixed, so embedding-assigned items move around them.
    let by_sid: HashMap<&[u32], u64> = (0..cat.len())
        .map(|r| (cat.sid(r), cat.item_id(r)))
        .collect();
    let holder = |sid: &[u32]| by_sid.get(sid).copied();
    let mut explicit: HashMap<Vec<u32>, u64> = HashMap::new();
    let mut embedded: Vec<(u64, &[f32])> = Vec::new();
    for a in &update.add {
        match &a.sid {
            SidSource::Sid(sid) => {
                let bad = |reason: String| UpdateError::BadSid {
                    id: a.id,
                    sid: sid.clone(),
                    reason,
                };
                if sid.len() != levels {
                    return Err(bad(format!(
                        "{} codes, the model has {levels} levels",
                        sid.len()
                    )));
                }
                if let Some(c) = sid.iter().find(|&&c| c as usize >= codes) {
                    return Err(bad(format!("code {c} is outside [0, {codes})")));
                }
                if let Some(h) = holder(sid).or_else(|| explicit.get(sid).copied()) {
                    return Err(UpdateError::SidTaken {
                        id: a.id,
                        sid: sid.clone(),
                        holder: h,
                    });
                }
                explicit.insert(sid.clone(), a.id);
            }
            SidSource::Embedding(e) => {
                let cb = cur
                    .codebooks
                    .as_ref()
                    .ok_or(UpdateError::NoCodebooks { id: a.id })?;
                if e.len() != cb.dim() {
                    return Err(UpdateError::EmbeddingWidth {
                        id: a.id,
                        got: e.len(),
                        want: cb.dim(),
                    });
                }
                if let Some(index) = e.iter().position(|v| !v.is_finite()) {
                    return Err(UpdateError::EmbeddingNotFinite { id: a.id, index });
                }
                embedded.push((a.id, e));
            }
        }
    }
    let mut assigned = HashMap::new();
    if let Some(cb) = &cur.codebooks {
        if !embedded.is_empty() {
            let taken = |s: &[u32]| holder(s).is_some() || explicit.contains_key(s);
            let sids = sid_assign::assign(cb, &embedded, &taken)?;
            assigned = embedded.iter().map(|(id, _)| *id).zip(sids).collect();
        }
    }

    let mut ids = cat.item_ids().to_vec();
    let mut sids: Vec<i64> = (0..cat.len())
        .flat_map(|r| cat.sid(r).iter().map(|&c| c as i64))
        .collect();
    let mut removed = cur.removed_flags().to_vec();
    for r in remove {
        removed[r] = true;
    }
    for r in enable {
        removed[r] = false;
    }
    for a in &update.add {
        let sid = match &a.sid {
            SidSource::Sid(s) => s,
            SidSource::Embedding(_) => &assigned[&a.id],
        };
        ids.push(a.id);
        sids.extend(sid.iter().map(|&c| c as i64));
        removed.push(false);
    }
    if removed.iter().all(|&r| r) {
        return Err(UpdateError::NothingActive);
    }
    // Checked again as a whole (unique ids and SIDs); a failure here would be an engine
    // bug, reported rather than served.
    let catalog = Catalog::new(ids, sids, levels, codes)
        .map_err(|e| UpdateError::Inconsistent(e.to_string()))?;
    CatalogContents::new(catalog, removed, cur.codebooks.clone())
        .map_err(|e| UpdateError::Inconsistent(e.to_string()))
}
