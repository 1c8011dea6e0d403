//! What can go wrong, how it is told to a person, and the exit code a script relies on.

use std::fmt;

use tonic::Code;
use tonic_types::StatusExt;

/// Exit codes (also in `semsctl --help` and `docs/SEMSCTL.md`).
pub mod exit {
    /// Something unexpected (a bug, or an answer the client cannot read).
    pub const INTERNAL: u8 = 1;
    /// The command line is wrong (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The server refused a value: the message names the field.
    pub const INVALID: u8 = 3;
    /// No such incident or alert.
    pub const NOT_FOUND: u8 = 4;
    /// The rules refuse this now (e.g. closing an incident that is not resolved).
    pub const REFUSED: u8 = 5;
    /// A concurrent change won; running the command again is safe.
    pub const CONFLICT: u8 = 6;
    /// semsd (or its store) cannot be reached.
    pub const UNAVAILABLE: u8 = 7;
    /// The read model did not catch up in time, or the call ran out of time.
    pub const TIMEOUT: u8 = 8;
    /// Not authenticated, or not allowed.
    pub const DENIED: u8 = 9;
}

/// An error of one `semsctl` command.
#[derive(Debug)]
pub enum CtlError {
    /// A wrong argument, caught before calling the server.
    Usage(String),
    /// The server cannot be reached at all.
    Connect { server: String, detail: String },
    /// The server answered with an error.
    Status(tonic::Status),
    /// Anything else.
    Internal(String),
}

impl CtlError {
    /// The exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Connect { .. } => exit::UNAVAILABLE,
            Self::Internal(_) => exit::INTERNAL,
            Self::Status(s) => match s.code() {
                Code::InvalidArgument | Code::OutOfRange => exit::INVALID,
                Code::NotFound => exit::NOT_FOUND,
                Code::FailedPrecondition | Code::AlreadyExists => exit::REFUSED,
                Code::Aborted => exit::CONFLICT,
                Code::Unavailable => exit::UNAVAILABLE,
                Code::DeadlineExceeded | Code::Cancelled => exit::TIMEOUT,
                Code::Unauthenticated | Code::PermissionDenied => exit::DENIED,
                _ => exit::INTERNAL,
            },
        }
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Connect { server, .. } => Some(format!(
                "is semsd running at {server}? Start it with `cargo run --release -p semsd`, or \
                 point semsctl at it with --server or SEMS_SERVER"
            )),
            Self::Status(s) => match s.code() {
                Code::Aborted => Some("another change won the race; run the command again".into()),
                Code::DeadlineExceeded => {
                    Some("the read model is behind; try again, or raise --timeout".into())
                }
                Code::Unavailable => Some("semsd cannot reach its store; check semsd's log".into()),
                Code::FailedPrecondition => {
                    Some("`semsctl incidents show <id>` shows the incident's current state".into())
                }
                _ => None,
            },
            Self::Usage(_) | Self::Internal(_) => None,
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) | Self::Internal(m) => f.write_str(m),
            Self::Connect { server, detail } => {
                write!(f, "cannot reach semsd at {server}: {detail}")
            }
            Self::Status(s) => {
                let what = match s.code() {
                    Code::InvalidArgument => "refused",
                    Code::NotFound => "not found",
                    Code::FailedPrecondition => "not allowed now",
                    Code::Aborted => "conflict",
                    Code::Unavailable => "unavailable",
                    Code::DeadlineExceeded => "timed out",
                    Code::Unauthenticated | Code::PermissionDenied => "denied",
                    _ => "failed",
                };
                write!(f, "{what}: {}", s.message())?;
                let details = s.get_error_details();
                if let Some(bad) = details.bad_request() {
                    for v in &bad.field_violations {
                        if !s.message().contains(&v.field) {
                            write!(f, " ({}: {})", v.field, v.description)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl From<tonic::Status> for CtlError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}
