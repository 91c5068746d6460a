//! Payments' endpoints: `POST /v1/payments`, `GET /v1/payments`, `GET /v1/payments/{id}`,
//! `GET /v1/payments/{id}/events`, `POST /v1/payments/{id}/refunds` (a caller's bearer token),
//! and `POST /v1/payments/webhooks/gateway` (the gateway's signature instead of a token).
//!
//! Bodies are never logged. A body holding a card number is refused before it is parsed into
//! anything that could be stored ([`super::cards`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::state::NewPayment;
use super::view::{self, EventView, PaymentView, RefundView};
use super::{Answered, PayError, cards, mint_id};
use crate::services::Ctx;
use crate::services::api::{ApiError, ErrorBody, call_error};
use crate::services::users::Caller;

/// Longest `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;
/// Most metadata keys.
const MAX_METADATA_KEYS: usize = 20;
/// Longest metadata key and value.
const MAX_METADATA_KEY: usize = 40;
const MAX_METADATA_VALUE: usize = 500;
/// Longest description and payment method token.
const MAX_DESCRIPTION: usize = 1000;
const MAX_TOKEN: usize = 255;
/// History page size without `limit`.
const DEFAULT_PAGE: u32 = 10;

/// `POST /v1/payments` body.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPaymentBody {
    /// Minor units (cents), 1 to `payments.max_amount`.
    #[schema(example = 1999)]
    amount: u64,
    /// An ISO 4217 code `payments.currencies` allows (any case).
    #[schema(example = "usd")]
    currency: String,
    /// A gateway token, `pm_…` (never a card number).
    #[schema(example = "pm_card_visa")]
    payment_method: String,
    /// Free text, at most 1,000 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// At most 20 keys of at most 40 bytes, values at most 500 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v1/payments/{id}/refunds` body.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRefundBody {
    /// Minor units; omitted: all that is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<u64>,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A page of the caller's payments.
#[derive(Serialize, ToSchema)]
pub(crate) struct PaymentPage {
    /// Newest first.
    data: Vec<PaymentView>,
    /// More follow: pass the last id as `starting_after`.
    has_more: bool,
}

/// A payment's state changes.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventList {
    /// Oldest first.
    data: Vec<EventView>,
}

/// What a webhook did.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookAnswer {
    /// `applied`, `unchanged` (replayed or already recorded) or `ignored`.
    outcome: &'static str,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn pay_error(e: PayError) -> ApiError {
    match e {
        e @ PayError::KeyReused => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", e.to_string())
        }
        e @ PayError::KeyInUse => ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_use", e.to_string()),
        e @ PayError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "payment_not_found", e.to_string()),
        e @ PayError::NotRefundable(_) => bad("payment_not_refundable", e.to_string()),
        e @ PayError::RefundExceeds { .. } => bad("refund_exceeds_amount", e.to_string()),
        e @ PayError::BadSignature(_) => bad("invalid_signature", e.to_string()),
        e @ PayError::BadEvent => bad("invalid_event", e.to_string()),
        PayError::Cluster(e) => call_error(e),
        PayError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
    }
}

/// The `Idempotency-Key` header: required, 1 to 255 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Err(bad("idempotency_key_required", "this request needs an Idempotency-Key header"));
    };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| (0x20..=0x7e).contains(&b)) => {
            Ok(k.to_owned())
        }
        _ => Err(bad("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters")),
    }
}

/// Refuses card data anywhere in `body` (raw text and every JSON string, escapes decoded),
/// then parses it. The card number itself is never put in an error, log or record.
fn parse_body<T: serde::de::DeserializeOwned>(ctx: &Ctx, body: &[u8], shape: &str) -> Result<T, ApiError> {
    let refuse = || {
        ctx.payments.metrics().card_data_refused.inc();
        bad(
            "card_data_not_allowed",
            "the body holds what looks like a card number; send a gateway token (payment_method: pm_…) instead",
        )
    };
    if cards::text_has_card(&String::from_utf8_lossy(body)) {
        return Err(refuse());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|_| bad("invalid_body", format!("expected a JSON object {shape}")))?;
    if cards::contains_card_number(&value) {
        return Err(refuse());
    }
    // serde's message can quote a value; it holds no card number (checked above).
    serde_json::from_value(value).map_err(|e| bad("invalid_body", format!("expected {shape}: {e}")))
}

