//! Status codes, the mapping from engine errors, and the per-thread last error message.

use onerec_engine::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

/// The result of every function that can fail. ONEREC_STATUS_OK (0) is success; on any
/// other value the function has written none of its out-parameters, and
/// onerec_last_error() on the same thread returns a message naming what is wrong.
/// New codes may be added at the end in later versions (with a new ABI version).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum onerec_status {
    /// Success.
    Ok = 0,
    /// An argument has a value the call cannot accept: an empty history, a beam of 0 or
    /// above the maximum, results outside 1..=beam, an unknown backend value, a path that
    /// is not valid UTF-8 (Windows), a misaligned array.
    InvalidArgument = 1,
    /// A pointer that must not be NULL was NULL (a handle, an out-parameter, or an array
    /// whose length is not 0).
    NullPointer = 2,
    /// The model path cannot be read (missing file or directory, permission denied).
    Io = 3,
    /// The model exists but is not a valid OneRec model (config, tensors or catalog).
    InvalidModel = 4,
    /// A history names an item id that is not in the model's catalog.
    UnknownItem = 5,
    /// The chosen backend is not in this build of the library or not usable on this
    /// device (no GPU adapter). ONEREC_BACKEND_CPU is always available.
    BackendUnavailable = 6,
    /// The backend failed while computing a recommendation (e.g. the GPU ran out of memory).
    BackendFailed = 7,
    /// An index (request or session) is beyond the results held by the context.
    OutOfRange = 8,
    /// A caller-owned buffer is too small for the data to copy into it.
    BufferTooSmall = 9,
    /// Another thread is running onerec_recommend() on the same context.
    Busy = 10,
    /// An engine error that this version of the C API does not classify; the message says
    /// what it is.
    Internal = 11,
    /// A bug in the library was caught before it could cross into C (a Rust panic).
    /// The handles involved are still safe to free.
    Panic = 12,
    /// The context's abort callback asked to stop; the call returned early and the context
    /// is ready for the next request. (ABI 2)
    Cancelled = 13,
    /// The batch would need more memory than the model's budget (onerec_model_params
    /// memory_budget, or the library's default cap); nothing was allocated. Split the batch
    /// or lower the beam. (ABI 2)
    BudgetExceeded = 14,
    /// An allocation failed; the library refused the work instead of aborting. (ABI 2)
    OutOfMemory = 15,
    /// A score came out as NaN or infinite (corrupted weights, or a numeric overflow); the
    /// request has no results. (ABI 2)
    NonFinite = 16,
}

impl onerec_status {
    fn name(self) -> &'static CStr {
        match self {
            onerec_status::Ok => c"ONEREC_STATUS_OK",
            onerec_status::InvalidArgument => c"ONEREC_STATUS_INVALID_ARGUMENT",
            onerec_status::NullPointer => c"ONEREC_STATUS_NULL_POINTER",
            onerec_status::Io => c"ONEREC_STATUS_IO",
            onerec_status::InvalidModel => c"ONEREC_STATUS_INVALID_MODEL",
            onerec_status::UnknownItem => c"ONEREC_STATUS_UNKNOWN_ITEM",
            onerec_status::BackendUnavailable => c"ONEREC_STATUS_BACKEND_UNAVAILABLE",
            onerec_status::BackendFailed => c"ONEREC_STATUS_BACKEND_FAILED",
            onerec_status::OutOfRange => c"ONEREC_STATUS_OUT_OF_RANGE",
            onerec_status::BufferTooSmall => c"ONEREC_STATUS_BUFFER_TOO_SMALL",
            onerec_status::Busy => c"ONEREC_STATUS_BUSY",
            onerec_status::Internal => c"ONEREC_STATUS_INTERNAL",
            onerec_status::Panic => c"ONEREC_STATUS_PANIC",
            onerec_status::Cancelled => c"ONEREC_STATUS_CANCELLED",
            onerec_status::BudgetExceeded => c"ONEREC_STATUS_BUDGET_EXCEEDED",
            onerec_status::OutOfMemory => c"ONEREC_STATUS_OUT_OF_MEMORY",
            onerec_status::NonFinite => c"ONEREC_STATUS_NON_FINITE",
        }
    }

    const ALL: [onerec_status; 17] = [
        onerec_status::Ok,
        onerec_status::InvalidArgument,
        onerec_status::NullPointer,
        onerec_status::Io,
        onerec_status::InvalidModel,
        onerec_status::UnknownItem,
        onerec_status::BackendUnavailable,
        onerec_status::BackendFailed,
        onerec_status::OutOfRange,
        onerec_status::BufferTooSmall,
        onerec_status::Busy,
        onerec_status::Internal,
        onerec_status::Panic,
        onerec_status::Cancelled,
        onerec_status::BudgetExceeded,
        onerec_status::OutOfMemory,
        onerec_status::NonFinite,
    ];
}

