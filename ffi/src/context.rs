//! The context: one per thread, runs requests on a shared model and holds their results.

use crate::guard;
use crate::model::onerec_model;
use crate::request::onerec_request;
use crate::status::{onerec_status, FfiError, Phase};
use onerec_engine::{Engine, Response, RunOptions};
use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

/// A function the library calls between decoder steps of onerec_recommend() on the
/// context it is set on; returning true stops the call, which then returns
/// ONEREC_STATUS_CANCELLED. It runs on the thread that called onerec_recommend(); to cancel
/// from another thread, have it read a flag that thread sets (an atomic). It must not call
/// back into the library.
pub type onerec_abort_callback = Option<unsafe extern "C" fn(user_data: *mut c_void) -> bool>;

/// The abort callback with its data, as the engine calls it.
#[derive(Clone, Copy)]
pub(crate) struct Abort {
    callback: unsafe extern "C" fn(*mut c_void) -> bool,
    user_data: *mut c_void,
}

// SAFETY: the callback runs only on the thread running onerec_recommend() on the context,
// which the host already allows to use `user_data` (header text).
unsafe impl Send for Abort {}
unsafe impl Sync for Abort {}

impl Abort {
    pub(crate) fn requested(&self) -> bool {
        unsafe { (self.callback)(self.user_data) }
    }
}

/// One request's outcome in the last batch.
type Outcome = Result<Answer, Failed>;

/// One request's answer as the context keeps it.
struct Answer {
    sessions: Vec<Stored>,
    /// The item list: (item id, score), best first.
    items: Vec<(u64, f32)>,
}

/// The answer options of a context (onerec_context_set_*), applied to every request.
#[derive(Debug, Clone, Copy, Default)]
struct AnswerOptions {
    rerank: bool,
    keep_permutations: bool,
    items: usize,
}

/// Why one request of a batch has no results.
struct Failed {
    status: onerec_status,
    message: CString,
}

/// Per-thread state for running requests on a model: holds the results of the last
/// onerec_recommend() call until the next one.
///
/// Thread safety: use a context from one thread at a time (one context per thread is the
/// intended pattern; many contexts may share one model). A context may move between
/// threads. Two threads calling onerec_recommend() on the same context at once get
/// ONEREC_STATUS_BUSY for one of them rather than corrupted results.
pub struct onerec_context {
    engine: Arc<Engine>,
    results: Mutex<Vec<Outcome>>,
    abort: Mutex<Option<Abort>>,
    answer: Mutex<AnswerOptions>,
}

