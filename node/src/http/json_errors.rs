//! Makes every error answer JSON. Handlers answer with [`ApiError`] already; this layer catches
//! what the framework answers on its own below it (tower-http's and axum's 413, axum's 405, 415,
//! 400/422 extractor rejections, …) and gives those the same `{"error": {"code", "message"}}`
//! body, keeping their headers (`Allow` on a 405, which axum's method router adds).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// A rejection's own body longer than this is not worth quoting.
const MAX_DETAIL_BYTES: usize = 1024;

/// What the layer needs to explain a rejection.
#[derive(Debug, Clone, Copy)]
pub struct JsonErrors {
    /// `http.body_limit_bytes`, named in a 413's message.
    pub body_limit: usize,
}

/// Middleware (`middleware::from_fn_with_state(JsonErrors { .. }, json_errors)`): turns any 4xx
/// or 5xx answer whose body is not JSON into the API's error shape.
pub async fn json_errors(State(ctx): State<JsonErrors>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    if !is_error(response.status()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, MAX_DETAIL_BYTES)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let error = rejection(parts.status, &method, detail.as_deref(), ctx);
    let json = error.into_response();
    // The rejection's body headers no longer fit; its others (`Allow`, `Retry-After`) stay.
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in json.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, json.into_body())
}

fn is_error(status: StatusCode) -> bool {
    status.is_client_error() || status.is_server_error()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// The API error for a framework rejection with `status` and its plain-text body `detail`.
fn rejection(status: StatusCode, method: &Method, detail: Option<&str>, ctx: JsonErrors) -> ApiError {
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than {} bytes (http.body_limit_bytes)", ctx.body_limit)
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("{method} is not allowed on this path; the Allow header lists the methods that are")
        }
        _ => match detail {
            Some(d) => d.to_string(),
            None => status.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
        },
    };
    let error = ApiError::new(status, code(status), message);
    match status {
        // The same promise a handler's 503 makes.
        StatusCode::SERVICE_UNAVAILABLE => ApiError { retry_after: Some(1), ..error },
        _ => error,
    }
}

/// A stable code for each status the framework may answer with on its own.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::INTERNAL_SERVER_ERROR => "internal",
        StatusCode::NOT_IMPLEMENTED => "not_implemented",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "client_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::{DefaultBodyLimit, Json, Path};
    use axum::http::Request;
    use axum::middleware;
    use axum::routing::{get, post};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    const LIMIT: usize = 64;

    /// A router with the framework's own rejections in reach, layered as `http::router` is.
    fn app() -> Router {
        Router::new()
            .route("/bytes", post(|body: Bytes| async move { body.len().to_string() }))
            .route("/json", post(|Json(v): Json<Value>| async move { Json(v) }))
            .route("/num/{n}", get(|Path(n): Path<u64>| async move { n.to_string() }))
            .route("/api", get(|| async { ApiError::new(StatusCode::CONFLICT, "taken", "already there") }))
            .route("/text", get(|| async { "plain and fine" }))
            .route("/teapot", get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }))
            .layer(DefaultBodyLimit::max(LIMIT))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(LIMIT))
            .layer(middleware::from_fn_with_state(JsonErrors { body_limit: LIMIT }, json_errors))
    }

    async fn call(request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = app().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} answered non-JSON {bytes:?}: {e}", parts.status));
        (parts.status, parts.headers, json)
    }

    fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
        Request::builder().method(method).uri(uri).body(body.into()).expect("request")
    }

    fn assert_error(json: &Value, code: &str) {
        assert_eq!(json["error"]["code"], code, "{json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
    }

    #[tokio::test]
    async fn too_large_bodies_are_json_413_with_or_without_a_length() {
        let big = vec![b'x'; LIMIT + 1];
        // Content-Length over the limit: tower-http answers before the handler runs.
        let r = Request::builder()
            .method(Method::POST)
            .uri("/bytes")
            .header(header::CONTENT_LENGTH, big.len())
            .body(Body::from(big.clone()))
            .expect("request");
        let (status, headers, json) = call(r).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_error(&json, "payload_too_large");
        assert!(json["error"]["message"].as_str().is_some_and(|m| m.contains("64 bytes")), "{json}");
        // Streamed without a length: the extractor's buffering hits the limit.
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(big))]);
        let (status, _, json) = call(request(Method::POST, "/bytes", Body::from_stream(stream))).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_error(&json, "payload_too_large");
    }

    #[tokio::test]
    async fn wrong_methods_are_json_405_with_allow() {
        let (status, headers, json) = call(request(Method::DELETE, "/bytes", Body::empty())).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "POST");
        assert_error(&json, "method_not_allowed");
        assert!(json["error"]["message"].as_str().is_some_and(|m| m.starts_with("DELETE")), "{json}");
        let (status, headers, json) = call(request(Method::POST, "/text", Body::empty())).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
        assert_error(&json, "method_not_allowed");
    }

    #[tokio::test]
    async fn extractor_rejections_are_json_and_keep_their_explanation() {
        let (status, _, json) = call(request(Method::POST, "/json", "{}")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "no content type");
        assert_error(&json, "unsupported_media_type");
        let r = Request::builder()
            .method(Method::POST)
            .uri("/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{not json"))
            .expect("request");
        let (status, _, json) = call(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error(&json, "bad_request");
        let (status, _, json) = call(request(Method::GET, "/num/seven", Body::empty())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error(&json, "bad_request");
        assert!(json["error"]["message"].as_str().is_some_and(|m| m.contains("seven")), "axum's reason: {json}");
        let (status, _, json) = call(request(Method::GET, "/teapot", Body::empty())).await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        assert_eq!(json["error"], serde_json::json!({ "code": "client_error", "message": "short and stout" }));
    }

    #[tokio::test]
    async fn json_errors_and_successes_pass_untouched() {
        let (status, _, json) = call(request(Method::GET, "/api", Body::empty())).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(json["error"], serde_json::json!({ "code": "taken", "message": "already there" }));
        let response = app().oneshot(request(Method::GET, "/text", Body::empty())).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        assert_eq!(&body[..], b"plain and fine");
    }

    #[test]
    fn every_framework_status_has_a_stable_code() {
        assert_eq!(code(StatusCode::PAYLOAD_TOO_LARGE), "payload_too_large");
        assert_eq!(code(StatusCode::REQUEST_TIMEOUT), "timeout");
        assert_eq!(code(StatusCode::from_u16(499).expect("status")), "client_error");
        assert_eq!(code(StatusCode::from_u16(599).expect("status")), "server_error");
        let e = rejection(StatusCode::SERVICE_UNAVAILABLE, &Method::GET, None, JsonErrors { body_limit: 1 });
        assert_eq!((e.code, e.message.as_str(), e.retry_after), ("unavailable", "service unavailable", Some(1)));
    }
}
