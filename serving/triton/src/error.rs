//! Errors of the backend; each becomes a `TRITONSERVER_Error` with a matching code.

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model configuration (`config.pbtxt`) is unusable.
    #[error("model configuration: {0}")]
    Config(String),
    /// A request's tensors are missing, of the wrong type or shape.
    #[error("{0}")]
    Input(String),
    /// The engine refused or failed the request.
    #[error(transparent)]
    Engine(#[from] onerec_engine::Error),
    /// Triton's API reported an error.
    #[error("triton: {0}")]
    Triton(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    /// Whether the client, not the server, is at fault (Triton's INVALID_ARG).
    pub fn is_client_error(&self) -> bool {
        match self {
            ServeError::Input(_) => true,
            ServeError::Engine(e) => e.is_caller_error(),
            _ => false,
        }
    }
}
