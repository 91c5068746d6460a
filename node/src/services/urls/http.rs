//! The URL shortener's endpoints: `POST /v1/urls`, `GET /v1/urls/{code}`,
//! `DELETE /v1/urls/{code}` and the redirect `GET /{code}`.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ClickRec, NewLink, UrlError, UrlRec, code, live, now_ms};
use crate::services::Ctx;
use crate::services::api::{ApiError, ErrorBody, call_error};
use crate::services::users::Caller;

/// Days of `clicks_by_day` shown.
const CLICK_DAYS_SHOWN: u32 = 30;
/// Referrer hosts shown.
const REFERRERS_SHOWN: usize = 10;

/// `POST /v1/urls` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUrl {
    /// The target: an http(s) URL with a host, no `user:password@`, at most 2,048 bytes, not one
    /// of this cluster's own links.
    #[schema(max_length = 2048, pattern = "^https?://", example = "https://example.com/some/page")]
    url: String,
    /// A code of your choice instead of a generated one; 409 if taken.
    #[schema(pattern = "^[A-Za-z0-9_-]{3,32}$", example = "my-link")]
    alias: Option<String>,
    /// RFC 3339 UTC time in the future, e.g. `2030-01-31T12:00:00Z`; default: five years.
    #[schema(format = DateTime, example = "2030-01-31T12:00:00Z")]
    expires_at: Option<String>,
}

/// A new short link.
#[derive(Serialize, ToSchema)]
struct CreatedUrl {
    #[schema(example = "aZ3x9Qk")]
    code: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(example = "http://127.0.0.1:7000/aZ3x9Qk")]
    short_url: String,
    url: String,
}

/// The owner's view of a link.
#[derive(Serialize, ToSchema)]
pub(crate) struct UrlView {
    /// The last 30 days (UTC), oldest first.
    clicks_by_day: Vec<DayClicks>,
    clicks_total: u64,
    code: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    deleted_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: String,
    owner: String,
    short_url: String,
    /// `active`, `expired` or `deleted`.
    #[schema(example = "active")]
    status: &'static str,
    /// Up to 10 referrer hosts, most clicks first.
    top_referrers: Vec<ReferrerClicks>,
    url: String,
}

/// Clicks on one UTC day.
#[derive(Serialize, ToSchema)]
struct DayClicks {
    clicks: u64,
    #[schema(format = Date, example = "2030-01-31")]
    day: String,
}

/// Clicks from one referrer host.
#[derive(Serialize, ToSchema)]
struct ReferrerClicks {
    clicks: u64,
    host: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn url_error(e: UrlError) -> ApiError {
    match e {
        e @ UrlError::Taken(_) => ApiError::new(StatusCode::CONFLICT, "alias_taken", e.to_string()),
        e @ UrlError::NotFound(_) => ApiError::not_found(e.to_string()),
        e @ UrlError::NotOwner(_) => ApiError::new(StatusCode::FORBIDDEN, "not_owner", e.to_string()),
        UrlError::Cluster(e) => call_error(e),
        UrlError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn day_string(day: u32) -> String {
    let mut s = rfc3339(u64::from(day) * 86_400_000);
    s.truncate(10);
    s
}

/// The short link of `code` as clients should use it.
fn short_url(state: &Ctx, code: &str) -> String {
    format!("{}/{code}", state.short_base.trim_end_matches('/'))
}

/// `host:port` of every address this cluster's short links may use.
fn own_authorities(state: &Ctx) -> Vec<String> {
    let mut own: Vec<String> = state.membership.view().into_iter().map(|m| m.http_addr.to_ascii_lowercase()).collect();
    if let Ok(base) = url::Url::parse(&state.short_base)
        && let Some(a) = code::authority(&base)
    {
        own.push(a);
    }
    own
}

fn owner_of(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Admin => None,
        Caller::User(u) => Some(u.id.as_str()),
    }
}

#[utoipa::path(
    post,
    path = "/v1/urls",
    operation_id = "create_url",
    tag = "urls",
    request_body(content = NewUrl, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreatedUrl),
        (status = 400, description = "`invalid_body`, `invalid_url`, `invalid_alias` or `invalid_expires_at`",
         body = ErrorBody),
        (status = 409, description = "`alias_taken`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn create(State(state): State<Ctx>, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    let outcome = create_link(&state, &caller, &body).await;
    let label = match &outcome {
        Ok(_) => "created",
        Err(e) if e.code == "alias_taken" => "alias_taken",
        Err(e) if e.status.is_client_error() => "invalid",
        Err(_) => "failed",
    };
    state.urls.metrics().shortens.with_label_values(&[label]).inc();
    outcome
}

async fn create_link(state: &Ctx, caller: &Caller, body: &[u8]) -> Result<Response, ApiError> {
    let new: NewUrl = serde_json::from_slice(body).map_err(|e| {
        bad(
            "invalid_body",
            format!("expected {{\"url\": \"...\", \"alias\"?: \"...\", \"expires_at\"?: \"...\"}}: {e}"),
        )
    })?;
    let url = code::check_target(&new.url, &own_authorities(state)).map_err(|m| bad("invalid_url", m))?;
    if let Some(alias) = &new.alias {
        code::check_alias(alias).map_err(|m| bad("invalid_alias", m))?;
    }
    let now = now_ms();
    let expires_ms = match &new.expires_at {
        None => now.saturating_add(state.urls.config().default_retention.as_millis() as u64),
        Some(at) => {
            let t = humantime::parse_rfc3339_weak(at).map_err(|e| {
                bad(
                    "invalid_expires_at",
                    format!("expires_at must be an RFC 3339 UTC time like 2030-01-31T12:00:00Z: {e}"),
                )
            })?;
            let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            if ms <= now {
                return Err(bad("invalid_expires_at", "expires_at must be in the future"));
            }
            ms
        }
    };
    let owner = owner_of(caller).unwrap_or("admin");
    let link = NewLink { url: url.to_string(), alias: new.alias, expires_ms };
    let code = state.urls.create(owner, link).await.map_err(url_error)?;
    let body =
        CreatedUrl { short_url: short_url(state, &code), code, url: url.to_string(), expires_at: rfc3339(expires_ms) };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn referrer_host(headers: &HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let host = url::Url::parse(referer).ok()?.host_str()?.to_ascii_lowercase();
    Some(host)
}

/// `GET /{code}`: 302 to the target, 404 unknown, 410 expired or deleted.
#[utoipa::path(
    get,
    path = "/{code}",
    operation_id = "redirect",
    tag = "urls",
    params(("code" = String, Path, description = "A short link's code or alias")),
    responses(
        (status = 302, description = "To the link's target",
         headers(("Location" = String, description = "The target URL"))),
        (status = 404, description = "`not_found`: no such link", body = ErrorBody),
        (status = 410, description = "`gone`: the link expired or was deleted", body = ErrorBody),
        (status = 503, description = "`partition_unavailable` (nothing cached to serve) or `starting`",
         body = ErrorBody),
    )
)]
pub(crate) async fn redirect(
    State(state): State<Ctx>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let outcome = resolve(&state, &code, &headers).await;
    let label = match &outcome {
        Ok(_) => "found",
        Err(e) if e.status == StatusCode::GONE => "gone",
        Err(e) if e.status == StatusCode::NOT_FOUND => "not_found",
        Err(_) => "unavailable",
    };
    state.urls.metrics().redirects.with_label_values(&[label]).inc();
    outcome
}

async fn resolve(state: &Ctx, code: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    if !code::is_code_shaped(code) {
        return Err(ApiError::not_found("no such endpoint or short link"));
    }
    let link = state.urls.resolve(code).await.map_err(|e| match e {
        UrlError::Cluster(e) => {
            ApiError::unavailable("partition_unavailable", format!("the link cannot be looked up right now: {e}"), 1)
        }
        other => url_error(other),
    })?;
    let link = link.ok_or_else(|| ApiError::not_found(format!("no link has the code `{code}`")))?;
    if let Err(why) = live(&link, now_ms()) {
        return Err(ApiError::new(StatusCode::GONE, "gone", format!("the link `{code}` has {why}")));
    }
    state.urls.click(code, referrer_host(headers));
    let location = HeaderValue::from_str(&link.url).map_err(|_| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "stored URL is not a header value")
    })?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

