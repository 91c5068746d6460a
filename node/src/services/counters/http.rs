//! `POST /v1/counters/{name}/increment` and `GET /v1/counters/{name}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Command, Counters, Query};
use crate::services::api::{ApiError, ErrorBody, call_error};
use crate::services::users::Caller;
use crate::services::{Consistency, Ctx};

/// Longest counter name, in bytes.
const MAX_NAME: usize = 128;

/// `POST /v1/counters/{name}/increment` body; no body, or `null`, means `{"by": 1}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct IncrementBody {
    /// How much to add: at least 1.
    #[serde(default = "one")]
    #[schema(minimum = 1, default = 1)]
    by: u64,
}

/// A counter and its value.
#[derive(Serialize, ToSchema)]
pub(crate) struct CounterValue {
    name: String,
    value: u64,
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

#[utoipa::path(
    post,
    path = "/v1/counters/{name}/increment",
    operation_id = "increment_counter",
    tag = "counters",
    params(("name" = String, Path, description = "1 to 128 of A-Z, a-z, 0-9, `_`, `-`, `.`",
            pattern = "^[A-Za-z0-9_.-]{1,128}$")),
    request_body(content = Option<IncrementBody>, content_type = "application/json",
                 description = "Optional: no body, or `null`, means `{\"by\": 1}`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The value after the increment committed", body = CounterValue),
        (status = 400, description = "`invalid_name` or `invalid_body`", body = ErrorBody),
        (status = 422, description = "`rejected`, e.g. the value would overflow", body = ErrorBody),
        (status = 503, description = "`no_leader` (not applied; retry), `partition_unavailable` (outcome unknown) \
                                      or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn increment(
    State(ctx): State<Ctx>,
    _caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<CounterValue>, ApiError> {
    check_name(&name)?;
    // No body, or `null`, means `{"by": 1}`.
    let by = if body.iter().all(u8::is_ascii_whitespace) {
        1
    } else {
        serde_json::from_slice::<Option<IncrementBody>>(&body)
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("expected {{\"by\": N}}: {e}"))
            })?
            .map_or(1, |b| b.by)
    };
    if by == 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "`by` must be at least 1"));
    }
    let command = Command::Increment { name: name.clone(), by };
    match ctx.client.propose::<Counters>(name.as_str(), &command).await.map_err(call_error)? {
        Ok(value) => Ok(Json(CounterValue { name, value })),
        Err(rejection) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", rejection.to_string())),
    }
}

#[utoipa::path(
    get,
    path = "/v1/counters/{name}",
    operation_id = "get_counter",
    tag = "counters",
    params(("name" = String, Path, description = "1 to 128 of A-Z, a-z, 0-9, `_`, `-`, `.`",
            pattern = "^[A-Za-z0-9_.-]{1,128}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The value (linearizable; 0 for a counter never incremented)", body = CounterValue),
        (status = 400, description = "`invalid_name`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(ctx): State<Ctx>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<CounterValue>, ApiError> {
    check_name(&name)?;
    let query = Query::Get { name: name.clone() };
    let value =
        ctx.client.read::<Counters>(name.as_str(), &query, Consistency::Linearizable).await.map_err(call_error)?;
    Ok(Json(CounterValue { name, value }))
}

/// The counters' routes.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(get)).routes(routes!(increment))
}