/// The fields of a create, checked; the first bad field names the error.
fn check_payment(cfg: &crate::config::PaymentsSection, b: &NewPaymentBody) -> Result<(), ApiError> {
    if b.amount == 0 || b.amount > cfg.max_amount {
        return Err(bad("invalid_amount", format!("amount must be 1 to {} (minor units)", cfg.max_amount)));
    }
    let currency = b.currency.to_ascii_lowercase();
    if !cfg.currencies.contains(&currency) {
        return Err(bad("invalid_currency", format!("currency must be one of {}", cfg.currencies.join(", "))));
    }
    let pm = &b.payment_method;
    if !pm.starts_with("pm_") || pm.len() > MAX_TOKEN || !pm.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return Err(bad("invalid_payment_method", "payment_method must be a gateway token, pm_…"));
    }
    if b.description.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION) {
        return Err(bad("invalid_description", format!("description is at most {MAX_DESCRIPTION} bytes")));
    }
    if let Some(m) = &b.metadata {
        if m.len() > MAX_METADATA_KEYS {
            return Err(bad("invalid_metadata", format!("metadata has at most {MAX_METADATA_KEYS} keys")));
        }
        if m.iter().any(|(k, v)| k.is_empty() || k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE) {
            return Err(bad(
                "invalid_metadata",
                format!("metadata keys are 1 to {MAX_METADATA_KEY} bytes, values at most {MAX_METADATA_VALUE}"),
            ));
        }
    }
    Ok(())
}

/// Hash of the route and the parsed parameters: what "the same parameters" means.
fn fingerprint<T: Serialize>(route: &str, params: &T) -> String {
    let canonical = serde_json::to_string(params).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{route}\n{canonical}").as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn answer(a: Answered) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, a.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if a.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[utoipa::path(
    post,
    path = "/v1/payments",
    operation_id = "create_payment",
    tag = "payments",
    request_body(content = NewPaymentBody, content_type = "application/json"),
    params(("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters, scoped to \
                                                                the caller, kept 24 h")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Charged (`succeeded`) or `requires_action`", body = PaymentView),
        (status = 202, description = "`pending`: the gateway's answer is not known yet; the reconciler finishes \
                                      it", body = PaymentView),
        (status = 402, description = "Declined (`failed`, with `failure_code`); final", body = PaymentView),
        (status = 400, description = "`idempotency_key_required`, `invalid_idempotency_key`, \
                                      `card_data_not_allowed`, `invalid_body`, `invalid_amount`, \
                                      `invalid_currency`, `invalid_payment_method`, `invalid_metadata`, \
                                      `invalid_description`; nothing stored", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_use`: the key's first request is still running",
         body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key was used with other parameters",
         body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut b: NewPaymentBody = parse_body(&ctx, &body, "{amount, currency, payment_method, description?, metadata?}")?;
    check_payment(ctx.payments.config(), &b)?;
    b.currency = b.currency.to_ascii_lowercase();
    let fingerprint = fingerprint("POST /v1/payments", &b);
    let new = NewPayment {
        id: mint_id("pay"),
        amount: b.amount,
        currency: b.currency,
        payment_method: b.payment_method,
        description: b.description,
        metadata: b.metadata.unwrap_or_default().into_iter().collect(),
    };
    let answered = ctx.payments.create(caller.id(), &key, fingerprint, new).await.map_err(pay_error)?;
    Ok(answer(answered))
}

#[utoipa::path(
    post,
    path = "/v1/payments/{id}/refunds",
    operation_id = "refund_payment",
    tag = "payments",
    request_body(content = NewRefundBody, content_type = "application/json"),
    params(
        ("id" = String, Path, description = "The payment"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Refunded", body = RefundView),
        (status = 202, description = "`pending` at the gateway (the amount is reserved)", body = RefundView),
        (status = 402, description = "The gateway refused the refund (`failed`)", body = RefundView),
        (status = 400, description = "`refund_exceeds_amount`, `payment_not_refundable`, `invalid_amount`, \
                                      `invalid_reason`, `idempotency_key_required`, `card_data_not_allowed`, \
                                      `invalid_body`", body = ErrorBody),
        (status = 404, description = "`payment_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_use`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn refund(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let b: NewRefundBody = parse_body(&ctx, body, "{amount?, reason?}")?;
    if b.amount == Some(0) {
        return Err(bad("invalid_amount", "amount must be at least 1 (minor units)"));
    }
    if b.reason.as_deref().is_some_and(|r| !matches!(r, "duplicate" | "fraudulent" | "requested_by_customer")) {
        return Err(bad("invalid_reason", "reason is one of duplicate, fraudulent, requested_by_customer"));
    }
    let fingerprint = fingerprint(&format!("POST /v1/payments/{id}/refunds"), &b);
    let answered =
        ctx.payments.refund(caller.id(), &key, fingerprint, &id, b.amount, b.reason).await.map_err(pay_error)?;
    Ok(answer(answered))
}

#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    operation_id = "get_payment",
    tag = "payments",
    params(("id" = String, Path, description = "The payment")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment with its refunds (linearizable)", body = PaymentView),
        (status = 404, description = "`payment_not_found` (also for another caller's payment)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    let (p, refunds) = ctx.payments.get(caller.id(), &id).await.map_err(pay_error)?;
    Ok(Json(view::payment(&p, Some(&refunds))))
}

#[utoipa::path(
    get,
    path = "/v1/payments",
    operation_id = "list_payments",
    tag = "payments",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, default 10"),
        ("starting_after" = Option<String>, Query, description = "The last id of the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's payments, newest first", body = PaymentPage),
        (status = 400, description = "`invalid_limit`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<PaymentPage>, ApiError> {
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for (k, v) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match &*k {
            "limit" => match v.parse::<u32>() {
                Ok(n) if (1..=super::state::MAX_PAGE).contains(&n) => limit = n,
                _ => return Err(bad("invalid_limit", "limit is 1 to 100")),
            },
            "starting_after" => after = Some(v.into_owned()),
            _ => {}
        }
    }
    let (payments, has_more) = ctx.payments.list(caller.id(), after, limit).await.map_err(pay_error)?;
    Ok(Json(PaymentPage { data: payments.iter().map(|p| view::payment(p, None)).collect(), has_more }))
}

#[utoipa::path(
    get,
    path = "/v1/payments/{id}/events",
    operation_id = "list_payment_events",
    tag = "payments",
    params(("id" = String, Path, description = "The payment")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Its state changes, oldest first", body = EventList),
        (status = 404, description = "`payment_not_found`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`", body = ErrorBody),
    )
)]
pub(crate) async fn events(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EventList>, ApiError> {
    let events = ctx.payments.events(caller.id(), &id).await.map_err(pay_error)?;
    Ok(Json(EventList { data: events.iter().map(view::event).collect() }))
}

#[utoipa::path(
    post,
    path = "/v1/payments/webhooks/gateway",
    operation_id = "payments_gateway_webhook",
    tag = "payments",
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA-256 of \
                                                                 \"t.payload\" with payments.webhook_secret>")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Verified: `applied`, `unchanged` (a replay, or already recorded) or \
                                      `ignored`", body = WebhookAnswer),
        (status = 400, description = "`invalid_signature` (nothing changed) or `invalid_event`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `partition_unavailable` or `starting`: the gateway retries",
         body = ErrorBody),
    )
)]
pub(crate) async fn webhook(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let metrics = ctx.payments.metrics();
    match ctx.payments.webhook(signature, &body).await {
        Ok(outcome) => {
            metrics.webhooks.with_label_values(&[outcome.as_str()]).inc();
            Ok(Json(WebhookAnswer { outcome: outcome.as_str() }).into_response())
        }
        Err(e) => {
            let label = if matches!(e, PayError::BadSignature(_)) { "bad_signature" } else { "failed" };
            metrics.webhooks.with_label_values(&[label]).inc();
            Err(pay_error(e))
        }
    }
}