/// What the engine was doing when an error happened: a backend error at load time means
/// the backend is unavailable, later it means the backend failed.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    Load,
    Run,
}

/// A failure on its way to C: the status to return and the message to keep.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub status: onerec_status,
    pub message: String,
}

impl FfiError {
    pub fn new(status: onerec_status, message: impl Into<String>) -> Self {
        FfiError {
            status,
            message: message.into(),
        }
    }

    pub fn engine(e: Error, phase: Phase) -> Self {
        // A batch's error names its request; the status is that of the cause.
        let status = match (e.root(), phase) {
            (Error::Io { .. }, _) => onerec_status::Io,
            (
                Error::Config(_)
                | Error::Checkpoint { .. }
                | Error::Tensor { .. }
                | Error::MissingTensor(_)
                | Error::Catalog(_),
                _,
            ) => onerec_status::InvalidModel,
            (Error::Request(_) | Error::NoRewardModel, _) => onerec_status::InvalidArgument,
            (Error::UnknownItems { .. }, _) => onerec_status::UnknownItem,
            (Error::Backend { .. }, Phase::Load) => onerec_status::BackendUnavailable,
            (Error::Backend { .. }, Phase::Run) => onerec_status::BackendFailed,
            (Error::Cancelled, _) => onerec_status::Cancelled,
            (Error::Budget { .. }, _) => onerec_status::BudgetExceeded,
            (Error::OutOfMemory { .. }, _) => onerec_status::OutOfMemory,
            (Error::NonFinite { .. }, _) => onerec_status::NonFinite,
            // Internal errors, and variants added to the engine after this mapping, reach
            // C with their message.
            _ => onerec_status::Internal,
        };
        FfiError {
            status,
            message: e.to_string(),
        }
    }
}

thread_local! {
    /// The message of the last failed call on this thread; None after a success.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

pub(crate) fn set_last_error(message: &str) {
    // A C string cannot hold NUL; a path or id list never should, but never lose the rest.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(text));
}

pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

/// Returns the message of the last call on this thread that did not return
/// ONEREC_STATUS_OK, or "" when the last status-returning call succeeded.
///
/// Ownership: the string belongs to the library; never free it. It stays valid until
/// the next onerec_* call on the same thread (copy it to keep it).
/// Thread safety: the message is per thread; a failure on one thread never changes what
/// another thread reads.
#[no_mangle]
pub extern "C" fn onerec_last_error() -> *const c_char {
    crate::guard::value(c"".as_ptr(), || {
        LAST_ERROR.with(|e| match &*e.borrow() {
            Some(msg) => msg.as_ptr(),
            None => c"".as_ptr(),
        })
    })
}

/// Returns the name of a status code as a NUL-terminated string, e.g.
/// "ONEREC_STATUS_UNKNOWN_ITEM", or "ONEREC_STATUS_?" for a value that is not a status.
///
/// Ownership: the string is static; never free it.
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn onerec_status_name(status: u32) -> *const c_char {
    // Taken as an integer: a C caller may pass any value, and a Rust enum must not
    // hold one outside its variants.
    crate::guard::value(c"ONEREC_STATUS_?".as_ptr(), || {
        onerec_status::ALL
            .iter()
            .find(|s| **s as u32 == status)
            .map_or(c"ONEREC_STATUS_?".as_ptr(), |s| s.name().as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_name() {
        for (i, s) in onerec_status::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32, "codes are dense and in order");
            let name = unsafe { CStr::from_ptr(onerec_status_name(i as u32)) }
                .to_str()
                .unwrap();
            let expected =
                format!("{s:?}")
                    .chars()
                    .fold(String::from("ONEREC_STATUS"), |mut acc, c| {
                        if c.is_uppercase() {
                            acc.push('_');
                        }
                        acc.push(c.to_ascii_uppercase());
                        acc
                    });
            assert_eq!(name, expected);
        }
        let unknown = unsafe { CStr::from_ptr(onerec_status_name(9999)) };
        assert_eq!(unknown.to_str().unwrap(), "ONEREC_STATUS_?");
    }
}
