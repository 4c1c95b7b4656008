//! The shim's error type and its mapping onto ttrpc status codes.
//!
//! Every failure that reaches containerd goes through [`ShimError`], so a client sees a gRPC code it
//! can act on (`NotFound` for an unknown container or exec id, `InvalidArgument` for a bad request
//! or spec, `FailedPrecondition` for an operation the task's state forbids) and a message that
//! names what was wrong.

use containerd_shim_protos::ttrpc::{self, Code};

use crate::log_uri::LogUriError;

/// Errors returned by the shim's task service and its helpers.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No container or exec process with this id is known to the shim.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// A container or exec process with this id exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    /// The request carried a value the shim cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation is not allowed in the current state of the task.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The shim does not do this at all (checkpoint and restore).
    #[error("{0}")]
    Unimplemented(String),
    /// libcontainer (in the zygote's worker) refused or failed an operation.
    #[error("{op} {id}: {message}")]
    Runtime {
        op: &'static str,
        id: String,
        message: String,
    },
    /// An I/O error on a path the shim touched.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{context}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    /// An error from the containerd-shim crate (mounts, cgroup metrics, publisher).
    #[error("{context}")]
    Shim {
        context: String,
        #[source]
        source: containerd_shim::Error,
    },
    /// The zygote helper process is gone or sent something unreadable.
    #[error("zygote: {0}")]
    Zygote(String),
    /// A stdio URI was refused, or its logging binary or file could not be used.
    #[error(transparent)]
    Log(#[from] crate::log_uri::LogUriError),
}

impl ShimError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Io { context, source }
    }

    pub fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Sys { context, source }
    }

    pub fn shim(context: impl Into<String>) -> impl FnOnce(containerd_shim::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Shim { context, source }
    }

    /// The ttrpc status code containerd receives for this error.
    pub fn code(&self) -> Code {
        match self {
            ShimError::NotFound { .. } => Code::NOT_FOUND,
            ShimError::AlreadyExists { .. } => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Runtime { .. } => Code::UNKNOWN,
            ShimError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NOT_FOUND
            }
            ShimError::Io { .. } | ShimError::Sys { .. } | ShimError::Shim { .. } => Code::INTERNAL,
            ShimError::Zygote(_) => Code::UNAVAILABLE,
            ShimError::Log(e) => match e {
                LogUriError::NotReady { .. } => Code::DEADLINE_EXCEEDED,
                LogUriError::Io { .. } => Code::INTERNAL,
                LogUriError::Scheme { .. }
                | LogUriError::Malformed { .. }
                | LogUriError::TooManyArgs { .. }
                | LogUriError::Spawn { .. } => Code::INVALID_ARGUMENT,
            },
        }
    }

    /// The full message, with every source in the chain, for a client that only sees a string.
    pub fn chain(&self) -> String {
        predictive_api::error_chain(self)
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(err: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.chain()))
    }
}

pub type Result<T, E = ShimError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(err: ShimError) -> (Code, String) {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message().to_string()),
            other => panic!("expected an RpcStatus, got {other:?}"),
        }
    }

    #[test]
    fn codes_map_to_what_containerd_expects() {
        let (code, msg) = status_of(ShimError::NotFound {
            kind: "exec",
            id: "e1".into(),
        });
        assert_eq!(code, Code::NOT_FOUND);
        assert_eq!(msg, "exec e1 not found");

        let (code, _) = status_of(ShimError::InvalidArgument("bad".into()));
        assert_eq!(code, Code::INVALID_ARGUMENT);

        let (code, _) = status_of(ShimError::FailedPrecondition("not running".into()));
        assert_eq!(code, Code::FAILED_PRECONDITION);

        let (code, _) = status_of(ShimError::AlreadyExists {
            kind: "container",
            id: "c".into(),
        });
        assert_eq!(code, Code::ALREADY_EXISTS);

        let (code, _) = status_of(ShimError::Zygote("gone".into()));
        assert_eq!(code, Code::UNAVAILABLE);

        let (code, msg) = status_of(
            crate::log_uri::parse("syslog://x")
                .expect_err("an unknown scheme")
                .into(),
        );
        assert_eq!(code, Code::INVALID_ARGUMENT);
        assert!(msg.contains("\"syslog\""), "{msg}");
    }

    #[test]
    fn io_errors_keep_their_source_in_the_message() {
        let err = ShimError::io("reading config.json in /b")(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        ));
        let (code, msg) = status_of(err);
        assert_eq!(code, Code::NOT_FOUND);
        assert!(msg.starts_with("reading config.json in /b: "), "{msg}");
    }
}
