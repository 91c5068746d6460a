//! The sandbox's HTTP face: Stripe's endpoints (form-encoded bodies, `Authorization: Bearer`,
//! `Idempotency-Key`, Stripe's JSON shapes) and the `/_sandbox/…` control endpoints, which take
//! the same `Authorization: Bearer <api key>` (401 otherwise).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::Sandbox;
use super::ledger::{
    Begin, CreateIntent, CreateRefund, Event, Faults, Ledger, MAX_AMOUNT, MAX_METADATA_KEYS, RefundTarget, Stored,
    StripeError, take,
};
use crate::util::lock;

/// Longest `Idempotency-Key` (Stripe's limit).
const MAX_KEY_LEN: usize = 255;
/// Hang of an injected timeout when `hang_ms` is 0.
const DEFAULT_HANG: Duration = Duration::from_secs(30);

/// The sandbox's routes.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .route("/v1/payment_intents/search", get(search_intents))
        .route("/v1/payment_intents/{id}", get(get_intent))
        .route("/v1/refunds", post(create_refund).get(list_refunds))
        .route("/v1/charges", get(list_charges))
        .route("/v1/events/{id}", get(get_event))
        .route("/_sandbox/faults", get(get_faults).post(set_faults))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/events/{id}/resend", post(resend_event))
        .fallback(|| async { error(&StripeError::missing("path", "route", "unknown")) })
        .with_state(sandbox)
}

fn error(e: &StripeError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.body())).into_response()
}

fn stored(answer: Stored, replayed: bool) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(answer.body)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Sandbox {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), StripeError> {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(self.api_key.as_str()) {
            return Ok(());
        }
        let mut e = StripeError::invalid("api_key_invalid", None, "Invalid API Key provided.");
        e.status = 401;
        Err(e)
    }

    /// Waits the configured latency, then maybe fails the request with an injected 500.
    async fn before_api(&self, headers: &HeaderMap) -> Result<(), StripeError> {
        self.authorize(headers)?;
        let latency = lock(&self.ledger).faults.latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if take(&mut lock(&self.ledger).faults.fail_next) {
            self.stats.injected_errors.inc();
            return Err(StripeError::api(500, "sandbox: injected server error"));
        }
        Ok(())
    }

    fn hang(&self) -> Duration {
        match lock(&self.ledger).faults.hang_ms {
            0 => DEFAULT_HANG,
            ms => Duration::from_millis(ms),
        }
    }

    /// Runs a charge or refund under its idempotency key, with the timeout faults.
    async fn execute(
        self: &Arc<Self>,
        headers: &HeaderMap,
        fingerprint: String,
        work: impl FnOnce(&mut Ledger, u64) -> Result<(Stored, Option<Event>), StripeError>,
    ) -> Response {
        let key = match idempotency_key(headers) {
            Ok(key) => key,
            Err(e) => return error(&e),
        };
        let key = key.as_deref();
        if let Err(e) = self.before_api(headers).await {
            return error(&e);
        }
        let hang_before = {
            let mut ledger = lock(&self.ledger);
            match ledger.begin(key, &fingerprint) {
                Err(e) => return error(&e),
                Ok(Begin::Replay(answer)) => return stored(answer, true),
                Ok(Begin::Run) => {}
            }
            let hang = take(&mut ledger.faults.timeout_before_charge_next);
            if hang {
                ledger.abandon(key);
            }
            hang
        };
        if hang_before {
            self.stats.injected_timeouts.inc();
            tokio::time::sleep(self.hang()).await;
            return error(&StripeError::api(504, "sandbox: injected timeout before charging"));
        }
        let (outcome, hang_after) = {
            let mut ledger = lock(&self.ledger);
            let outcome = work(&mut ledger, now_secs());
            match &outcome {
                Ok((answer, _)) => ledger.finish(key, answer),
                Err(_) => ledger.abandon(key),
            }
            (outcome, take(&mut ledger.faults.timeout_after_charge_next))
        };
        let answer = match outcome {
            Ok((answer, event)) => {
                if let Some(event) = event {
                    self.send_event(event);
                }
                answer
            }
            Err(e) => return error(&e),
        };
        if hang_after {
            self.stats.injected_timeouts.inc();
            tokio::time::sleep(self.hang()).await;
            return error(&StripeError::api(504, "sandbox: injected timeout after charging"));
        }
        stored(answer, false)
    }
}

