//! Questions about a loaded model: its catalog and the memory it needs.

use crate::guard;
use crate::model::onerec_model;
use crate::status::{onerec_status, FfiError};

fn catalog(model: &onerec_model) -> &onerec_engine::catalog::Catalog {
    &model.engine.file().catalog
}

/// Writes whether item `item_id` is in the model's catalog (the only ids a history may
/// hold and a session may contain) to `*out_found`.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_has_item(
    model: *const onerec_model,
    item_id: u64,
    out_found: *mut bool,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_found, "out_found")?;
        let model = unsafe { guard::reference(model, "model") }?;
        unsafe { out.write(catalog(model).index_of(item_id).is_some()) };
        Ok(())
    })
}

/// Writes the catalog index (0..n_items) of item `item_id` to `*out_index`.
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_UNKNOWN_ITEM (not in the catalog) or
/// ONEREC_STATUS_NULL_POINTER.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_item_index(
    model: *const onerec_model,
    item_id: u64,
    out_index: *mut usize,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_index, "out_index")?;
        let model = unsafe { guard::reference(model, "model") }?;
        let index = catalog(model).index_of(item_id).ok_or_else(|| {
            FfiError::new(
                onerec_status::UnknownItem,
                format!("item id {item_id} is not in the model's catalog"),
            )
        })?;
        unsafe { out.write(index) };
        Ok(())
    })
}

/// Writes the item at catalog index `index` (0..onerec_model_info.n_items): its id to
/// `*out_item_id` and its semantic ID (n_levels codes) to `sid[0..n_levels]`.
///
/// Arguments: `sid` holds `sid_len` codes (at least onerec_model_info.n_levels); it may be
/// NULL with `sid_len` 0 when only the id is wanted.
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_OUT_OF_RANGE, ONEREC_STATUS_BUFFER_TOO_SMALL
/// (nothing written) or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_item_at(
    model: *const onerec_model,
    index: usize,
    out_item_id: *mut u64,
    sid: *mut u32,
    sid_len: usize,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_item_id, "out_item_id")?;
        let model = unsafe { guard::reference(model, "model") }?;
        let sid_out = unsafe { guard::array_mut(sid, sid_len, "sid") }?;
        let cat = catalog(model);
        if index >= cat.len() {
            return Err(FfiError::new(
                onerec_status::OutOfRange,
                format!(
                    "catalog index {index} is out of range: the catalog holds {} items",
                    cat.len()
                ),
            ));
        }
        let codes = cat.sid(index);
        if sid_len != 0 {
            if sid_out.len() < codes.len() {
                return Err(FfiError::new(
                    onerec_status::BufferTooSmall,
                    format!(
                        "`sid` holds {sid_len} codes; a semantic ID has {}",
                        codes.len()
                    ),
                ));
            }
            sid_out[..codes.len()].copy_from_slice(codes);
        }
        unsafe { out.write(cat.item_id(index)) };
        Ok(())
    })
}

/// Writes the bytes of the model's weights (the file, mapped or uploaded to the device)
/// to `*out_bytes`.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_memory(
    model: *const onerec_model,
    out_bytes: *mut u64,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_bytes, "out_bytes")?;
        let model = unsafe { guard::reference(model, "model") }?;
        unsafe { out.write(model.engine.memory_estimate(&[]).model) };
        Ok(())
    })
}

/// Writes the number of signals of the model's reward model (docs/REWARD_MODEL.md) to
/// `*out_n`: 0 when the model has none (it cannot rerank). Their names and weights are
/// the `reward` object of onerec_model_config_json().
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_model_n_reward_signals(
    model: *const onerec_model,
    out_n: *mut usize,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_n, "out_n")?;
        let model = unsafe { guard::reference(model, "model") }?;
        let n = model
            .engine
            .config()
            .reward
            .as_ref()
            .map_or(0, |r| r.signals.len());
        unsafe { out.write(n) };
        Ok(())
    })
}

/// Writes an estimate (on the high side) of the working memory one onerec_recommend() of
/// `n_requests` requests of beam `beam` and `history_len` history items each needs (KV
/// caches, activations, beam state) to `*out_bytes`. This is the figure compared with the
/// model's memory budget before a call allocates anything (ONEREC_STATUS_BUDGET_EXCEEDED).
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_INVALID_ARGUMENT (beam outside
/// 1..=max_beam, history_len 0, more requests than one call may hold) or
/// ONEREC_STATUS_NULL_POINTER.
/// Thread safety: thread-safe.
#[no_mangle]
pub unsafe extern "C" fn onerec_estimate_memory(
    model: *const onerec_model,
    n_requests: usize,
    beam: usize,
    history_len: usize,
    out_bytes: *mut u64,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_bytes, "out_bytes")?;
        let model = unsafe { guard::reference(model, "model") }?;
        if beam == 0 || beam > onerec_engine::MAX_BEAM {
            return Err(FfiError::new(
                onerec_status::InvalidArgument,
                format!("beam {beam} is outside 1..={}", onerec_engine::MAX_BEAM),
            ));
        }
        if history_len == 0 {
            return Err(FfiError::new(
                onerec_status::InvalidArgument,
                "history_len must be at least 1",
            ));
        }
        if n_requests > onerec_engine::MAX_BATCH_REQUESTS {
            return Err(FfiError::new(
                onerec_status::InvalidArgument,
                format!(
                    "{n_requests} requests is more than one call may hold ({})",
                    onerec_engine::MAX_BATCH_REQUESTS
                ),
            ));
        }
        let shape = onerec_engine::RequestShape {
            beam,
            history: history_len,
        };
        let shapes = vec![shape; n_requests];
        unsafe { out.write(model.engine.memory_estimate(&shapes).request()) };
        Ok(())
    })
}
