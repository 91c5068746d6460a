//! The OpenAPI 3.1 description of the HTTP API, served at `GET /v1/openapi.json`.
//!
//! Each route is declared once, by `#[utoipa::path]` next to its handler, and added to the router
//! only through [`super::routes`] and [`crate::services::routes`] (`utoipa_axum` `OpenApiRouter`s),
//! so the router and this
//! description come from the same list. This module adds what no single handler owns: the info
//! block, tags, the bearer scheme, and the answers the middleware may give on any route (503
//! `timeout` with `Retry-After`, 401 where a token is taken, and 429 plus the rate-limit headers
//! where the default `[ratelimit]` policies apply).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};

use crate::config::RateLimitSection;
use crate::services::api::ErrorBody;
use crate::services::ratelimit::Policy;

/// Name of the bearer-token security scheme (`Authorization: Bearer <token>`).
pub const BEARER: &str = "bearer";

/// The parts of the description that are not any one route's.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shoal",
        description = "Every node serves the whole API. Errors are `{\"error\": {\"code\", \"message\"}}`; \
                       503 answers carry `Retry-After`; `/v1/*` answers carry the rate-limit headers.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody)),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this description"),
        (name = "cluster", description = "Members, Raft groups and placement as this node sees them"),
        (name = "users", description = "Sign-up and bearer tokens"),
        (name = "counters", description = "Linearizable counters"),
        (name = "urls", description = "The URL shortener and its redirects"),
        (name = "ratelimit", description = "The caller's quota"),
        (name = "chat", description = "One-on-one conversations: send, history, conversation list, read cursors"),
        (name = "objects", description = "S3 keys for the S3 endpoint (object storage; the S3 API itself is on `s3.listen`)"),
        (name = "testing", description = "Fault injection; 403 unless `testing.fault_injection = true`"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A token from `POST /v1/users` (shown once), or the configured admin token"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// The description as served: built once from [`super::spec`].
static SPEC: LazyLock<String> = LazyLock::new(|| {
    let mut api = super::spec();
    finish(&mut api);
    // The description is built from types, so it always serializes.
    let mut json = serde_json::to_value(&api).unwrap_or_default();
    unsigned_without_format(&mut json);
    json.to_string()
});

/// Drops the format of unsigned integers (utoipa writes `u-int64`, which no tool knows), leaving
/// `integer` with `minimum: 0`: the registered formats are signed, and `int64` would cap a u64
/// (counter values, `by`) at 2^63 - 1.
fn unsigned_without_format(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("format").and_then(|f| f.as_str()).is_some_and(|f| f.starts_with("u-int") || f.starts_with("uint"))
            {
                o.remove("format");
            }
            o.values_mut().for_each(unsigned_without_format);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(unsigned_without_format),
        _ => {}
    }
}

/// The OpenAPI description every node serves.
pub fn spec() -> &'static str {
    &SPEC
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "This description (OpenAPI 3.1)", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], spec()).into_response()
}

/// Adds the middleware's answers to every operation of `api` (see the module docs).
pub(super) fn finish(api: &mut utoipa::openapi::OpenApi) {
    let policies: Vec<Policy> = RateLimitSection::default().policies.iter().map(Policy::new).collect();
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    for (path, item) in api.paths.paths.iter_mut() {
        let operations = [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(op) = operation.as_mut() else { continue };
            if op.security.iter().flatten().any(|s| *s == bearer) {
                add_error(op, 401, "No bearer token, or not a valid one (`missing_token`, `invalid_token`)");
            }
            let limited = policies.iter().any(|p| p.covers(method, path));
            if limited {
                add_error(op, 429, "Rate limited (`rate_limited`); `Retry-After` says when to try again");
            }
            add_error(
                op,
                503,
                "Not answered in time (`timeout`), or the cluster cannot serve it now; retry after `Retry-After`",
            );
            add_headers(op, limited);
        }
    }
}

/// Adds an error answer unless the handler documents that status itself.
fn add_error(op: &mut Operation, status: u16, description: &str) {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    let response = ResponseBuilder::new().description(description).content("application/json", content).build();
    op.responses.responses.entry(status.to_string()).or_insert(RefOr::T(response));
}

