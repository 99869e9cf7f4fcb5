//! A model file with another catalog: every weight copied byte for byte from the source
//! model file, the catalog tensors written anew (temporary file renamed into place).

use super::snapshot::CatalogContents;
use crate::error::{Error, Result};
use crate::format::{FileWriter, TensorSpec, WriteError};
use crate::model_file::ModelFile;
use crate::schema;
use crate::tensor::DType;
use std::path::Path;

/// The catalog tensors this writes (or drops) instead of copying.
const CATALOG: [&str; 4] = [
    schema::CATALOG_ITEM_IDS,
    schema::CATALOG_SIDS,
    schema::CATALOG_REMOVED,
    schema::CATALOG_EMBEDDINGS,
];

fn write_err(e: WriteError) -> Error {
    match e {
        WriteError::Invalid(e) => e,
        WriteError::Io { path, source } => Error::Io { path, source },
    }
}

/// Writes `out`: the weights (and codebooks) of `src`, a OneRec model file, with the
/// catalog `c`. `catalog.embeddings` is kept only while the items are the same rows
/// (an added item may have none); `catalog.removed` is written only when an item is
/// removed. Returns the bytes written.
pub fn write_model(src: &ModelFile, c: &CatalogContents, out: &Path) -> Result<u64> {
    let integrity = src.integrity().ok_or_else(|| {
        Error::Catalog(format!(
            "{} is a checkpoint directory: write a catalog file, or quantize it into a model file first",
            src.source
        ))
    })?;
    let (cat, l) = (&c.catalog, c.catalog.levels());
    let n = cat.len();
    if l != src.config.n_levels || cat.codebook_size() != src.config.codebook_size {
        return Err(Error::Catalog(format!(
            "the catalog's SIDs have {l} levels of {} codes, the model {} of {}",
            cat.codebook_size(),
            src.config.n_levels,
            src.config.codebook_size
        )));
    }
    let keep_embeddings = src.catalog.item_ids() == cat.item_ids();
    let mut specs = Vec::new();
    let mut copied = Vec::new();
    for name in &src.names {
        let keep = !CATALOG.contains(&name.as_str())
            || (name == schema::CATALOG_EMBEDDINGS && keep_embeddings);
        if keep {
            let t = src.tensor(name)?;
            specs.push(TensorSpec {
                name: name.clone(),
                dtype: t.dtype,
                shape: t.shape.to_vec(),
            });
            copied.push(name.clone());
        }
    }
    let ids: Vec<u8> = cat
        .item_ids()
        .iter()
        .flat_map(|id| id.to_le_bytes())
        .collect();
    let sids: Vec<u8> = (0..n)
        .flat_map(|r| cat.sid(r).iter().flat_map(|&v| (v as i32).to_le_bytes()))
        .collect();
    let mut fresh = vec![
        (schema::CATALOG_ITEM_IDS, DType::I64, vec![n], ids),
        (schema::CATALOG_SIDS, DType::I32, vec![n, l], sids),
    ];
    if c.removed_flags().iter().any(|&r| r) {
        let removed = c
            .removed_flags()
            .iter()
            .flat_map(|&r| i32::from(r).to_le_bytes())
            .collect();
        fresh.push((schema::CATALOG_REMOVED, DType::I32, vec![n], removed));
    }
    for (name, dtype, shape, _) in &fresh {
        specs.push(TensorSpec {
            name: name.to_string(),
            dtype: *dtype,
            shape: shape.clone(),
        });
    }
    let mut w = FileWriter::create(out, &src.config, &specs, integrity.metadata.clone())
        .map_err(write_err)?;
    for name in &copied {
        w.write_tensor(name, src.tensor(name)?.bytes)
            .map_err(write_err)?;
    }
    for (name, _, _, bytes) in &fresh {
        w.write_tensor(name, bytes).map_err(write_err)?;
    }
    w.finish().map_err(write_err)
}
