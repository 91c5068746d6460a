//! The rate limiter on the HTTP path: the middleware every request passes, and
//! `GET /v1/ratelimit`.
//!
//! Responses covered by a policy carry `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
//! `X-RateLimit-Reset` (seconds until the quota is whole again) and the IETF draft's
//! `RateLimit-Policy` and `RateLimit`, from the policy closest to refusing; a refusal (429)
//! adds `Retry-After`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Algorithm, Decision, Outcome, Policy, Requester};
use crate::config::RateKey;
use crate::services::Ctx;
use crate::services::api::ApiError;
use crate::services::users::{Caller, identify};

fn secs_ceil(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

fn client_ip(request: &Request) -> IpAddr {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The caller a request authenticates as, if its token is valid (else it is keyed by IP).
async fn caller_of(state: &Ctx, headers: &HeaderMap) -> Option<Caller> {
    headers.get(axum::http::header::AUTHORIZATION)?;
    identify(state, headers).await.ok()
}

/// Checks the request against every policy covering it, refuses it (429, or 503 when a
/// fail-closed policy's owner cannot answer) or passes it on, and adds the headers.
pub async fn limit(State(state): State<Ctx>, mut request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_string(),
        None => request.uri().path().to_string(),
    };
    let policies = state.ratelimit.covering(request.method().as_str(), &route);
    if policies.is_empty() {
        return next.run(request).await;
    }
    let caller = caller_of(&state, request.headers()).await;
    let who = Requester { user: caller.as_ref().map(|c| c.id().to_string()), ip: client_ip(&request) };
    // The handler's `Caller` extractor takes it from here instead of looking the token up again.
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    let outcomes = state.ratelimit.check(&policies, &who, true).await;
    let decided: Vec<(&Policy, Decision)> = policies
        .iter()
        .zip(&outcomes)
        .filter_map(|(p, o)| match o {
            Outcome::Decided(d) => Some((*p, *d)),
            Outcome::Unavailable { .. } => None,
        })
        .collect();
    // The policy closest to refusing: a refusal (the longest wait), else the fewest left.
    let headline = decided
        .iter()
        .filter(|(_, d)| !d.allowed)
        .max_by_key(|(_, d)| d.retry_after_ns)
        .or_else(|| decided.iter().min_by_key(|(_, d)| d.remaining))
        .copied();
    let mut response = if let Some((p, d)) = headline.filter(|(_, d)| !d.allowed) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit `{}` ({} requests per {:?}) exceeded; retry in {} s",
                p.cfg.name,
                p.cfg.limit,
                p.cfg.window,
                secs_ceil(d.retry_after_ns).max(1)
            ),
        );
        e.retry_after = Some(secs_ceil(d.retry_after_ns).max(1));
        e.into_response()
    } else if outcomes.iter().any(|o| !o.admitted()) {
        ApiError::unavailable(
            "rate_limiter_unavailable",
            "the rate limiter cannot decide right now and this policy fails closed",
            1,
        )
        .into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    let policy_header: Vec<String> = policies.iter().map(|p| p.header_item()).collect();
    insert(headers, "ratelimit-policy", &policy_header.join(", "));
    match headline {
        Some((p, d)) => {
            insert(headers, "x-ratelimit-limit", &p.cfg.limit.to_string());
            insert(headers, "x-ratelimit-remaining", &d.remaining.to_string());
            insert(headers, "x-ratelimit-reset", &secs_ceil(d.reset_ns).to_string());
            let item = format!("\"{}\";r={};t={}", p.cfg.name, d.remaining, secs_ceil(d.reset_ns));
            insert(headers, "ratelimit", &item);
        }
        // No owner answered: the limit is known, what is left is not.
        None => insert(headers, "x-ratelimit-limit", &policies[0].cfg.limit.to_string()),
    }
    response
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// `GET /v1/ratelimit`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Quota {
    /// `ratelimit.enabled`.
    enabled: bool,
    /// Every configured policy (none while disabled).
    policies: Vec<PolicyQuota>,
}

/// The caller's quota under one policy.
#[derive(Serialize, ToSchema)]
struct PolicyQuota {
    algorithm: Algorithm,
    key: RateKey,
    limit: u64,
    #[schema(example = "api")]
    policy: String,
    /// Requests left now; absent when the key's owner did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining: Option<u64>,
    /// Seconds until the quota is whole again; absent when the key's owner did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    reset_seconds: Option<u64>,
    /// Route patterns the policy covers.
    routes: Vec<String>,
    /// Present (true) when the key's owner did not answer in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<bool>,
    window_seconds: f64,
}

/// `GET /v1/ratelimit`: the caller's quota under every policy, without using any.
#[utoipa::path(
    get,
    path = "/v1/ratelimit",
    operation_id = "ratelimit",
    tag = "ratelimit",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's quota under every policy, without using any", body = Quota))
)]
pub(crate) async fn quota(State(state): State<Ctx>, caller: Caller, request: Request) -> Json<Quota> {
    let who = Requester { user: Some(caller.id().to_string()), ip: client_ip(&request) };
    let policies: Vec<&Policy> =
        if state.ratelimit.enabled() { state.ratelimit.policies().iter().collect() } else { Vec::new() };
    let outcomes = state.ratelimit.check(&policies, &who, false).await;
    let rows = policies
        .iter()
        .zip(outcomes)
        .map(|(p, o)| {
            let decided = match o {
                Outcome::Decided(d) => Some(d),
                Outcome::Unavailable { .. } => None,
            };
            PolicyQuota {
                policy: p.cfg.name.clone(),
                algorithm: p.cfg.algorithm,
                limit: p.cfg.limit,
                window_seconds: p.cfg.window.as_secs_f64(),
                routes: p.cfg.routes.clone(),
                key: p.cfg.key,
                remaining: decided.map(|d| d.remaining),
                reset_seconds: decided.map(|d| secs_ceil(d.reset_ns)),
                unavailable: decided.is_none().then_some(true),
            }
        })
        .collect();
    Json(Quota { enabled: state.ratelimit.enabled(), policies: rows })
}

/// The limiter's routes.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(quota))
}
