//! The context: one per thread, runs requests on a shared model and holds their results.

use crate::guard;
use crate::model::onerec_model;
use crate::request::onerec_request;
use crate::status::{onerec_status, FfiError, Phase};
use onerec_engine::{Engine, Response};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

/// Per-thread state for running requests on a model: holds the results of the last
/// onerec_recommend() call until the next one.
///
/// Thread safety: use a context from one thread at a time (one context per thread is the
/// intended pattern; many contexts may share one model). A context may move between
/// threads. Two threads calling onerec_recommend() on the same context at once get
/// ONEREC_STATUS_BUSY for one of them rather than corrupted results.
pub struct onerec_context {
    engine: Arc<Engine>,
    results: Mutex<Vec<Vec<Stored>>>,
}

/// A session as the context keeps it: SIDs flattened so C can read them through one pointer.
struct Stored {
    score: f32,
    items: Vec<u64>,
    sids: Vec<u32>,
}

/// One recommended session, read with onerec_results_session().
///
/// Ownership: `items` and `sids` point into the context; they stay valid until the next
/// onerec_recommend() on, or onerec_context_free() of, that context. Copy them to keep them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct onerec_session {
    /// Sum of the log-probabilities of the session's codes (higher is better; <= 0).
    pub score: f32,
    /// Number of items (the model's session_len).
    pub n_items: usize,
    /// `n_items` item ids, in the order the session presents them.
    pub items: *const u64,
    /// Codes per item (the model's n_levels).
    pub n_levels: usize,
    /// `n_items * n_levels` codes: item i's semantic ID is sids[i*n_levels .. (i+1)*n_levels].
    pub sids: *const u32,
}

impl onerec_context {
    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Stored>>> {
        // The results are replaced whole on every call, so a panic mid-call leaves
        // nothing half-updated that a later reader could trust.
        self.results.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn store(responses: Vec<Response>) -> Vec<Vec<Stored>> {
    responses
        .into_iter()
        .map(|r| {
            r.sessions
                .into_iter()
                .map(|s| Stored {
                    score: s.score,
                    items: s.items,
                    sids: s.sids.into_iter().flatten().collect(),
                })
                .collect()
        })
        .collect()
}

fn out_of_range(what: &str, index: usize, len: usize) -> FfiError {
    FfiError::new(
        onerec_status::OutOfRange,
        format!("{what} {index} is out of range: the context holds {len}"),
    )
}

/// Creates a context for running requests on `model` and writes it to `*out_ctx`.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Ownership: the caller owns `*out_ctx` and releases it with onerec_context_free(). The
/// context keeps the model's weights alive, so it may outlive the model handle.
/// Thread safety: thread-safe (any thread may create contexts from a shared model).
#[no_mangle]
pub unsafe extern "C" fn onerec_context_new(
    model: *const onerec_model,
    out_ctx: *mut *mut onerec_context,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_ctx, "out_ctx")?;
        let model = unsafe { guard::reference(model, "model") }?;
        let ctx = Box::new(onerec_context {
            engine: model.engine.clone(),
            results: Mutex::new(Vec::new()),
        });
        unsafe { out.write(Box::into_raw(ctx)) };
        Ok(())
    })
}

/// Releases a context and the results it holds. NULL is ignored.
///
/// Ownership: `ctx` must come from onerec_context_new() and must not be used or freed
/// again afterwards; pointers read from its results become invalid.
/// Thread safety: no other thread may use `ctx` during or after the call.
#[no_mangle]
pub unsafe extern "C" fn onerec_context_free(ctx: *mut onerec_context) {
    guard::value((), || {
        if !ctx.is_null() {
            drop(unsafe { Box::from_raw(ctx) });
        }
    })
}

/// Recommends sessions for a batch of `n_requests` requests (one per user, decoded
/// together: faster than one call per user), and keeps the results in `ctx`, request i's
/// at index i.
///
/// Returns ONEREC_STATUS_OK, or ONEREC_STATUS_INVALID_ARGUMENT (bad beam, results or empty
/// history; the message names the request), ONEREC_STATUS_UNKNOWN_ITEM (a history item
/// is not in the catalog),
/// ONEREC_STATUS_NULL_POINTER, ONEREC_STATUS_BUSY, ONEREC_STATUS_BACKEND_FAILED.
/// Any call invalidates the pointers read from this context's previous results; after a
/// failure the context holds no results. A request may get fewer sessions than it asked
/// for, even none, when its exclusions leave fewer possible sessions.
/// Ownership: `requests` and the arrays they point to stay the caller's and are only read
/// during the call.
/// Thread safety: one thread at a time per context; other contexts on the same model run
/// in parallel.
#[no_mangle]
pub unsafe extern "C" fn onerec_recommend(
    ctx: *mut onerec_context,
    requests: *const onerec_request,
    n_requests: usize,
) -> onerec_status {
    guard::status(|| {
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let mut results = match ctx.results.try_lock() {
            Ok(r) => r,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(FfiError::new(
                    onerec_status::Busy,
                    "another thread is running onerec_recommend() on this context",
                ))
            }
        };
        results.clear();
        let requests = unsafe { guard::array(requests, n_requests, "requests") }?;
        let requests = requests
            .iter()
            .enumerate()
            .map(|(i, r)| unsafe { r.to_engine(i) })
            .collect::<Result<Vec<_>, _>>()?;
        let responses = ctx
            .engine
            .recommend(&requests)
            .map_err(|e| FfiError::engine(e, Phase::Run))?;
        *results = store(responses);
        Ok(())
    })
}

