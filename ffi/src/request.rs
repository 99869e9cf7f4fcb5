//! One user's request as C lays it out, and its conversion to the engine's.

use crate::guard;
use crate::status::FfiError;
use onerec_engine::Request;

/// One user's request. Get one from onerec_request_default_params() and set the history
/// (and whatever else you need), so that fields added later keep their defaults.
///
/// Ownership: the arrays stay the caller's; the library only reads them during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct onerec_request {
    /// Item ids of the user's history, oldest first; `n_history` of them (at least 1).
    /// Only the newest onerec_model_info.max_history items are encoded; all of them count
    /// for `exclude_history`.
    pub history: *const u64,
    pub n_history: usize,
    /// Item ids that must not be recommended; `n_exclude` of them (NULL when 0). Ids that
    /// are not in the catalog are ignored (they could never be recommended anyway).
    pub exclude: *const u64,
    pub n_exclude: usize,
    /// Beam width: 1..=onerec_model_info.max_beam. Default 16.
    pub beam: usize,
    /// Sessions to return, best first: 1..=beam. Fewer come back when exclusions leave
    /// fewer possible sessions. Default 5.
    pub results: usize,
    /// Also exclude every item of the history. Default false.
    pub exclude_history: bool,
}

/// Returns a request with no history or exclusions, beam 16, results 5 and
/// exclude_history false. Set `history` and `n_history` before using it.
///
/// Ownership: returned by value; nothing to free.
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn onerec_request_default_params() -> onerec_request {
    onerec_request {
        history: std::ptr::null(),
        n_history: 0,
        exclude: std::ptr::null(),
        n_exclude: 0,
        beam: 16,
        results: 5,
        exclude_history: false,
    }
}

impl onerec_request {
    /// Copies the request out of C memory; `index` names it in messages.
    pub(crate) unsafe fn to_engine(self, index: usize) -> Result<Request, FfiError> {
        let history = unsafe {
            guard::array(
                self.history,
                self.n_history,
                &format!("requests[{index}].history"),
            )
        }?;
        let exclude = unsafe {
            guard::array(
                self.exclude,
                self.n_exclude,
                &format!("requests[{index}].exclude"),
            )
        }?;
        Ok(Request::builder(history.to_vec())
            .beam(self.beam)
            .results(self.results)
            .exclude(exclude.to_vec())
            .exclude_history(self.exclude_history)
            .build())
    }
}
