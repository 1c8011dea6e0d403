use sems_domain::DomainError;

use crate::LogError;

/// Why a command or query failed; one variant per gRPC status class.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed or out-of-range input, naming the field.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Unknown aggregate.
    #[error("{0} not found")]
    NotFound(String),
    /// Not allowed in the current state.
    #[error("{0}")]
    Precondition(String),
    /// Concurrency retries exhausted.
    #[error("concurrent changes to {0}: retries exhausted, try again")]
    Aborted(String),
    /// The event log or database cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The read model did not reach the requested position in time.
    #[error("read model not caught up to position {0} in time")]
    NotCaughtUp(u64),
    /// A bug or corrupt data; details are logged, not returned.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, message } => Self::Invalid { field, message },
            DomainError::NotFound(what) => Self::NotFound(what),
            DomainError::Precondition(why) => Self::Precondition(why),
            DomainError::Internal(what) => Self::Internal(what),
        }
    }
}

impl From<LogError> for AppError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Unavailable(what) => Self::Unavailable(what),
            other => Self::Internal(other.to_string()),
        }
    }
}