/// `Retry-After` on 429 and 503, and the rate-limit headers on every answer of a limited route.
fn add_headers(op: &mut Operation, limited: bool) {
    let integer = |description: &str| {
        HeaderBuilder::new().schema(Some(u64::schema())).description(Some(description.to_string())).build()
    };
    let string = |description: &str| {
        HeaderBuilder::new().schema(Some(String::schema())).description(Some(description.to_string())).build()
    };
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        if status == "429" || status == "503" {
            response
                .headers
                .entry("Retry-After".into())
                .or_insert(RefOr::T(integer("Seconds to wait before retrying")));
        }
        if limited {
            let headers = [
                ("X-RateLimit-Limit", integer("Requests allowed per window by the policy closest to refusing")),
                ("X-RateLimit-Remaining", integer("Requests left now (absent when no owner answered)")),
                ("X-RateLimit-Reset", integer("Seconds until the quota is whole again")),
                ("RateLimit-Policy", string("Every covering policy: `\"name\";q=limit;w=seconds`")),
                ("RateLimit", string("The policy closest to refusing: `\"name\";r=remaining;t=seconds`")),
            ];
            for (name, h) in headers {
                response.headers.entry(name.into()).or_insert(RefOr::T(h));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn spec_json() -> serde_json::Value {
        serde_json::from_str(spec()).expect("the served description is JSON")
    }

    /// `(path, method)` of every route the axum router serves, read from its `Debug` output
    /// (axum has no public route listing). HEAD is implied by GET and left out.
    fn router_routes() -> BTreeSet<(String, String)> {
        let (own, _) = super::super::routes().split_for_parts();
        let (services, _) = crate::services::routes().split_for_parts();
        let mut routes = routes_in(&format!("{own:?}"));
        routes.extend(routes_in(&format!("{services:?}")));
        routes
    }

    /// `(path, method)` of every route in a router's `Debug` output.
    fn routes_in(debug: &str) -> BTreeSet<(String, String)> {
        // Only the path router; the fallback router lists axum's private catch-all paths.
        let debug = debug.split("fallback_router:").next().unwrap_or_default();
        let quoted_after = |s: &str, marker: &str| -> Option<String> {
            let rest = &s[s.find(marker)? + marker.len()..];
            Some(rest[..rest.find('"')?].to_string())
        };
        // `paths: {RouteId(3): "/v1/users", ...}` and `RouteId(3): MethodRouter(... allow_header: Bytes(b"POST") ...)`.
        let (routes_part, paths_part) = debug.split_once("paths: {").expect("axum's Debug lists the paths");
        let mut path_of = std::collections::HashMap::new();
        for entry in paths_part.split("RouteId(").skip(1) {
            let (id, rest) = entry.split_once(')').expect("RouteId(N)");
            path_of.insert(id.to_string(), quoted_after(rest, "\"").expect("a quoted path"));
        }
        let mut routes = BTreeSet::new();
        for entry in routes_part.split("RouteId(").skip(1) {
            let (id, rest) = entry.split_once(')').expect("RouteId(N)");
            let allow = quoted_after(rest, "allow_header: Bytes(b\"").expect("an Allow header per route");
            for method in allow.split(',').filter(|m| *m != "HEAD") {
                routes.insert((path_of[id].clone(), method.to_string()));
            }
        }
        routes
    }

    fn spec_routes() -> BTreeSet<(String, String)> {
        let spec = spec_json();
        let mut routes = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                routes.insert((path.clone(), method.to_ascii_uppercase()));
            }
        }
        routes
    }

    #[test]
    fn every_route_is_described_and_every_description_is_routed() {
        let router = router_routes();
        assert!(router.contains(&("/healthz".to_string(), "GET".to_string())), "parsed {router:?}");
        assert!(router.len() >= 15, "parsed only {router:?}");
        assert_eq!(router, spec_routes());
    }

    /// Regression (schemathesis): unsigned 64-bit values were described as `int64`, so values
    /// above 2^63 - 1, which the API takes and returns (`by`, counter values), broke the schema.
    #[test]
    fn u64_values_are_unbounded_non_negative_integers() {
        let spec = spec_json();
        let by = &spec["components"]["schemas"]["IncrementBody"]["properties"]["by"];
        assert_eq!((&by["type"], &by["minimum"], &by["format"]), (&"integer".into(), &1.into(), &Value::Null));
        let value = &spec["components"]["schemas"]["CounterValue"]["properties"]["value"];
        assert_eq!((&value["type"], &value["minimum"], &value["format"]), (&"integer".into(), &0.into(), &Value::Null));
        let text = spec.to_string();
        assert!(!text.contains("int64") && !text.contains("int32"), "no integer carries a signed format");
    }

    /// Regression (schemathesis): `Layout.groups` was described with integer keys, which no JSON
    /// object has, so every `GET /v1/cluster` answer failed its schema.
    #[test]
    fn object_keys_are_described_as_strings() {
        fn walk(v: &serde_json::Value, at: &str) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(names) = o.get("propertyNames") {
                        assert!(names.get("type").is_none_or(|t| t == "string"), "{at}: propertyNames {names}");
                    }
                    for (k, v) in o {
                        walk(v, &format!("{at}/{k}"));
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, at)),
                _ => {}
            }
        }
        let spec = spec_json();
        assert!(spec["components"]["schemas"]["Layout"]["properties"]["groups"].is_object());
        walk(&spec, "");
    }

    #[test]
    fn operation_ids_are_unique_and_every_operation_has_a_tag() {
        let spec = spec_json();
        let mut ids = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(ids.insert(id.to_string()), "{method} {path}: operationId `{id}` is used twice");
                assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path} has no tag");
            }
        }
    }

    #[test]
    fn middleware_answers_are_documented() {
        let spec = spec_json();
        let op = |path: &str, method: &str| spec["paths"][path][method].clone();
        // Authenticated and rate-limited.
        let increment = op("/v1/counters/{name}/increment", "post");
        for status in ["401", "429", "503"] {
            assert!(increment["responses"][status].is_object(), "increment lacks {status}");
        }
        assert!(increment["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert!(increment["responses"]["200"]["headers"]["X-RateLimit-Remaining"].is_object());
        assert_eq!(increment["security"], serde_json::json!([{ BEARER: [] }]));
        // Neither authenticated nor limited: no 401 or 429, but the timeout's 503.
        for path in ["/healthz", "/v1/openapi.json"] {
            let get = op(path, "get");
            assert!(get["responses"]["401"].is_null() && get["responses"]["429"].is_null(), "{path}");
            assert!(get["responses"]["503"]["headers"]["Retry-After"].is_object(), "{path}");
            assert!(get["responses"]["200"]["headers"]["X-RateLimit-Limit"].is_null(), "{path}");
        }
        // The redirect is limited per client IP and says where it goes.
        let redirect = op("/{code}", "get");
        assert!(redirect["responses"]["302"]["headers"]["Location"].is_object());
        assert!(redirect["responses"]["429"].is_object());
        assert!(spec["components"]["securitySchemes"][BEARER]["scheme"] == "bearer");
    }
}
