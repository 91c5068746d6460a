//! The HTTP server (axum): health, readiness, metrics, cluster view, the test-only fault switch,
//! and every service's routes (from [`crate::services`]) behind the rate limiter.
//!
//! Handlers are thin: they read shared views ([`Membership`], the metrics registry) or ask the
//! supervisor; they never touch storage or peers directly. Every response, errors included, is
//! counted by route template and status class.

pub mod actor;
mod cluster_view;
mod json_errors;
pub mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::NodeId;
use crate::membership::Membership;
use crate::raft::actor::RaftSlot;
use crate::services::Ctx;
pub use crate::services::api::ApiError;
use crate::util::{FaultInjector, InjectError};

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// This node's id.
    pub node_id: NodeId,
    /// Members and their health.
    pub membership: Arc<Membership>,
    /// The Raft groups hosted here (empty while they start).
    pub raft: RaftSlot,
    /// The node's registry, behind `/metrics`.
    pub registry: prometheus::Registry,
    /// The HTTP server's instruments.
    pub http_metrics: metrics::HttpMetrics,
    /// Makes actors fail (test-only fault injection).
    pub faults: Arc<dyn FaultInjector>,
    /// `testing.fault_injection`.
    pub fault_injection: bool,
    /// `http.request_timeout`.
    pub request_timeout: Duration,
    /// Every service (the state of their routes).
    pub services: Ctx,
}

/// Builds the router with its middleware.
pub fn router(state: AppState, body_limit: usize, max_in_flight: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/testing/faults/{actor}", post(inject_fault))
        .route("/v1/testing/faults/storage/{group}", post(inject_storage_fault))
        .merge(state.services.routes().with_state(Arc::clone(&state.services)))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(Arc::clone(&state.services), crate::services::ratelimit::http::limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max_in_flight))
        .layer(middleware::from_fn_with_state(json_errors::JsonErrors { body_limit }, json_errors::json_errors))
        .with_state(state)
}

/// Counts and times every request by route template, and enforces the request timeout.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let response = match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable(
            "timeout",
            format!("the request did not finish within {:?}", state.request_timeout),
            1,
        )
        .into_response(),
    };
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let labels = [route.as_str(), method, class];
    state.http_metrics.requests.with_label_values(&labels).inc();
    state.http_metrics.duration.with_label_values(&labels).observe(start.elapsed().as_secs_f64());
    response
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if !state.membership.is_joined() {
        return ApiError::unavailable("not_joined", "this node has not joined the cluster yet", 1).into_response();
    }
    match state.raft.get() {
        None => ApiError::unavailable("starting", "the raft groups are starting", 1).into_response(),
        Some(raft) if !raft.meta_has_leader() => {
            ApiError::unavailable("no_meta_leader", "the meta group has no leader (no quorum reachable)", 1)
                .into_response()
        }
        Some(_) => Json(json!({ "status": "ready" })).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&state.registry))
        .into_response()
}

async fn cluster(State(state): State<AppState>) -> Response {
    let groups = state.raft.get().map(|r| r.view()).unwrap_or_default();
    let meta = groups
        .iter()
        .find(|g| g.id == 0)
        .map(|g| {
            json!({
                "leader": g.leader, "term": g.term, "commit_index": g.commit_index,
                "applied_index": g.applied_index, "replicas": g.replicas, "learners": g.learners,
                "replication": g.replication,
            })
        })
        .unwrap_or_else(|| json!({ "leader": null, "term": 0, "commit_index": 0, "applied_index": 0, "replicas": [] }));
    let partitions: Vec<_> = groups.iter().filter(|g| g.id > 0).collect();
    let placement = state.raft.get().and_then(|r| r.placement());
    // Members as the failure detector sees them, plus whether meta state declared them dead.
    let members: Vec<Value> = state
        .membership
        .view()
        .into_iter()
        .map(|m| {
            let dead = placement.as_ref().and_then(|p| p.members.get(&m.id)).is_some_and(|r| r.dead);
            let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("dead".into(), Value::Bool(dead));
            }
            v
        })
        .collect();
    Json(cluster_view::ClusterBody {
        node_id: state.node_id,
        members,
        meta,
        layout: placement.map(|p| p.layout),
        partitions,
    })
    .into_response()
}

async fn inject_fault(State(state): State<AppState>, Path(actor): Path<String>) -> Result<Response, ApiError> {
    fault_injection_enabled(&state)?;
    let name = state.faults.inject(&actor).map_err(|e| match e {
        InjectError::UnknownActor => {
            ApiError::not_found(format!("no actor named `{actor}`; known actors: {}", state.faults.actors().join(", ")))
        }
        InjectError::Stopped => ApiError::unavailable("shutting_down", e.to_string(), 1),
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "actor": name, "injected": true }))).into_response())
}

fn fault_injection_enabled(state: &AppState) -> Result<(), ApiError> {
    if state.fault_injection {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "fault_injection_disabled",
        "fault injection is off; set testing.fault_injection = true to use it",
    ))
}

/// Makes this node's next write for one Raft group fail, as a broken disk would; the group's
/// Raft core stops with a fatal error and the Raft actor restarts that group from storage.
async fn inject_storage_fault(State(state): State<AppState>, Path(group): Path<String>) -> Result<Response, ApiError> {
    fault_injection_enabled(&state)?;
    let group: u64 = group.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_group", format!("`{group}` is not a group id (0 is meta)"))
    })?;
    let host = state.raft.get().ok_or_else(|| ApiError::unavailable("starting", "the raft groups are starting", 1))?;
    if !host.hosts(group) {
        return Err(ApiError::not_found(format!("group {group} is not hosted on this node")));
    }
    host.inject_storage_fault(group);
    Ok((StatusCode::ACCEPTED, Json(json!({ "group": group, "injected": true }))).into_response())
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint")
}