/// Payments' routes.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
        .routes(routes!(events))
        .routes(routes!(refund))
        .routes(routes!(webhook))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(amount: u64, currency: &str, pm: &str) -> NewPaymentBody {
        NewPaymentBody {
            amount,
            currency: currency.into(),
            payment_method: pm.into(),
            description: None,
            metadata: None,
        }
    }

    #[test]
    fn a_bad_field_is_named_by_the_error_code() {
        let cfg = crate::config::PaymentsSection::default();
        let code = |b: NewPaymentBody| check_payment(&cfg, &b).err().map(|e| e.code);
        assert_eq!(code(body(500, "USD", "pm_card_visa")), None);
        assert_eq!(code(body(0, "usd", "pm_card_visa")), Some("invalid_amount"));
        assert_eq!(code(body(cfg.max_amount + 1, "usd", "pm_card_visa")), Some("invalid_amount"));
        assert_eq!(code(body(5, "xxx", "pm_card_visa")), Some("invalid_currency"));
        assert_eq!(code(body(5, "usd", "card_visa")), Some("invalid_payment_method"));
        assert_eq!(code(body(5, "usd", "pm_card visa")), Some("invalid_payment_method"));
        let mut many = body(5, "usd", "pm_card_visa");
        many.metadata = Some((0..21).map(|n| (format!("k{n}"), "v".to_owned())).collect());
        assert_eq!(code(many), Some("invalid_metadata"));
    }

    #[test]
    fn keys_are_required_and_printable() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).err().map(|e| e.code), Some("idempotency_key_required"));
        h.insert("idempotency-key", HeaderValue::from_static("k-1"));
        assert_eq!(idempotency_key(&h).ok().as_deref(), Some("k-1"));
        h.insert("idempotency-key", HeaderValue::from_str(&"k".repeat(256)).expect("value"));
        assert_eq!(idempotency_key(&h).err().map(|e| e.code), Some("invalid_idempotency_key"));
    }

    #[test]
    fn the_fingerprint_is_the_same_for_the_same_parameters_only() {
        let a = fingerprint("POST /v1/payments", &body(5, "usd", "pm_card_visa"));
        assert_eq!(a, fingerprint("POST /v1/payments", &body(5, "usd", "pm_card_visa")));
        assert_ne!(a, fingerprint("POST /v1/payments", &body(6, "usd", "pm_card_visa")));
    }
}
