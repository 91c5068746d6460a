//! `POST /v1/counters/{name}/increment` and `GET /v1/counters/{name}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Command, Counters, Query};
use crate::services::api::{ApiError, call_error};
use crate::services::users::Caller;
use crate::services::{Consistency, Ctx};

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

pub(crate) async fn increment(
    State(ctx): State<Ctx>,
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
    let command = Command::Increment { name: name.clone(), by };
    match ctx.client.propose::<Counters>(name.as_str(), &command).await.map_err(call_error)? {
        Ok(value) => Ok(Json(json!({ "name": name, "value": value }))),
        Err(rejection) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", rejection.to_string())),
    }
}

pub(crate) async fn get(
    State(ctx): State<Ctx>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let query = Query::Get { name: name.clone() };
    let value =
        ctx.client.read::<Counters>(name.as_str(), &query, Consistency::Linearizable).await.map_err(call_error)?;
    Ok(Json(json!({ "name": name, "value": value })))
}

/// The counters' routes.
pub(crate) fn routes() -> axum::Router<Ctx> {
    use axum::routing;
    axum::Router::new()
        .route("/v1/counters/{name}", routing::get(get))
        .route("/v1/counters/{name}/increment", routing::post(increment))
}
