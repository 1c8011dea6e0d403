/// Why a command was refused. Each variant maps to one gRPC status at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Malformed or out-of-range input; `field` names it as the API spells it.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The offending field, e.g. `alert.title`.
        field: String,
        /// What is wrong with it and what is allowed.
        message: String,
    },
    /// The aggregate the command addresses does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The command is not allowed in the aggregate's current state.
    #[error("{0}")]
    Precondition(String),
    /// A bug or a stored event this code cannot read.
    #[error("internal: {0}")]
    Internal(String),
}

impl DomainError {
    /// An [`DomainError::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A [`DomainError::Precondition`].
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::Precondition(message.into())
    }
}
