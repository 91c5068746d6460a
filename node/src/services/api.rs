//! The one JSON error shape of the API, `{"error": {"code", "message"}}`, and how cluster
//! errors map to it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::client::CallError;
use crate::raft::ProposeError;

/// An error answer: status, stable snake_case code, human sentence, optional `Retry-After`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// One human sentence.
    pub message: String,
    /// Seconds for `Retry-After` (503 and 429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 404 for a path that names nothing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message) }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `rate_limited`, `no_leader`.
    #[schema(example = "not_found")]
    pub code: String,
    /// One human sentence.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Maps a failed call to Raft to the API's status codes.
pub fn call_error(e: CallError) -> ApiError {
    match e {
        CallError::Starting => ApiError::unavailable("starting", "the raft groups are starting", 1),
        // Nothing was proposed: safe to retry.
        CallError::Cluster(ProposeError::NoLeader { .. } | ProposeError::NotLeader { .. }) => {
            ApiError::unavailable("no_leader", e.to_string(), 1)
        }
        // The outcome is unknown: the command may or may not have been applied.
        CallError::Cluster(ProposeError::Unavailable { .. }) => {
            ApiError::unavailable("partition_unavailable", e.to_string(), 1)
        }
        // A node of another build answered, or the command never reached its service.
        CallError::Cluster(ProposeError::Refused(_)) | CallError::Corrupt(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}
