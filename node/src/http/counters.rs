//! `POST /v1/counters/{name}/increment` and `GET /v1/counters/{name}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::users::Caller;
use super::{ApiError, AppState};
use crate::raft::{Command, CommandResult, ProposeError, RaftHost};

/// Longest counter name, in bytes.
const MAX_NAME: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementBody {
    #[serde(default = "one")]
    by: u64,
}

fn one() -> u64 {
    1
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("counter names are 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '_', '-' and '.'"),
        ))
    }
}

pub(super) fn raft(state: &AppState) -> Result<std::sync::Arc<RaftHost>, ApiError> {
    state.raft.get().ok_or_else(|| ApiError::unavailable("starting", "the raft groups are starting", 1))
}

/// Maps a proposal failure to the API's status codes.
pub(super) fn propose_error(e: ProposeError) -> ApiError {
    match e {
        // Nothing was proposed: safe to retry.
        ProposeError::NoLeader { .. } | ProposeError::NotLeader { .. } => {
            ApiError::unavailable("no_leader", e.to_string(), 1)
        }
        // The outcome is unknown: the command may or may not have been applied.
        ProposeError::Unavailable { .. } => ApiError::unavailable("partition_unavailable", e.to_string(), 1),
        ProposeError::Rejected { reason } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", reason),
    }
}

pub(super) async fn increment(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let by = if body.iter().all(u8::is_ascii_whitespace) {
        1
    } else {
        serde_json::from_slice::<IncrementBody>(&body)
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("expected {{\"by\": N}}: {e}"))
            })?
            .by
    };
    if by == 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "`by` must be at least 1"));
    }
    let raft = raft(&state)?;
    let group = raft.partition_of(&name);
    match raft.propose(group, Command::CounterIncrement { name: name.clone(), by }).await.map_err(propose_error)? {
        CommandResult::Value(value) => Ok(Json(json!({ "name": name, "value": value }))),
        CommandResult::Rejected { reason } => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", reason)),
    }
}

pub(super) async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let value = raft(&state)?.read_counter(&name).await.map_err(propose_error)?;
    Ok(Json(json!({ "name": name, "value": value })))
}
