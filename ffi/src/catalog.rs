//! The live catalog from C: add, remove and re-enable items, or serve a catalog file,
//! while other threads keep recommending (each request finishes on the catalog it
//! started with).

use crate::guard;
use crate::model::{onerec_model, path_of};
use crate::status::{onerec_status, FfiError, Phase};
use onerec_engine::catalog::{file, CatalogContents, CatalogUpdate, NewItem, SidSource};
use onerec_engine::Error;
use std::ffi::{c_char, CStr};

/// A new item for onerec_model_update_catalog(): its id and exactly one of a semantic
/// ID (`sid`, `n_sid` = the model's n_levels codes) or an embedding (`embedding`,
/// `n_embedding` values, given a SID with the model's codebooks); the other pointer is
/// NULL with length 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct onerec_catalog_item {
    pub id: u64,
    pub sid: *const u32,
    pub n_sid: usize,
    pub embedding: *const f32,
    pub n_embedding: usize,
}

fn engine_err(e: Error) -> FfiError {
    match e {
        Error::CatalogUpdate(u) => FfiError::new(
            onerec_status::InvalidArgument,
            format!("catalog update refused: {u}"),
        ),
        e => FfiError::engine(e, Phase::Run),
    }
}

/// Applies one catalog update to `model`: adds `add` (n_add items), removes the
/// `remove` ids (they stay known to histories but are never recommended) and re-enables
/// the `enable` ids. The update is checked as a whole: on any error nothing changes.
/// On success writes the new catalog version (0 = the catalog the model loaded, +1 per
/// update) to `*out_version` when `out_version` is not NULL.
///
/// Arguments: each array may be NULL only when its length is 0.
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_INVALID_ARGUMENT (unknown or duplicate ids,
/// a bad or taken SID, an embedding of the wrong width, no codebooks in the model file:
/// onerec_last_error() names it), ONEREC_STATUS_NULL_POINTER, or
/// ONEREC_STATUS_BACKEND_FAILED (the new trie could not be uploaded).
/// Ownership: nothing is kept from the arguments.
/// Thread safety: thread-safe; updates from several threads apply one after another,
/// and requests running meanwhile are not disturbed.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_update_catalog(
    model: *const onerec_model,
    add: *const onerec_catalog_item,
    n_add: usize,
    remove: *const u64,
    n_remove: usize,
    enable: *const u64,
    n_enable: usize,
    out_version: *mut u64,
) -> onerec_status {
    guard::status(|| {
        let out = if out_version.is_null() {
            None
        } else {
            Some(guard::out(out_version, "out_version")?)
        };
        let model = unsafe { guard::reference(model, "model") }?;
        let items = unsafe { guard::array(add, n_add, "add") }?;
        let remove = unsafe { guard::array(remove, n_remove, "remove") }?;
        let enable = unsafe { guard::array(enable, n_enable, "enable") }?;
        let mut up = CatalogUpdate {
            add: Vec::with_capacity(items.len()),
            remove: remove.to_vec(),
            enable: enable.to_vec(),
        };
        for (i, it) in items.iter().enumerate() {
            let sid = match (it.n_sid, it.n_embedding) {
                (0, 0) | (1.., 1..) => {
                    return Err(FfiError::new(
                        onerec_status::InvalidArgument,
                        format!(
                            "add[{i}] (item {}): give exactly one of `sid` and `embedding`",
                            it.id
                        ),
                    ))
                }
                (n, 0) => SidSource::Sid(
                    unsafe { guard::array(it.sid, n, &format!("add[{i}].sid")) }?.to_vec(),
                ),
                (_, n) => SidSource::Embedding(
                    unsafe { guard::array(it.embedding, n, &format!("add[{i}].embedding")) }?
                        .to_vec(),
                ),
            };
            up.add.push(NewItem { id: it.id, sid });
        }
        let snap = model.engine.update_catalog(&up).map_err(engine_err)?;
        if let Some(out) = out {
            unsafe { out.write(snap.version()) };
        }
        Ok(())
    })
}

/// Serves the catalog file at `path` (written by `onerec catalog ... --write-catalog`)
/// from now on, in place of the current catalog; the model's codebooks stay. On error
/// nothing changes. Writes the new catalog version to `*out_version` when it is not NULL.
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_IO, ONEREC_STATUS_INVALID_MODEL (not a
/// catalog file, damaged, or SIDs of another shape than the model's),
/// ONEREC_STATUS_NULL_POINTER or ONEREC_STATUS_BACKEND_FAILED.
/// Thread safety: thread-safe, as onerec_model_update_catalog().
#[no_mangle]
pub unsafe extern "C" fn onerec_model_load_catalog(
    model: *const onerec_model,
    path: *const c_char,
    out_version: *mut u64,
) -> onerec_status {
    guard::status(|| {
        let out = if out_version.is_null() {
            None
        } else {
            Some(guard::out(out_version, "out_version")?)
        };
        let model = unsafe { guard::reference(model, "model") }?;
        if path.is_null() {
            return Err(guard::null("path"));
        }
        let path = path_of(unsafe { CStr::from_ptr(path) })?;
        let load = || -> Result<_, Error> {
            let (cat, removed) = file::read(&path)?;
            let codebooks = model.engine.catalog().contents().codebooks.clone();
            let contents = CatalogContents::new(cat, removed, codebooks)?;
            model.engine.replace_catalog(contents)
        };
        let snap = load().map_err(|e| FfiError::engine(e, Phase::Load))?;
        if let Some(out) = out {
            unsafe { out.write(snap.version()) };
        }
        Ok(())
    })
}
