//! Errors as Docker answers them: a status code and `{"message": "..."}`,
//! with Docker's words for the cases its CLI and users know.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shoal_shared::{ErrorCode, ShoalError};

/// Docker's answer when a worker is asked for cluster state.
pub const NOT_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster \
                               state. Please run this command on a manager node or promote the current node to a manager.";
/// Docker's answer to cluster reads and writes before `swarm init`/`join`.
pub const NO_SWARM_MANAGER: &str =
    "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" \
                                    to connect this node to swarm and try again.";
/// Docker's answer to `/swarm` endpoints before `swarm init`/`join`.
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";
/// Docker's answer to a second `swarm init`/`join`.
pub const ALREADY_IN_SWARM: &str =
    "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";
/// Docker's answer to a write that named an old `Version.Index`.
pub const OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";

/// Longest piece of client input an error message quotes whole.
pub const QUOTE_MAX_CHARS: usize = 64;

/// Client input as an error message quotes it: the first [`QUOTE_MAX_CHARS`]
/// characters, then `...` when there was more (a 1 MB name is not echoed back).
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// An HTTP error with Docker's status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The request's body is unread: the connection cannot carry another request.
            resp.force_close();
        }
        resp.json(serde_json::json!({ "message": self.message }))
    }
}

impl From<ShoalError> for ApiError {
    fn from(e: ShoalError) -> ApiError {
        let status = match e.code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::NameConflict | ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::StaleVersion => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, OUT_OF_SEQUENCE),
            // Handlers that remove with a guard say who uses it; this is the fallback.
            ErrorCode::InvalidArgument | ErrorCode::InUse => StatusCode::BAD_REQUEST,
            ErrorCode::NoQuorum | ErrorCode::NotLeader | ErrorCode::Unavailable => {
                return ApiError::unavailable(shoal_shared::error::NO_LEADER_MESSAGE)
            }
            ErrorCode::Fenced | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match e.code {
            ErrorCode::NameConflict => {
                format!(
                    "rpc error: code = AlreadyExists desc = name conflicts with an existing object: {}",
                    e.message
                )
            }
            _ => e.message,
        };
        ApiError::new(status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_clipped_when_quoted() {
        assert_eq!(clip("web"), "web");
        let long = "é".repeat(1_000_000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), QUOTE_MAX_CHARS + 3);
        assert!(c.ends_with("..."));
        assert_eq!(clip(&"a".repeat(64)), "a".repeat(64));
    }

    #[test]
    fn store_errors_map_to_dockers_status_and_words() {
        let e: ApiError = ShoalError::no_quorum().into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.message,
            "rpc error: code = Unknown desc = raft: no elected cluster leader"
        );
        let e: ApiError = ShoalError::new(ErrorCode::StaleVersion, "v").into();
        assert!(e.message.contains("update out of sequence"));
        let e: ApiError = ShoalError::new(ErrorCode::NameConflict, "service web exists").into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(
            e.message.contains("name conflicts with an existing object"),
            "{}",
            e.message
        );
    }
}