/// Writes the number of sessions that request `request` of the last onerec_recommend()
/// got (0..=its `results`) to `*out_n`.
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_OUT_OF_RANGE (no such request in the last
/// batch) or ONEREC_STATUS_NULL_POINTER.
/// Ownership: nothing is allocated.
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_n_sessions(
    ctx: *const onerec_context,
    request: usize,
    out_n: *mut usize,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_n, "out_n")?;
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let results = ctx.lock();
        let sessions = results
            .get(request)
            .ok_or_else(|| out_of_range("request", request, results.len()))?;
        unsafe { out.write(sessions.len()) };
        Ok(())
    })
}

/// Writes session `session` (0 = best) of request `request` of the last
/// onerec_recommend() to `*out_session`.
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_OUT_OF_RANGE or ONEREC_STATUS_NULL_POINTER.
/// Ownership: the arrays `out_session` points to belong to `ctx` (see onerec_session).
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_session(
    ctx: *const onerec_context,
    request: usize,
    session: usize,
    out_session: *mut onerec_session,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_session, "out_session")?;
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let results = ctx.lock();
        let sessions = results
            .get(request)
            .ok_or_else(|| out_of_range("request", request, results.len()))?;
        let s = sessions
            .get(session)
            .ok_or_else(|| out_of_range("session", session, sessions.len()))?;
        let view = onerec_session {
            score: s.score,
            n_items: s.items.len(),
            items: s.items.as_ptr(),
            n_levels: s.sids.len().checked_div(s.items.len()).unwrap_or(0),
            sids: s.sids.as_ptr(),
        };
        unsafe { out.write(view) };
        Ok(())
    })
}

/// Copies every session of request `request` of the last onerec_recommend() into
/// caller-owned arrays: `scores[j]` is session j's score and
/// `items[j*session_len .. (j+1)*session_len]` its item ids, best session first. Writes
/// the number of sessions copied to `*out_n_sessions`.
///
/// Arguments: `items` holds `items_len` ids and `scores` holds `scores_len` floats; they
/// need room for n_sessions * session_len ids and n_sessions scores (request `results`
/// sessions is always enough). Either may be NULL when its length is 0.
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_BUFFER_TOO_SMALL (nothing is written),
/// ONEREC_STATUS_OUT_OF_RANGE or ONEREC_STATUS_NULL_POINTER.
/// Ownership: nothing is allocated; the arrays stay the caller's.
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_copy(
    ctx: *const onerec_context,
    request: usize,
    items: *mut u64,
    items_len: usize,
    scores: *mut f32,
    scores_len: usize,
    out_n_sessions: *mut usize,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_n_sessions, "out_n_sessions")?;
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let items = unsafe { guard::array_mut(items, items_len, "items") }?;
        let scores = unsafe { guard::array_mut(scores, scores_len, "scores") }?;
        let results = ctx.lock();
        let sessions = results
            .get(request)
            .ok_or_else(|| out_of_range("request", request, results.len()))?;
        let n_items: usize = sessions.iter().map(|s| s.items.len()).sum();
        if items.len() < n_items || scores.len() < sessions.len() {
            return Err(FfiError::new(
                onerec_status::BufferTooSmall,
                format!(
                    "request {request} has {} sessions of {n_items} items in all; the buffers hold {} items and {} scores",
                    sessions.len(),
                    items.len(),
                    scores.len()
                ),
            ));
        }
        let mut at = 0;
        for (j, s) in sessions.iter().enumerate() {
            scores[j] = s.score;
            items[at..at + s.items.len()].copy_from_slice(&s.items);
            at += s.items.len();
        }
        unsafe { out.write(sessions.len()) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        onerec_model_default_params, onerec_model_free, onerec_model_load, ONEREC_BACKEND_CPU,
    };
    use crate::request::onerec_request_default_params;
    use std::ffi::CString;

    /// A second caller on a busy context is refused, not let in to overwrite results.
    #[test]
    fn a_busy_context_says_so() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/dense_l3");
        let path = CString::new(dir).unwrap();
        let mut params = onerec_model_default_params();
        params.backend = ONEREC_BACKEND_CPU;
        let mut model = std::ptr::null_mut();
        let mut ctx = std::ptr::null_mut();
        unsafe {
            assert_eq!(
                onerec_model_load(path.as_ptr(), params, &mut model),
                onerec_status::Ok
            );
            assert_eq!(onerec_context_new(model, &mut ctx), onerec_status::Ok);
        }
        let first_item = unsafe { &*model }.engine.file().catalog.item_id(0);
        let history = [first_item];
        let mut req = onerec_request_default_params();
        req.history = history.as_ptr();
        req.n_history = 1;
        {
            // Stands in for another thread in the middle of onerec_recommend().
            let _held = unsafe { &*ctx }.results.lock().unwrap();
            assert_eq!(
                unsafe { onerec_recommend(ctx, &req, 1) },
                onerec_status::Busy
            );
        }
        assert_eq!(unsafe { onerec_recommend(ctx, &req, 1) }, onerec_status::Ok);
        unsafe {
            onerec_context_free(ctx);
            onerec_model_free(model);
        }
    }
}