/// A session as the context keeps it: SIDs flattened so C can read them through one pointer.
struct Stored {
    score: f32,
    items: Vec<u64>,
    sids: Vec<u32>,
    reward: Option<f32>,
    signals: Vec<f32>,
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
    fn lock(&self) -> MutexGuard<'_, Vec<Outcome>> {
        // The results are replaced whole on every call, so a panic mid-call leaves
        // nothing half-updated that a later reader could trust.
        self.results.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn store(r: Response) -> Answer {
    Answer {
        sessions: r
            .sessions
            .into_iter()
            .map(|s| Stored {
                score: s.score,
                items: s.items,
                sids: s.sids.into_iter().flatten().collect(),
                reward: s.reward,
                signals: s.signals,
            })
            .collect(),
        items: r.items.into_iter().map(|i| (i.item, i.score)).collect(),
    }
}

/// The sessions of request `request`, or its own failure as this call's error.
fn sessions_of(results: &[Outcome], request: usize) -> Result<&[Stored], FfiError> {
    answer_of(results, request).map(|a| a.sessions.as_slice())
}

/// The answer of request `request`, or its own failure as this call's error.
fn answer_of(results: &[Outcome], request: usize) -> Result<&Answer, FfiError> {
    match results.get(request) {
        None => Err(out_of_range("request", request, results.len())),
        Some(Ok(a)) => Ok(a),
        Some(Err(f)) => Err(FfiError::new(
            f.status,
            format!("request {request} failed: {}", f.message.to_string_lossy()),
        )),
    }
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
            abort: Mutex::new(None),
            answer: Mutex::new(AnswerOptions::default()),
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
/// Each request succeeds or fails on its own: a request with an unknown history item or
/// a bad beam fails alone and the others are still served. The call returns
/// ONEREC_STATUS_OK when every request succeeded; otherwise the status of the first
/// request that failed (ONEREC_STATUS_UNKNOWN_ITEM, ONEREC_STATUS_INVALID_ARGUMENT,
/// ONEREC_STATUS_NON_FINITE; the message names the request), and the context still holds
/// the results of the requests that succeeded: read each one's outcome with
/// onerec_results_status(). (ABI version 1 kept no results after any failure.)
/// Failures of the whole call leave no results: ONEREC_STATUS_NULL_POINTER,
/// ONEREC_STATUS_BUSY, ONEREC_STATUS_CANCELLED (the abort callback stopped it),
/// ONEREC_STATUS_BUDGET_EXCEEDED (the batch needs more memory than the budget),
/// ONEREC_STATUS_OUT_OF_MEMORY, ONEREC_STATUS_BACKEND_FAILED.
/// Any call invalidates the pointers read from this context's previous results. A request
/// may get fewer sessions than it asked for, even none, when its exclusions leave fewer
/// possible sessions.
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
        let opts = *ctx.answer.lock().unwrap_or_else(PoisonError::into_inner);
        let requests = requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = unsafe { r.to_engine(i) }?;
                r.rerank = opts.rerank;
                r.keep_permutations = opts.keep_permutations;
                r.items = opts.items;
                Ok(r)
            })
            .collect::<Result<Vec<_>, FfiError>>()?;
        let abort = *ctx.abort.lock().unwrap_or_else(PoisonError::into_inner);
        let check = move || abort.is_some_and(|a| a.requested());
        let mut run = RunOptions::default();
        if abort.is_some() {
            run = run.abort(&check);
        }
        let outcomes = ctx
            .engine
            .recommend_each_with(&requests, &run)
            .map_err(|e| FfiError::engine(e, Phase::Run))?;
        let mut first_failure = None;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            results.push(match outcome {
                Ok(r) => Ok(store(r)),
                Err(e) => {
                    let e = FfiError::engine(e, Phase::Run);
                    if first_failure.is_none() {
                        first_failure = Some(FfiError::new(
                            e.status,
                            format!("request {i}: {}", e.message),
                        ));
                    }
                    Err(Failed {
                        status: e.status,
                        message: CString::new(e.message.replace('\0', " ")).unwrap_or_default(),
                    })
                }
            });
        }
        first_failure.map_or(Ok(()), Err)
    })
}

/// Sets (or, with NULL, removes) the abort callback of `ctx`: onerec_recommend() on this
/// context calls it between decoder steps and stops with ONEREC_STATUS_CANCELLED when it
/// returns true. The context then serves the next call normally.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Ownership: `user_data` stays the caller's and must stay valid while the callback is set.
/// Thread safety: not while another thread runs onerec_recommend() on `ctx` (the change
/// applies from the next call).
#[no_mangle]
pub unsafe extern "C" fn onerec_context_set_abort_callback(
    ctx: *mut onerec_context,
    callback: onerec_abort_callback,
    user_data: *mut c_void,
) -> onerec_status {
    guard::status(|| {
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        *ctx.abort.lock().unwrap_or_else(PoisonError::into_inner) =
            callback.map(|callback| Abort {
                callback,
                user_data,
            });
        Ok(())
    })
}

