//! Running a batch with one answer per request.

use anyhow::Result;
use onerec_engine::{Engine, Request, Response};

/// One result per request: a request's own error (unknown items, bad beam) fails only
/// that request. A batch-wide failure (the backend) is the outer error.
pub fn each(engine: &Engine, requests: &[Request]) -> Result<Vec<Result<Response, String>>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    match engine.recommend(requests) {
        Ok(r) => Ok(r.into_iter().map(Ok).collect()),
        // Until the engine reports per request: find which ones fail, one at a time.
        Err(_) if requests.len() > 1 => Ok(requests
            .iter()
            .map(|r| {
                engine
                    .recommend(std::slice::from_ref(r))
                    .map(|mut v| v.remove(0))
                    .map_err(|e| e.to_string())
            })
            .collect()),
        Err(e) => Ok(vec![Err(e.to_string())]),
    }
}
