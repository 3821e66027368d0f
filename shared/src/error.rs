//! Typed errors shared by every process. Each carries an [`ErrorCode`] that
//! travels in NATS replies and says whether a caller may retry; the API maps
//! codes to Docker's HTTP status and words.

use serde::{Deserialize, Serialize};

/// Docker's text when there is no Raft leader (HTTP 503).
pub const NO_LEADER_MESSAGE: &str = "rpc error: code = Unknown desc = raft: no elected cluster leader";

/// Removing a store voter that would leave the reachable voters short of a
/// quorum (SwarmKit's `CanRemoveMember` safeguard, in Docker's words).
pub const LOSES_QUORUM_MESSAGE: &str =
    "rpc error: code = FailedPrecondition desc = can't remove member from the raft: this would result in a loss of quorum";

/// What went wrong, in a form a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// This replica is not the leader; `leader` in the error says who is, if known.
    NotLeader,
    /// No quorum / no elected leader: Docker's "raft: no elected cluster leader".
    NoQuorum,
    /// The update named a `Version.Index` that is no longer current ("update out of sequence").
    StaleVersion,
    /// A write carried a fencing term older than the current leader term.
    Fenced,
    /// Another object of this kind already has this name.
    NameConflict,
    /// An object with this ID already exists.
    AlreadyExists,
    NotFound,
    /// Something still refers to what the write would remove (`Op::NoneMatch`).
    InUse,
    InvalidArgument,
    /// A peer or dependency did not answer; try again.
    Unavailable,
    /// A bug or a broken invariant; do not retry blindly.
    Internal,
}

impl ErrorCode {
    /// Whether repeating the same request later can succeed without changing it.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader | ErrorCode::NoQuorum | ErrorCode::Unavailable
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotLeader => "not-leader",
            ErrorCode::NoQuorum => "no-quorum",
            ErrorCode::StaleVersion => "stale-version",
            ErrorCode::Fenced => "fenced",
            ErrorCode::NameConflict => "name-conflict",
            ErrorCode::AlreadyExists => "already-exists",
            ErrorCode::NotFound => "not-found",
            ErrorCode::InUse => "in-use",
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error as it crosses process boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ShoalError {
    pub code: ErrorCode,
    pub message: String,
    /// For [`ErrorCode::NotLeader`]: the replica that leads, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
}

impl ShoalError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ShoalError {
        ShoalError {
            code,
            message: message.into(),
            leader: None,
        }
    }

    pub fn no_quorum() -> ShoalError {
        ShoalError::new(ErrorCode::NoQuorum, NO_LEADER_MESSAGE)
    }

    pub fn not_leader(leader: Option<u64>) -> ShoalError {
        ShoalError {
            code: ErrorCode::NotLeader,
            message: match leader {
                Some(l) => format!("not the leader; replica {l} leads"),
                None => "not the leader; no leader known".into(),
            },
            leader,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::Unavailable, message)
    }

    pub fn not_found(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::NotFound, message)
    }

    pub fn invalid(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::Internal, message)
    }

    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }
}

pub type Result<T, E = ShoalError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_travel_as_kebab_case_and_say_whether_to_retry() {
        let e = ShoalError::not_leader(Some(2));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"not-leader\""), "{json}");
        let back: ShoalError = serde_json::from_str(&json).unwrap();
        assert_eq!(back.leader, Some(2));
        assert!(back.retryable());
        assert!(!ShoalError::new(ErrorCode::StaleVersion, "x").retryable());
        assert!(!ShoalError::new(ErrorCode::NameConflict, "x").retryable());
        assert_eq!(ShoalError::no_quorum().message, NO_LEADER_MESSAGE);
    }
}