/// Sets whether onerec_recommend() on `ctx` reranks every request's sessions by the
/// model's reward model (docs/REWARD_MODEL.md): every surviving beam is scored and the
/// sessions come best reward first, each with its reward
/// (onerec_results_session_reward()). Default false. A request on a model without a
/// reward model (onerec_model_n_reward_signals() gives 0) then fails with
/// ONEREC_STATUS_INVALID_ARGUMENT.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: not while another thread runs onerec_recommend() on `ctx` (the change
/// applies from the next call).
#[no_mangle]
pub unsafe extern "C" fn onerec_context_set_rerank(
    ctx: *mut onerec_context,
    rerank: bool,
) -> onerec_status {
    set_answer(ctx, |o| o.rerank = rerank)
}

/// Sets whether onerec_recommend() on `ctx` returns sessions that hold the same set of
/// items as a better session of the same request. Default false: such a permutation is
/// dropped and the next session takes its place.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: as onerec_context_set_rerank().
#[no_mangle]
pub unsafe extern "C" fn onerec_context_set_keep_permutations(
    ctx: *mut onerec_context,
    keep: bool,
) -> onerec_status {
    set_answer(ctx, |o| o.keep_permutations = keep)
}

/// Sets how many single items onerec_recommend() on `ctx` ranks beside the sessions of
/// every request (the item list: the best first items of the session search; read with
/// onerec_results_n_items() and onerec_results_item()). 0 (the default) asks for none;
/// a request whose beam is smaller fails with ONEREC_STATUS_INVALID_ARGUMENT.
///
/// Returns ONEREC_STATUS_OK or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: as onerec_context_set_rerank().
#[no_mangle]
pub unsafe extern "C" fn onerec_context_set_items(
    ctx: *mut onerec_context,
    items: usize,
) -> onerec_status {
    set_answer(ctx, |o| o.items = items)
}

unsafe fn set_answer(
    ctx: *mut onerec_context,
    f: impl FnOnce(&mut AnswerOptions),
) -> onerec_status {
    guard::status(|| {
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        f(&mut ctx.answer.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(())
    })
}

/// Writes the outcome of request `request` of the last onerec_recommend() to
/// `*out_status`: ONEREC_STATUS_OK when it has results, else why it failed (its message
/// from onerec_results_error()).
///
/// Returns ONEREC_STATUS_OK (the outcome was written), ONEREC_STATUS_OUT_OF_RANGE (no
/// such request in the last batch, or the whole call failed) or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_status(
    ctx: *const onerec_context,
    request: usize,
    out_status: *mut onerec_status,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_status, "out_status")?;
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let results = ctx.lock();
        let status = match results.get(request) {
            None => return Err(out_of_range("request", request, results.len())),
            Some(Ok(_)) => onerec_status::Ok,
            Some(Err(f)) => f.status,
        };
        unsafe { out.write(status) };
        Ok(())
    })
}

/// Returns the message of request `request` of the last onerec_recommend(): "" when it
/// succeeded, why it failed otherwise; NULL when `ctx` is NULL or there is no such request.
///
/// Ownership: the string belongs to `ctx` and stays valid until its next
/// onerec_recommend() or onerec_context_free(); never free it.
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_error(
    ctx: *const onerec_context,
    request: usize,
) -> *const c_char {
    guard::value(std::ptr::null(), || {
        let Ok(ctx) = (unsafe { guard::reference(ctx, "ctx") }) else {
            return std::ptr::null();
        };
        let results = ctx.lock();
        match results.get(request) {
            None => std::ptr::null(),
            Some(Ok(_)) => c"".as_ptr(),
            // The CString's heap buffer stays put until the results are replaced.
            Some(Err(f)) => f.message.as_ptr(),
        }
    })
}