/// The `Idempotency-Key` header: 1 to 255 printable ASCII characters, or none.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, StripeError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(StripeError::invalid(
            "idempotency_key_invalid",
            None,
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )),
    }
}

/// A form body as sorted pairs (the fingerprint compares them whatever their order).
fn form(body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    pairs.sort();
    pairs
}

fn fingerprint(path: &str, pairs: &[(String, String)]) -> String {
    let mut s = String::from(path);
    for (k, v) in pairs {
        s.push('\n');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// Parameters of one form body, each taken at most once; what is left over is unknown.
struct Params {
    pairs: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
}

impl Params {
    fn new(pairs: &[(String, String)]) -> Result<Self, StripeError> {
        let mut plain = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (k, v) in pairs {
            if let Some(key) = k.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')) {
                if key.is_empty() || key.len() > 40 || v.len() > 500 {
                    return Err(StripeError::invalid(
                        "parameter_invalid_string",
                        Some(k),
                        "Metadata keys are 1 to 40 characters, values at most 500.",
                    ));
                }
                metadata.insert(key.to_owned(), v.clone());
            } else if plain.insert(k.clone(), v.clone()).is_some() {
                return Err(StripeError::invalid("parameter_invalid", Some(k), format!("{k} is given twice.")));
            }
        }
        if metadata.len() > MAX_METADATA_KEYS {
            return Err(StripeError::invalid("parameter_invalid", Some("metadata"), "At most 50 metadata keys."));
        }
        Ok(Self { pairs: plain, metadata })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.pairs.remove(name)
    }

    fn required(&mut self, name: &str) -> Result<String, StripeError> {
        self.take(name).ok_or_else(|| {
            StripeError::invalid("parameter_missing", Some(name), format!("Missing required param: {name}."))
        })
    }

    fn amount(&mut self, required: bool) -> Result<Option<u64>, StripeError> {
        let raw = if required { Some(self.required("amount")?) } else { self.take("amount") };
        raw.map(|a| match a.parse::<u64>() {
            Ok(n) if (1..=MAX_AMOUNT).contains(&n) => Ok(n),
            _ => Err(StripeError::invalid(
                "parameter_invalid_integer",
                Some("amount"),
                format!("amount must be an integer from 1 to {MAX_AMOUNT}."),
            )),
        })
        .transpose()
    }

    /// Refuses whatever was not taken.
    fn done(self) -> Result<BTreeMap<String, String>, StripeError> {
        match self.pairs.keys().next() {
            Some(k) => {
                Err(StripeError::invalid("parameter_unknown", Some(k), format!("Received unknown parameter: {k}")))
            }
            None => Ok(self.metadata),
        }
    }
}

fn parse_create_intent(pairs: &[(String, String)]) -> Result<CreateIntent, StripeError> {
    let mut p = Params::new(pairs)?;
    let amount = p.amount(true)?.unwrap_or(0);
    let currency = p.required("currency")?.to_ascii_lowercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(StripeError::invalid("parameter_invalid", Some("currency"), "Invalid currency."));
    }
    let payment_method = p.required("payment_method")?;
    if p.take("confirm").as_deref() != Some("true") {
        return Err(StripeError::invalid(
            "parameter_invalid",
            Some("confirm"),
            "The sandbox only creates PaymentIntents with confirm=true.",
        ));
    }
    let description = p.take("description");
    let metadata = p.done()?;
    Ok(CreateIntent { amount, currency, payment_method, description, metadata })
}

