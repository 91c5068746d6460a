//! S3 keys on the HTTP API: `POST /v1/users/me/s3-keys` (the secret is shown once),
//! `GET /v1/users/me/s3-keys` (ids only) and `DELETE /v1/users/me/s3-keys/{id}`. A key acts
//! as the user who created it; the admin token has none.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ObjError;
use crate::services::Ctx;
use crate::services::api::{ApiError, ErrorBody, call_error};
use crate::services::users::Caller;

/// A new S3 key: the only time its secret is shown.
#[derive(Serialize, ToSchema)]
struct NewKey {
    #[schema(example = "SH0123456789ABCDEF01")]
    access_key_id: String,
    /// 40 characters; keep it: it is never shown again.
    secret_access_key: String,
    #[schema(format = DateTime, example = "2030-01-31T12:00:00Z")]
    created_at: String,
}

/// One key of the caller (no secret).
#[derive(Serialize, ToSchema)]
struct KeyInfo {
    access_key_id: String,
    #[schema(format = DateTime, example = "2030-01-31T12:00:00Z")]
    created_at: String,
}

/// The caller's keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct Keys {
    keys: Vec<KeyInfo>,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn user_of(caller: &Caller) -> Result<&str, ApiError> {
    match caller {
        Caller::User(u) => Ok(&u.id),
        Caller::Admin => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "user_required", "S3 keys belong to users; use a user's token"))
        }
    }
}

fn obj_error(e: ObjError) -> ApiError {
    match e {
        ObjError::Cluster(e) => call_error(e),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
    }
}

#[utoipa::path(
    post,
    path = "/v1/users/me/s3-keys",
    operation_id = "create_s3_key",
    tag = "objects",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the secret is shown only here", body = NewKey),
        (status = 403, description = "`user_required`: the admin token has no S3 keys", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn create(State(ctx): State<Ctx>, caller: Caller) -> Result<Response, ApiError> {
    let user = user_of(&caller)?;
    let rec = ctx.objects.create_key(user).await.map_err(obj_error)?;
    let body =
        NewKey { access_key_id: rec.access_key_id, secret_access_key: rec.secret, created_at: rfc3339(rec.created_ms) };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/users/me/s3-keys",
    operation_id = "list_s3_keys",
    tag = "objects",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's keys, without secrets", body = Keys),
        (status = 403, description = "`user_required`: the admin token has no S3 keys", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(ctx): State<Ctx>, caller: Caller) -> Result<Json<Keys>, ApiError> {
    let user = user_of(&caller)?;
    let keys = ctx.objects.keys_of(user).await.map_err(obj_error)?;
    let keys = keys
        .into_iter()
        .map(|k| KeyInfo { access_key_id: k.access_key_id, created_at: rfc3339(k.created_ms) })
        .collect();
    Ok(Json(Keys { keys }))
}

#[utoipa::path(
    delete,
    path = "/v1/users/me/s3-keys/{id}",
    operation_id = "delete_s3_key",
    tag = "objects",
    params(("id" = String, Path, description = "The access key id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked: requests signed with it are refused from now on"),
        (status = 403, description = "`user_required`: the admin token has no S3 keys", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller has no key with this id", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = user_of(&caller)?;
    if ctx.objects.delete_key(user, &id).await.map_err(obj_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("you have no S3 key `{id}`")))
    }
}

/// The S3 key routes.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(delete))
}