/// Writes the number of sessions that request `request` of the last onerec_recommend()
/// got (0..=its `results`) to `*out_n`.
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_OUT_OF_RANGE (no such request in the last
/// batch), the request's own status when it failed (see onerec_results_status()) or
/// ONEREC_STATUS_NULL_POINTER.
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
        let sessions = sessions_of(&results, request)?;
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
        let sessions = sessions_of(&results, request)?;
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

/// Writes the reward of session `session` of request `request` of the last
/// onerec_recommend() (run with onerec_context_set_rerank(ctx, true)) to `*out_reward`,
/// and its per-signal rewards (in the order of the config's `reward.signals`) to
/// `signals[0 .. n]`, n = onerec_model_n_reward_signals(); writes n to `*out_n_signals`.
///
/// Arguments: `signals` holds `signals_len` floats; it may be NULL when `signals_len`
/// is 0 (only the reward is wanted).
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_BUFFER_TOO_SMALL (0 < signals_len < n;
/// nothing is written), ONEREC_STATUS_OUT_OF_RANGE (no such session, or the request was
/// not reranked) or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_session_reward(
    ctx: *const onerec_context,
    request: usize,
    session: usize,
    out_reward: *mut f32,
    signals: *mut f32,
    signals_len: usize,
    out_n_signals: *mut usize,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_reward, "out_reward")?;
        let out_n = guard::out(out_n_signals, "out_n_signals")?;
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let signals = unsafe { guard::array_mut(signals, signals_len, "signals") }?;
        let results = ctx.lock();
        let sessions = sessions_of(&results, request)?;
        let s = sessions
            .get(session)
            .ok_or_else(|| out_of_range("session", session, sessions.len()))?;
        let reward = s.reward.ok_or_else(|| {
            FfiError::new(
                onerec_status::OutOfRange,
                format!("request {request} was not reranked: its sessions have no reward"),
            )
        })?;
        if !signals.is_empty() && signals.len() < s.signals.len() {
            return Err(FfiError::new(
                onerec_status::BufferTooSmall,
                format!(
                    "{} signals; the buffer holds {}",
                    s.signals.len(),
                    signals.len()
                ),
            ));
        }
        if !signals.is_empty() {
            signals[..s.signals.len()].copy_from_slice(&s.signals);
        }
        unsafe {
            out.write(reward);
            out_n.write(s.signals.len());
        }
        Ok(())
    })
}

/// Writes the length of the item list of request `request` of the last
/// onerec_recommend() (0..=onerec_context_set_items(); 0 when none was asked for) to
/// `*out_n`.
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_OUT_OF_RANGE, the request's own status when
/// it failed, or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_n_items(
    ctx: *const onerec_context,
    request: usize,
    out_n: *mut usize,
) -> onerec_status {
    guard::status(|| {
        let out = guard::out(out_n, "out_n")?;
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let results = ctx.lock();
        let n = answer_of(&results, request)?.items.len();
        unsafe { out.write(n) };
        Ok(())
    })
}

/// Writes item `index` (0 = best) of the item list of request `request` of the last
/// onerec_recommend(): its id to `*out_item` and its score (the sum of the
/// log-probabilities of its codes as the first item of a session) to `*out_score`.
///
/// Returns ONEREC_STATUS_OK, ONEREC_STATUS_OUT_OF_RANGE or ONEREC_STATUS_NULL_POINTER.
/// Thread safety: not while another thread uses `ctx`.
#[no_mangle]
pub unsafe extern "C" fn onerec_results_item(
    ctx: *const onerec_context,
    request: usize,
    index: usize,
    out_item: *mut u64,
    out_score: *mut f32,
) -> onerec_status {
    guard::status(|| {
        let out_item = guard::out(out_item, "out_item")?;
        let out_score = guard::out(out_score, "out_score")?;
        let ctx = unsafe { guard::reference(ctx, "ctx") }?;
        let results = ctx.lock();
        let items = &answer_of(&results, request)?.items;
        let &(item, score) = items
            .get(index)
            .ok_or_else(|| out_of_range("item", index, items.len()))?;
        unsafe {
            out_item.write(item);
            out_score.write(score);
        }
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
        let sessions = sessions_of(&results, request)?;
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
