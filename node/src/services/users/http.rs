//! Users and bearer tokens: `POST /v1/users`, `GET /v1/users/me`, and the [`Caller`] extractor
//! every authenticated endpoint takes.
//!
//! Tokens are 32 random bytes, shown once; the meta group stores only their SHA-256.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Command, User, Users};
use crate::services::Ctx;
use crate::services::api::{ApiError, ErrorBody, call_error};

/// Longest user name, in characters.
const MAX_NAME: usize = 64;

/// Who is calling, from its bearer token.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The configured admin token.
    Admin,
    /// A user.
    User(User),
}

fn sha256_hex(s: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

impl FromRequestParts<Ctx> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, ApiError> {
        // The rate limiter identified the caller already (it keys requests by user).
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        identify(ctx, &parts.headers).await
    }
}

impl Caller {
    /// A stable id: the user's, or `admin`.
    pub fn id(&self) -> &str {
        match self {
            Caller::Admin => "admin",
            Caller::User(u) => &u.id,
        }
    }
}

/// The caller a request's bearer token names.
pub async fn identify(ctx: &Ctx, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing_token", "this endpoint needs an Authorization: Bearer <token> header"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("invalid_token", "expected Authorization: Bearer <token>"))?;
    let hash = sha256_hex(token);
    // Compare hashes, so the comparison time says nothing about the admin token.
    if ctx.auth.admin_token.as_deref().is_some_and(|admin| sha256_hex(admin) == hash) {
        return Ok(Caller::Admin);
    }
    match super::by_token(&ctx.client, &hash).await.map_err(call_error)? {
        Some(user) => Ok(Caller::User(user)),
        None => Err(unauthorized("invalid_token", "the bearer token is not valid")),
    }
}

/// `POST /v1/users` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// 1 to 64 characters (after trimming), no control characters.
    #[schema(min_length = 1, max_length = 64, example = "ada")]
    name: String,
}

/// A new user and its token: the only time the token is shown.
#[derive(Serialize, ToSchema)]
struct CreatedUser {
    #[schema(example = "u0123456789abcdef")]
    id: String,
    name: String,
    /// The bearer token (64 hex digits); only its hash is stored.
    token: String,
}

/// The caller.
#[derive(Serialize, ToSchema)]
pub(crate) struct Me {
    /// Present (true) only for the admin token.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    admin: bool,
    id: String,
    name: String,
}

#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "create_user",
    tag = "users",
    request_body(content = NewUser, content_type = "application/json"),
    // Open sign-up needs no token; with `auth.open_signup = false` only the admin token may.
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token is shown only here", body = CreatedUser),
        (status = 400, description = "`invalid_body` or `invalid_name`", body = ErrorBody),
        (status = 403, description = "`signup_closed`: sign-up is closed and the token is not the admin's",
         body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn create(State(ctx): State<Ctx>, parts: Parts, body: Bytes) -> Result<Response, ApiError> {
    if !ctx.auth.open_signup {
        let mut parts = parts;
        match Caller::from_request_parts(&mut parts, &ctx).await? {
            Caller::Admin => {}
            Caller::User(_) => {
                return Err(ApiError::new(StatusCode::FORBIDDEN, "signup_closed", "sign-up is closed; ask an admin"));
            }
        }
    }
    let new: NewUser = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("expected {{\"name\": \"...\"}}: {e}"))
    })?;
    let name = new.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("a user name is 1 to {MAX_NAME} characters without control characters"),
        ));
    }
    let id = format!("u{:016x}", rand::random::<u64>());
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let command = Command::Create { token_hash: sha256_hex(&token), user: User { id: id.clone(), name: name.clone() } };
    if let Err(rejection) =
        ctx.client.propose::<Users>(crate::services::Route::Meta, &command).await.map_err(call_error)?
    {
        // A fresh random token is never in use; refuse rather than hand out a shared one.
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", rejection.to_string()));
    }
    Ok((StatusCode::CREATED, Json(CreatedUser { id, name, token })).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/users/me",
    operation_id = "me",
    tag = "users",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = Me))
)]
pub(crate) async fn me(caller: Caller) -> Json<Me> {
    match caller {
        Caller::Admin => Json(Me { admin: true, id: "admin".into(), name: "admin".into() }),
        Caller::User(u) => Json(Me { admin: false, id: u.id, name: u.name }),
    }
}

/// The users' routes.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(create)).routes(routes!(me))
}
