//! The API's JSON shapes of payments and refunds. The state machine renders the stored answer of
//! an idempotency key with them when an outcome becomes final, so a replay answers exactly what
//! the first request would have (and they must stay deterministic: no clocks, no maps).

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::state::{EventRec, PaymentRec, RefundRec};

/// Unix milliseconds as RFC 3339 (milliseconds, UTC).
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A payment as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// `pay_…`.
    #[schema(example = "pay_0190f3c2a1b2c3d4e5f60718")]
    pub id: String,
    /// `succeeded`, `failed`, `pending` or `requires_action`.
    #[schema(example = "succeeded")]
    pub status: &'static str,
    /// Minor units.
    pub amount: u64,
    /// Refunded so far, minor units.
    pub amount_refunded: u64,
    /// Lowercase ISO 4217.
    #[schema(example = "usd")]
    pub currency: String,
    /// RFC 3339, milliseconds, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The caller's keys and values.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Why it failed (`card_declined`, `gateway_unreachable`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    /// Why it failed, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Its refunds, oldest first (only on `GET /v1/payments/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundView>>,
}

/// A refund as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    /// `re_…`.
    pub id: String,
    /// Its payment.
    pub payment_id: String,
    /// Minor units.
    pub amount: u64,
    /// `pending`, `succeeded` or `failed`.
    pub status: &'static str,
    /// Why (`duplicate`, `fraudulent`, `requested_by_customer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339, milliseconds, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
}

/// One state change as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Dense from 1.
    pub seq: u32,
    /// `payment.pending`, `payment.succeeded`, `refund.succeeded`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339, milliseconds, UTC.
    pub at: String,
    /// `api`, `reconciler` or `webhook`.
    pub source: &'static str,
    /// The refund it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
}

/// `p` as the API shows it (with `refunds` when given some).
pub fn payment(p: &PaymentRec, refunds: Option<&[RefundRec]>) -> PaymentView {
    let metadata = p.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    PaymentView {
        id: p.id.clone(),
        status: p.status.as_str(),
        amount: p.amount,
        amount_refunded: p.amount_refunded,
        currency: p.currency.clone(),
        created_at: rfc3339_ms(p.created_at),
        description: p.description.clone(),
        metadata: Value::Object(metadata),
        failure_code: p.failure_code.clone(),
        failure_message: p.failure_message.clone(),
        refunds: refunds.map(|rs| rs.iter().map(refund).collect()),
    }
}

/// `r` as the API shows it.
pub fn refund(r: &RefundRec) -> RefundView {
    RefundView {
        id: r.id.clone(),
        payment_id: r.payment_id.clone(),
        amount: r.amount,
        status: r.status.as_str(),
        reason: r.reason.clone(),
        created_at: rfc3339_ms(r.created_at),
        failure_code: r.failure_code.clone(),
    }
}

/// `e` as the API shows it.
pub fn event(e: &EventRec) -> EventView {
    EventView {
        seq: e.seq,
        kind: e.kind.clone(),
        at: rfc3339_ms(e.at),
        source: e.source.as_str(),
        refund_id: e.refund_id.clone(),
    }
}

/// The JSON body answering a create of `p` (no refunds listed).
pub fn payment_json(p: &PaymentRec) -> String {
    serde_json::to_string(&payment(p, None)).unwrap_or_default()
}

/// The JSON body answering a refund create.
pub fn refund_json(r: &RefundRec) -> String {
    serde_json::to_string(&refund(r)).unwrap_or_default()
}
