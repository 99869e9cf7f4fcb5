//! One error type for the engine; every variant names what is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
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
    #[error("invalid request: {0}")]
    Request(String),
    #[error("unknown item id(s) {0}")]
    UnknownItems(String),
    #[error("backend `{backend}`: {msg}")]
    Backend { backend: String, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}