fn describe_json(state: &Ctx, code: &str, link: &UrlRec, clicks: &ClickRec) -> UrlView {
    let today = (now_ms() / 86_400_000) as u32;
    let first = today.saturating_sub(CLICK_DAYS_SHOWN - 1);
    let by_day = (first..=today)
        .map(|d| {
            let n = clicks.days.iter().find(|(day, _)| *day == d).map(|(_, n)| *n).unwrap_or(0);
            DayClicks { clicks: n, day: day_string(d) }
        })
        .collect();
    let referrers = clicks
        .referrers
        .iter()
        .take(REFERRERS_SHOWN)
        .map(|(host, n)| ReferrerClicks { clicks: *n, host: host.clone() })
        .collect();
    let status = match live(link, now_ms()) {
        Ok(()) => "active",
        Err(why) => why,
    };
    UrlView {
        code: code.to_string(),
        short_url: short_url(state, code),
        url: link.url.clone(),
        owner: link.owner.clone(),
        status,
        created_at: rfc3339(link.created_ms),
        expires_at: rfc3339(link.expires_ms),
        deleted_at: (link.deleted_ms != 0).then(|| rfc3339(link.deleted_ms)),
        clicks_total: clicks.total,
        clicks_by_day: by_day,
        top_referrers: referrers,
    }
}

fn check_code(code: &str) -> Result<(), ApiError> {
    if code::is_code_shaped(code) { Ok(()) } else { Err(ApiError::not_found(format!("no link has the code `{code}`"))) }
}

/// `GET /v1/urls/{code}`: the owner's view, with clicks.
#[utoipa::path(
    get,
    path = "/v1/urls/{code}",
    operation_id = "describe_url",
    tag = "urls",
    params(("code" = String, Path, description = "The link's code or alias")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The link with its clicks (linearizable)", body = UrlView),
        (status = 403, description = "`not_owner`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn describe(
    State(state): State<Ctx>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<UrlView>, ApiError> {
    check_code(&code)?;
    let (link, clicks) = state.urls.describe(&code, owner_of(&caller)).await.map_err(url_error)?;
    Ok(Json(describe_json(&state, &code, &link, &clicks)))
}

/// `DELETE /v1/urls/{code}`: 204; the code answers 410 from then on.
#[utoipa::path(
    delete,
    path = "/v1/urls/{code}",
    operation_id = "delete_url",
    tag = "urls",
    params(("code" = String, Path, description = "The link's code or alias")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted (also when it already was); the code answers 410 from now on"),
        (status = 403, description = "`not_owner`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<Ctx>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_code(&code)?;
    state.urls.delete(&code, owner_of(&caller)).await.map_err(url_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The shortener's routes (the redirect `/{code}` matches only what no other route does).
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(describe, delete))
        .routes(routes!(redirect))
}
