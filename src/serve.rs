//! Running a batch with one answer per request.

use anyhow::Result;
use onerec_engine::{Engine, Request, Response};

/// One result per request: a request's own error (unknown items, bad beam) fails only
/// that request. A batch-wide failure (backend, memory budget) is the outer error.
pub fn each(engine: &Engine, requests: &[Request]) -> Result<Vec<Result<Response, String>>> {
    Ok(engine
        .recommend_each(requests)?
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect())
}
