//! One immutable state of the live catalog. A request takes an `Arc` of the current
//! snapshot when it starts and keeps it to its end; an update builds the next snapshot
//! off to the side (trie, and the backend's resident copy of it) and swaps one pointer.

use super::sid_assign::Codebooks;
use super::Catalog;
use crate::error::{Error, Result};
use crate::trie::Trie;
use std::any::Any;
use std::sync::Arc;

/// What a catalog holds on the host: every item the model knows (with its SID), which
/// of them are removed, and the tokenizer's codebooks when the model file has them.
/// Removed items keep their SID (a history may still name them, and no new item may
/// take it) until they are re-enabled.
#[derive(Debug, Clone)]
pub struct CatalogContents {
    pub catalog: Catalog,
    /// One flag per catalog row.
    removed: Vec<bool>,
    pub codebooks: Option<Arc<Codebooks>>,
}

impl CatalogContents {
    pub fn new(
        catalog: Catalog,
        removed: Vec<bool>,
        codebooks: Option<Arc<Codebooks>>,
    ) -> Result<Self> {
        if removed.len() != catalog.len() {
            return Err(Error::Catalog(format!(
                "{} removed flags for {} items",
                removed.len(),
                catalog.len()
            )));
        }
        if let Some(cb) = &codebooks {
            if cb.levels() != catalog.levels() {
                return Err(Error::Catalog(format!(
                    "codebooks have {} levels, the catalog's SIDs {}",
                    cb.levels(),
                    catalog.levels()
                )));
            }
        }
        Ok(CatalogContents {
            catalog,
            removed,
            codebooks,
        })
    }

    /// Every item active.
    pub fn all_active(catalog: Catalog, codebooks: Option<Arc<Codebooks>>) -> Result<Self> {
        let n = catalog.len();
        Self::new(catalog, vec![false; n], codebooks)
    }

    pub fn is_removed(&self, row: usize) -> bool {
        self.removed.get(row).copied().unwrap_or(true)
    }

    pub fn removed_flags(&self) -> &[bool] {
        &self.removed
    }

    /// Items a request may be recommended.
    pub fn active_len(&self) -> usize {
        self.removed.iter().filter(|r| !**r).count()
    }
}

/// The backend's resident trie, type-erased so the snapshot is not generic over the
/// backend; `Model::snapshot` makes it and `generate` takes it back by type.
pub type ResidentIndex = Box<dyn Any + Send + Sync>;

pub struct CatalogSnapshot {
    version: u64,
    contents: Arc<CatalogContents>,
    trie: Trie,
    /// Catalog rows of removed items: excluded from every request.
    removed_rows: Vec<usize>,
    resident: ResidentIndex,
}

impl std::fmt::Debug for CatalogSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogSnapshot")
            .field("version", &self.version)
            .field("items", &self.contents.catalog.len())
            .field("removed", &self.removed_rows.len())
            .finish()
    }
}

impl CatalogSnapshot {
    /// Builds the trie and, through `resident`, the backend's copy of it.
    pub fn build(
        contents: Arc<CatalogContents>,
        version: u64,
        resident: impl FnOnce(&Trie) -> Result<ResidentIndex>,
    ) -> Result<Self> {
        let trie = Trie::new(&contents.catalog);
        let resident = resident(&trie)?;
        let removed_rows = (0..contents.catalog.len())
            .filter(|&r| contents.is_removed(r))
            .collect();
        Ok(CatalogSnapshot {
            version,
            contents,
            trie,
            removed_rows,
            resident,
        })
    }

    /// Counts up from 0 (the catalog the engine loaded) with every swap.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn contents(&self) -> &Arc<CatalogContents> {
        &self.contents
    }

    pub fn catalog(&self) -> &Catalog {
        &self.contents.catalog
    }

    pub fn trie(&self) -> &Trie {
        &self.trie
    }

    pub fn removed_rows(&self) -> &[usize] {
        &self.removed_rows
    }

    /// Whether `id` is in the catalog and not removed: what a request may be recommended.
    pub fn is_active(&self, id: u64) -> bool {
        self.catalog()
            .index_of(id)
            .is_some_and(|r| !self.contents.is_removed(r))
    }

    /// The resident trie of backend index type `I`.
    pub fn resident<I: 'static>(&self) -> Result<&I> {
        self.resident
            .downcast_ref::<I>()
            .ok_or_else(|| Error::Backend {
                backend: "catalog".into(),
                msg: "this catalog snapshot was made for another backend".into(),
            })
    }
}