fn parse_create_refund(pairs: &[(String, String)]) -> Result<CreateRefund, StripeError> {
    let mut p = Params::new(pairs)?;
    let target = match (p.take("payment_intent"), p.take("charge")) {
        (Some(pi), None) => RefundTarget::Intent(pi),
        (None, Some(ch)) => RefundTarget::Charge(ch),
        _ => {
            return Err(StripeError::invalid(
                "parameter_missing",
                Some("payment_intent"),
                "Give exactly one of payment_intent or charge.",
            ));
        }
    };
    let amount = p.amount(false)?;
    let reason = p.take("reason");
    if reason.as_deref().is_some_and(|r| !matches!(r, "duplicate" | "fraudulent" | "requested_by_customer")) {
        return Err(StripeError::invalid(
            "parameter_invalid",
            Some("reason"),
            "reason is one of duplicate, fraudulent, requested_by_customer.",
        ));
    }
    let metadata = p.done()?;
    Ok(CreateRefund { target, amount, reason, metadata })
}

async fn create_intent(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = form(&body);
    let req = match parse_create_intent(&pairs) {
        Ok(req) => req,
        Err(e) => return error(&e),
    };
    sb.execute(&headers, fingerprint("/v1/payment_intents", &pairs), |ledger, now| {
        let outcome = ledger.create_intent(req, now);
        if let Ok((answer, _)) = &outcome {
            sb.stats.count_intent(answer);
        }
        outcome
    })
    .await
}

async fn create_refund(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = form(&body);
    let req = match parse_create_refund(&pairs) {
        Ok(req) => req,
        Err(e) => return error(&e),
    };
    sb.execute(&headers, fingerprint("/v1/refunds", &pairs), |ledger, now| {
        let outcome = ledger.create_refund(req, now);
        if outcome.is_ok() {
            sb.stats.refunds.inc();
        }
        outcome
    })
    .await
}

async fn get_intent(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = sb.before_api(&headers).await {
        return error(&e);
    }
    match lock(&sb.ledger).intent(&id) {
        Ok(intent) => Json(intent).into_response(),
        Err(e) => error(&e),
    }
}

/// A query string's pairs (empty if none).
fn query_pairs(query: Option<&str>) -> BTreeMap<String, String> {
    query.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn limit(q: &BTreeMap<String, String>) -> Result<usize, StripeError> {
    match q.get("limit") {
        None => Ok(10),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(StripeError::invalid("parameter_invalid_integer", Some("limit"), "limit is 1 to 100.")),
        },
    }
}

/// `GET /v1/payment_intents/search?query=metadata['KEY']:'VALUE'`: the one query form supported.
async fn search_intents(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(e) = sb.before_api(&headers).await {
        return error(&e);
    }
    let q = query_pairs(q.as_deref());
    let parsed = q
        .get("query")
        .and_then(|s| s.strip_prefix("metadata['"))
        .and_then(|s| s.strip_suffix('\''))
        .and_then(|s| s.split_once("']:'"));
    let Some((key, value)) = parsed else {
        return error(&StripeError::invalid(
            "parameter_invalid",
            Some("query"),
            "The sandbox searches only metadata['KEY']:'VALUE'.",
        ));
    };
    let ledger = lock(&sb.ledger);
    let data = ledger.search_intents(key, value);
    Json(json!({
        "object": "search_result",
        "url": "/v1/payment_intents/search",
        "has_more": false,
        "next_page": null,
        "data": data,
    }))
    .into_response()
}

async fn list_charges(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(e) = sb.before_api(&headers).await {
        return error(&e);
    }
    let q = query_pairs(q.as_deref());
    let limit = match limit(&q) {
        Ok(l) => l,
        Err(e) => return error(&e),
    };
    let ledger = lock(&sb.ledger);
    match ledger.charges(
        limit,
        q.get("starting_after").map(String::as_str),
        q.get("payment_intent").map(String::as_str),
    ) {
        Ok((data, has_more)) => {
            Json(json!({ "object": "list", "url": "/v1/charges", "has_more": has_more, "data": data })).into_response()
        }
        Err(e) => error(&e),
    }
}

/// `GET /v1/refunds?payment_intent=&charge=&limit=&starting_after=`: Stripe's list, newest
/// first (how Shoal's reconciler finds a refund by the `shoal_refund_id` in its metadata).
async fn list_refunds(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(e) = sb.before_api(&headers).await {
        return error(&e);
    }
    let q = query_pairs(q.as_deref());
    let limit = match limit(&q) {
        Ok(l) => l,
        Err(e) => return error(&e),
    };
    let ledger = lock(&sb.ledger);
    match ledger.refunds(
        limit,
        q.get("starting_after").map(String::as_str),
        q.get("payment_intent").map(String::as_str),
        q.get("charge").map(String::as_str),
    ) {
        Ok((data, has_more)) => {
            Json(json!({ "object": "list", "url": "/v1/refunds", "has_more": has_more, "data": data })).into_response()
        }
        Err(e) => error(&e),
    }
}

