//! The HTTP server (axum): health, readiness, metrics, cluster view, the test-only fault switch,
//! and every service's routes (from [`crate::services`]) behind the rate limiter.
//!
//! Handlers are thin: they read shared views ([`Membership`], the metrics registry) or ask the
//! supervisor; they never touch storage or peers directly. Every response, errors included, is
//! counted by route template and status class. Every route is declared with its OpenAPI
//! description ([`openapi`]) and added only in [`routes`].

pub mod actor;
mod json_errors;
pub mod metrics;
pub mod openapi;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::NodeId;
use crate::membership::{MemberView, Membership};
use crate::placement::Layout;
use crate::raft::view::{GroupView, ReplicaView};
use crate::router::RouterSlot;
use crate::services::Ctx;
pub use crate::services::api::{ApiError, ErrorBody};
use crate::util::{FaultInjector, InjectError};

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// This node's id.
    pub node_id: NodeId,
    /// Members and their health.
    pub membership: Arc<Membership>,
    /// The Raft groups hosted here (empty while they start).
    pub raft: RouterSlot,
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

/// Every route with its OpenAPI description. Routes are added here and only here, through
/// `routes!`, which takes method and path from the handler's `#[utoipa::path]`: a route cannot
/// exist without its description (a test compares the two).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(cluster))
        .routes(routes!(inject_fault))
        .routes(routes!(inject_storage_fault))
}

/// The description of every route: this server's own and every service's.
pub fn spec() -> utoipa::openapi::OpenApi {
    let (_, mut api) = routes().split_for_parts();
    let (_, services) = crate::services::routes().split_for_parts();
    api.merge(services);
    api
}

/// Builds the router with its middleware.
pub fn router(state: AppState, body_limit: usize, max_in_flight: usize) -> Router {
    let (own, _) = routes().split_for_parts();
    let (services, _) = crate::services::routes().split_for_parts();
    own.merge(services.with_state(Arc::clone(&state.services)))
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

/// `{"status": "ok"}` and `{"status": "ready"}`.
#[derive(Serialize, ToSchema)]
struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "The process runs", body = Status, example = json!({ "status": "ok" })))
)]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Joined, and the meta group has a leader", body = Status,
         example = json!({ "status": "ready" })),
        (status = 503, description = "Not ready: `not_joined`, `starting` or `no_meta_leader`", body = ErrorBody),
    )
)]
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
        Some(_) => Json(Status { status: "ready" }).into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String,
               content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&state.registry))
        .into_response()
}

/// `GET /v1/cluster`.
#[derive(Serialize, ToSchema)]
struct ClusterView {
    /// The placement layout from meta state; `null` until this node has it.
    layout: Option<Layout>,
    /// Members as this node's failure detector sees them.
    members: Vec<ClusterMember>,
    /// The meta group (group 0).
    meta: MetaView,
    /// The answering node.
    #[schema(value_type = u64)]
    node_id: NodeId,
    /// Every partition of the layout (role `none` where not hosted here).
    partitions: Vec<GroupView>,
}

/// A member, plus whether meta state declared it dead.
#[derive(Serialize, ToSchema)]
struct ClusterMember {
    #[serde(flatten)]
    member: MemberView,
    /// Declared dead by the placement driver.
    dead: bool,
}

/// The meta group as this node sees it (zeros while its Raft groups start).
#[derive(Serialize, ToSchema, Default)]
struct MetaView {
    applied_index: u64,
    commit_index: u64,
    #[schema(value_type = Option<u64>)]
    leader: Option<NodeId>,
    #[schema(value_type = Vec<u64>)]
    learners: Vec<NodeId>,
    #[schema(value_type = Vec<u64>)]
    replicas: Vec<NodeId>,
    /// Per-replica progress; only on the meta leader.
    replication: Option<Vec<ReplicaView>>,
    term: u64,
}

