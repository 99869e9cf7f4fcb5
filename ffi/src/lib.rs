//! C API of the OneRec engine. This crate only converts types between C and
//! `onerec_engine`; the header `include/onerec.h` is generated from it by cbindgen.
//!
//! Conventions (rustls-ffi style): every exported function runs inside `catch_unwind`,
//! checks every pointer, returns an [`onerec_status`] and writes its out-parameters only
//! on success; the message of the last failure is kept per thread.
#![allow(non_camel_case_types)]
// Every `unsafe extern "C"` function documents its pointer contract in the header text.
#![allow(clippy::missing_safety_doc)]

// Declared in the order the header presents them: errors, logging, model, loading,
// queries, request, context.
mod context;
mod guard;
mod load;
mod logging;
mod model;
mod query;
mod request;
mod status;
// The live catalog (update, load) comes last in the header.
mod catalog;

pub use catalog::*;
pub use context::*;
pub use load::*;
pub use logging::*;
pub use model::*;
pub use query::*;
pub use request::*;
pub use status::*;

/// The version of the C ABI this header describes. It changes whenever a function
/// signature, a struct layout or the meaning of a status code changes, and it is the
/// number in the shared library's name (libonerec.so.2). Compare it with
/// onerec_abi_version() at start-up to catch a header/library mismatch.
///
/// Version 2 (from version 1): onerec_model_params gained device_index, kv_precision,
/// cpu_threads, verify and memory_budget; onerec_model_info gained the config's sizes and
/// file_bytes; onerec_recommend() keeps the results of the requests that succeeded when
/// others fail (per-request status: onerec_results_status()); new statuses CANCELLED,
/// BUDGET_EXCEEDED, OUT_OF_MEMORY, NON_FINITE; new functions for loading from a buffer or
/// a file descriptor, logging, aborting, catalog and memory queries.
pub const ONEREC_ABI_VERSION: u32 = 2;

/// Returns the ABI version of the library that is linked (ONEREC_ABI_VERSION of the
/// header it was built with).
///
/// Ownership: returned by value.
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn onerec_abi_version() -> u32 {
    ONEREC_ABI_VERSION
}

/// Returns the library's version as a NUL-terminated string, e.g. "0.1.0".
///
/// Ownership: the string is static; never free it.
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn onerec_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
