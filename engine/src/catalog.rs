//! The item catalog: item ids, their semantic IDs, and the lookup between them.

pub mod file;
pub mod model_out;
pub mod sid_assign;
pub mod snapshot;
pub mod update;

pub use sid_assign::Codebooks;
pub use snapshot::{CatalogContents, CatalogSnapshot};
pub use update::{CatalogUpdate, NewItem, SidSource, UpdateError};

use crate::error::{Error, Result};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Catalog {
    levels: usize,
    /// `K`: codes are in `[0, K)`.
    codebook: usize,
    item_ids: Vec<u64>,
    /// `[N, L]` codes, row-major.
    sids: Vec<u32>,
    index: HashMap<u64, u32>,
}

impl Catalog {
    /// Validates ids and codes: codes in `[0, K)`, unique item ids, unique SIDs.
    pub fn new(item_ids: Vec<u64>, sids: Vec<i64>, levels: usize, codebook: usize) -> Result<Self> {
        let n = item_ids.len();
        if n == 0 {
            return Err(Error::Catalog("the catalog holds no items".into()));
        }
        if n > u32::MAX as usize / 2 {
            return Err(Error::Catalog(format!(
                "{n} items is more than this engine supports"
            )));
        }
        if sids.len() != n * levels {
            return Err(Error::Catalog(format!(
                "`catalog.sids` holds {} codes, expected {n} items x {levels} levels",
                sids.len()
            )));
        }
        let mut codes = Vec::with_capacity(sids.len());
        for (i, &c) in sids.iter().enumerate() {
            if c < 0 || c as u64 >= codebook as u64 {
                return Err(Error::Catalog(format!(
                    "item {} has code {c} at level {}, outside [0, {codebook})",
                    item_ids[i / levels],
                    i % levels
                )));
            }
            codes.push(c as u32);
        }
        let mut index = HashMap::with_capacity(n);
        for (i, &id) in item_ids.iter().enumerate() {
            if let Some(prev) = index.insert(id, i as u32) {
                return Err(Error::Catalog(format!(
                    "item id {id} appears twice (rows {prev} and {i})"
                )));
            }
        }
        let cat = Catalog {
            levels,
            codebook,
            item_ids,
            sids: codes,
            index,
        };
        cat.check_unique_sids()?;
        Ok(cat)
    }

    fn check_unique_sids(&self) -> Result<()> {
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.sid(a as usize).cmp(self.sid(b as usize)));
        let mut clashes = Vec::new();
        for w in order.windows(2) {
            if self.sid(w[0] as usize) == self.sid(w[1] as usize) {
                clashes.push(format!(
                    "items {} and {} share SID {:?}",
                    self.item_ids[w[0] as usize],
                    self.item_ids[w[1] as usize],
                    self.sid(w[0] as usize)
                ));
            }
        }
        if clashes.is_empty() {
            return Ok(());
        }
        let more = if clashes.len() > 5 {
            format!(" (and {} more)", clashes.len() - 5)
        } else {
            String::new()
        };
        clashes.truncate(5);
        Err(Error::Catalog(format!(
            "duplicate semantic IDs: {}{more}",
            clashes.join("; ")
        )))
    }

    pub fn len(&self) -> usize {
        self.item_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.item_ids.is_empty()
    }

    pub fn levels(&self) -> usize {
        self.levels
    }

    pub fn codebook_size(&self) -> usize {
        self.codebook
    }

    pub fn item_id(&self, index: usize) -> u64 {
        self.item_ids[index]
    }

    pub fn item_ids(&self) -> &[u64] {
        &self.item_ids
    }

    pub fn sid(&self, index: usize) -> &[u32] {
        &self.sids[index * self.levels..(index + 1) * self.levels]
    }

    /// Row index of an item id.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.index.get(&id).map(|&i| i as usize)
    }

    /// Row indices for `ids`, or an error naming every unknown id.
    pub fn resolve(&self, ids: &[u64]) -> Result<Vec<usize>> {
        let mut unknown = Vec::new();
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            match self.index_of(id) {
                Some(i) => out.push(i),
                None => unknown.push(id),
            }
        }
        if unknown.is_empty() {
            return Ok(out);
        }
        Err(Error::UnknownItems { ids: unknown })
    }
}