#[utoipa::path(
    get,
    path = "/v1/cluster",
    operation_id = "cluster",
    tag = "cluster",
    responses((status = 200, description = "Members, the meta group, the layout and every partition", body = ClusterView))
)]
async fn cluster(State(state): State<AppState>) -> Json<ClusterView> {
    let groups = state.raft.get().map(|r| r.view()).unwrap_or_default();
    let (meta, partitions): (Vec<GroupView>, Vec<GroupView>) = groups.into_iter().partition(|g| g.id == 0);
    let meta = meta
        .into_iter()
        .next()
        .map(|g| MetaView {
            applied_index: g.applied_index,
            commit_index: g.commit_index,
            leader: g.leader,
            learners: g.learners,
            replicas: g.replicas,
            replication: g.replication,
            term: g.term,
        })
        .unwrap_or_default();
    let placement = state.raft.get().and_then(|r| r.placement());
    // Members as the failure detector sees them, plus whether meta state declared them dead.
    let members = state
        .membership
        .view()
        .into_iter()
        .map(|m| {
            let dead = placement.as_ref().and_then(|p| p.members.get(&m.id)).is_some_and(|r| r.dead);
            ClusterMember { member: m, dead }
        })
        .collect();
    Json(ClusterView { layout: placement.map(|p| p.layout), members, meta, node_id: state.node_id, partitions })
}

/// An actor made to fail.
#[derive(Serialize, ToSchema)]
struct ActorFault {
    #[schema(example = "raft")]
    actor: &'static str,
    injected: bool,
}

/// A Raft group whose next write on this node fails.
#[derive(Serialize, ToSchema)]
struct StorageFault {
    group: u64,
    injected: bool,
}

#[utoipa::path(
    post,
    path = "/v1/testing/faults/{actor}",
    operation_id = "inject_fault",
    tag = "testing",
    params(("actor" = String, Path, description = "`transport`, `membership`, `raft`, `services` or `http`")),
    responses(
        (status = 202, description = "The actor fails now; its supervisor restarts it", body = ActorFault),
        (status = 403, description = "`fault_injection_disabled`", body = ErrorBody),
        (status = 404, description = "No actor of that name", body = ErrorBody),
    )
)]
async fn inject_fault(State(state): State<AppState>, Path(actor): Path<String>) -> Result<Response, ApiError> {
    fault_injection_enabled(&state)?;
    let name = state.faults.inject(&actor).map_err(|e| match e {
        InjectError::UnknownActor => {
            ApiError::not_found(format!("no actor named `{actor}`; known actors: {}", state.faults.actors().join(", ")))
        }
        InjectError::Stopped => ApiError::unavailable("shutting_down", e.to_string(), 1),
    })?;
    Ok((StatusCode::ACCEPTED, Json(ActorFault { actor: name, injected: true })).into_response())
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
#[utoipa::path(
    post,
    path = "/v1/testing/faults/storage/{group}",
    operation_id = "inject_storage_fault",
    tag = "testing",
    params(("group" = String, Path, description = "A Raft group id hosted here (0 is meta)")),
    responses(
        (status = 202, description = "This node's next write of the group fails", body = StorageFault),
        (status = 400, description = "`invalid_group`: not a group id", body = ErrorBody),
        (status = 403, description = "`fault_injection_disabled`", body = ErrorBody),
        (status = 404, description = "The group is not hosted on this node", body = ErrorBody),
    )
)]
async fn inject_storage_fault(State(state): State<AppState>, Path(group): Path<String>) -> Result<Response, ApiError> {
    fault_injection_enabled(&state)?;
    let group: u64 = group.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_group", format!("`{group}` is not a group id (0 is meta)"))
    })?;
    let router =
        state.raft.get().ok_or_else(|| ApiError::unavailable("starting", "the raft groups are starting", 1))?;
    let host = router.host();
    if !host.hosts(group) {
        return Err(ApiError::not_found(format!("group {group} is not hosted on this node")));
    }
    host.inject_storage_fault(group);
    Ok((StatusCode::ACCEPTED, Json(StorageFault { group, injected: true })).into_response())
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint")
}