async fn get_event(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = sb.before_api(&headers).await {
        return error(&e);
    }
    match lock(&sb.ledger).event_by_id(&id) {
        Ok(event) => Json(event).into_response(),
        Err(e) => error(&e),
    }
}

async fn get_faults(State(sb): State<Arc<Sandbox>>, headers: HeaderMap) -> Response {
    if let Err(e) = sb.authorize(&headers) {
        return error(&e);
    }
    Json(lock(&sb.ledger).faults.clone()).into_response()
}

/// Replaces the faults (omitted fields are 0).
async fn set_faults(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = sb.authorize(&headers) {
        return error(&e);
    }
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            lock(&sb.ledger).faults = faults.clone();
            Json(faults).into_response()
        }
        Err(e) => error(&StripeError::invalid("parameter_invalid", Some("faults"), e.to_string())),
    }
}

async fn stats(State(sb): State<Arc<Sandbox>>, headers: HeaderMap) -> Response {
    if let Err(e) = sb.authorize(&headers) {
        return error(&e);
    }
    Json(sb.stats.snapshot()).into_response()
}

/// Sends a stored event again, now, and answers what the endpoint said (replay tests).
async fn resend_event(State(sb): State<Arc<Sandbox>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = sb.authorize(&headers) {
        return error(&e);
    }
    let event = match lock(&sb.ledger).event_by_id(&id) {
        Ok(event) => event.clone(),
        Err(e) => return error(&e),
    };
    match sb.deliver_once(&event).await {
        Ok(status) => Json(json!({ "id": id, "endpoint_status": status })).into_response(),
        Err(message) => error(&StripeError::api(502, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_with_metadata_and_refuse_unknown_or_bad_parameters() {
        let pairs =
            form(b"amount=500&currency=USD&payment_method=pm_card_visa&confirm=true&metadata%5Bshoal_id%5D=pay_1");
        let req = parse_create_intent(&pairs).expect("valid");
        assert_eq!(req.amount, 500);
        assert_eq!(req.currency, "usd");
        assert_eq!(req.metadata.get("shoal_id").map(String::as_str), Some("pay_1"));
        let bad = |body: &[u8]| parse_create_intent(&form(body)).expect_err("invalid").error.code;
        assert_eq!(bad(b"currency=usd&payment_method=pm_card_visa&confirm=true"), Some("parameter_missing"));
        assert_eq!(
            bad(b"amount=0&currency=usd&payment_method=pm_card_visa&confirm=true"),
            Some("parameter_invalid_integer")
        );
        assert_eq!(bad(b"amount=5&currency=usd&payment_method=pm_card_visa"), Some("parameter_invalid"));
        assert_eq!(
            bad(b"amount=5&currency=usd&payment_method=pm_card_visa&confirm=true&x=1"),
            Some("parameter_unknown")
        );
    }

    #[test]
    fn the_fingerprint_ignores_parameter_order() {
        let a = form(b"amount=5&currency=usd");
        let b = form(b"currency=usd&amount=5");
        assert_eq!(fingerprint("/v1/refunds", &a), fingerprint("/v1/refunds", &b));
        assert_ne!(fingerprint("/v1/refunds", &a), fingerprint("/v1/refunds", &form(b"amount=6&currency=usd")));
    }

    #[test]
    fn refunds_name_exactly_one_target() {
        assert_eq!(
            parse_create_refund(&form(b"payment_intent=pi_1&amount=5")).expect("valid").target,
            RefundTarget::Intent("pi_1".into())
        );
        assert!(parse_create_refund(&form(b"payment_intent=pi_1&charge=ch_1")).is_err());
        assert!(parse_create_refund(&form(b"payment_intent=pi_1&reason=because")).is_err());
    }
}
