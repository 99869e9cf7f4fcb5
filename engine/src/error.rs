//! One error type for the engine; every variant names what is wrong. Variants carry
//! data (ids, byte counts) so a caller (the C API, Python) can act on them without
//! parsing messages, and the enum is `#[non_exhaustive]` so new ones do not break callers.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config.json: {0}")]
    Config(String),
    #[error("invalid checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("invalid catalog: {0}")]
    Catalog(String),
    #[error("catalog update refused: {0}")]
    CatalogUpdate(#[from] crate::catalog::UpdateError),
    /// The caller's request is invalid (beam, results, empty history, options).
    #[error("invalid request: {0}")]
    Request(String),
    /// History items that are not in the model's catalog (every one, in request order).
    #[error("unknown item id(s) {}: not in the model's catalog", list_ids(ids))]
    UnknownItems { ids: Vec<u64> },
    /// Request `index` of a batch failed; `error` says why (its message is not repeated).
    #[error("request {index}: {error}")]
    InRequest { index: usize, error: Box<Error> },
    #[error("backend `{backend}`: {msg}")]
    Backend { backend: String, msg: String },
    /// A bug in the engine (a broken invariant), never the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller's abort check returned true.
    #[error("cancelled")]
    Cancelled,
    /// The call would need `need` bytes of working memory, over the engine's budget.
    #[error("the call needs about {need} bytes of working memory, over the budget of {budget} bytes (lower the beam or split the batch)")]
    Budget { need: u64, budget: u64 },
    /// An allocation of `bytes` failed.
    #[error("out of memory: {bytes} bytes for {what}")]
    OutOfMemory { what: String, bytes: u64 },
    /// A computed value (a session's score) is NaN or infinite: the weights are corrupted
    /// or overflowed for this input.
    #[error("non-finite {what} ({value}): the model's weights may be corrupted (load with verification)")]
    NonFinite { what: String, value: f32 },
    /// A request asked to rerank, but the model has no reward model (no `reward` section,
    /// docs/REWARD_MODEL.md).
    #[error("the model has no reward model (no `reward` section, docs/REWARD_MODEL.md), so it cannot rerank")]
    NoRewardModel,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The first ten ids, then how many more.
fn list_ids(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(10).map(u64::to_string).collect();
    let more = if ids.len() > 10 {
        format!(" (and {} more)", ids.len() - 10)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

impl Error {
    pub(crate) fn tensor(name: &str, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    pub(crate) fn request(msg: impl Into<String>) -> Self {
        Error::Request(msg.into())
    }
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// The error itself, or for [`Error::InRequest`] the request's own error.
    pub fn root(&self) -> &Error {
        match self {
            Error::InRequest { error, .. } => error.root(),
            e => e,
        }
    }

    /// Whether the caller caused it (bad request, unknown items), as opposed to the model,
    /// the backend, resources or a bug.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self.root(),
            Error::Request(_)
                | Error::UnknownItems { .. }
                | Error::Budget { .. }
                | Error::CatalogUpdate(_)
                | Error::NoRewardModel
        )
    }
}
