//! The sandbox over real HTTP: a served sandbox on a loopback port, reqwest as the caller and an
//! axum endpoint receiving its webhooks.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::Value;
use tokio::sync::mpsc;

use super::*;

const KEY: &str = "sk_test_unit";
const SECRET: &str = "whsec_unit";

struct Running {
    base: String,
    client: reqwest::Client,
    _server: crate::util::AbortOnDrop<()>,
}

impl Running {
    async fn start(webhook: Option<WebhookTarget>, faults: Faults) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let options = Options { api_key: KEY.into(), webhook, faults };
        let server = crate::util::AbortOnDrop::spawn(async move {
            let _ = serve(listener, options, std::future::pending()).await;
        });
        Self { base, client: reqwest::Client::new(), _server: server }
    }

    async fn post(&self, path: &str, key: Option<&str>, form: &str) -> (u16, HeaderMap, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let response = req.send().await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.expect("json"))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth(KEY).send().await.expect("send");
        (response.status().as_u16(), response.json().await.expect("json"))
    }

    async fn set_faults(&self, faults: &Faults) {
        let response = self
            .client
            .post(format!("{}/_sandbox/faults", self.base))
            .bearer_auth(KEY)
            .json(faults)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
    }

    async fn succeeded_charges(&self) -> usize {
        let (status, list) = self.get("/v1/charges?limit=100").await;
        assert_eq!(status, 200);
        list["data"].as_array().expect("data").iter().filter(|c| c["status"] == "succeeded").count()
    }
}

fn visa(amount: u64) -> String {
    format!("amount={amount}&currency=usd&payment_method=pm_card_visa&confirm=true")
}

#[tokio::test]
async fn charges_and_declines_answer_in_stripes_shapes_behind_bearer_auth() {
    let sb = Running::start(None, Faults::default()).await;
    let anonymous = sb.client.post(format!("{}/v1/payment_intents", sb.base)).body(visa(5)).send().await.expect("send");
    assert_eq!(anonymous.status(), 401);

    let (status, _, intent) =
        sb.post("/v1/payment_intents", None, &format!("{}&metadata[shoal_id]=pay_1", visa(1234))).await;
    assert_eq!(status, 200);
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], 1234);
    let id = intent["id"].as_str().expect("id");
    assert_eq!(sb.get(&format!("/v1/payment_intents/{id}")).await, (200, intent.clone()));
    let (status, found) = sb.get("/v1/payment_intents/search?query=metadata%5B%27shoal_id%27%5D%3A%27pay_1%27").await;
    assert_eq!(status, 200);
    assert_eq!(found["data"][0]["id"], id);

    let declined = "amount=5&currency=usd&payment_method=pm_card_chargeDeclined&confirm=true";
    let (status, _, body) = sb.post("/v1/payment_intents", None, declined).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "card_declined");
    assert_eq!(body["error"]["payment_intent"]["status"], "requires_payment_method");

    let (status, list) = sb.get("/v1/charges").await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["has_more"], false);
    let statuses: Vec<&str> =
        list["data"].as_array().expect("data").iter().filter_map(|c| c["status"].as_str()).collect();
    assert_eq!(statuses, ["failed", "succeeded"], "newest first");
    assert_eq!(sb.get("/v1/payment_intents/pi_nope").await.0, 404);
}

#[tokio::test]
async fn one_idempotency_key_gets_the_first_answer_again_and_charges_once() {
    let sb = Running::start(None, Faults::default()).await;
    let (status, headers, first) = sb.post("/v1/payment_intents", Some("pay_k1"), &visa(700)).await;
    assert_eq!(status, 200);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, again) = sb.post("/v1/payment_intents", Some("pay_k1"), &visa(700)).await;
    assert_eq!((status, again), (200, first));
    assert_eq!(headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    let (status, _, body) = sb.post("/v1/payment_intents", Some("pay_k1"), &visa(701)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert_eq!(sb.succeeded_charges().await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_charge_once_and_the_others_are_told_in_use() {
    let sb = Running::start(None, Faults { latency_ms: 50, ..Faults::default() }).await;
    let form = visa(300);
    let calls = (0..8).map(|_| sb.post("/v1/payment_intents", Some("pay_same"), &form));
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let in_use = answers.iter().filter(|(s, _, b)| *s == 409 && b["error"]["code"] == "idempotency_key_in_use").count();
    assert!(ok >= 1, "someone charged: {answers:?}");
    assert_eq!(ok + in_use, 8, "every answer is the charge or in-use: {answers:?}");
    assert_eq!(sb.succeeded_charges().await, 1);
}

#[tokio::test]
async fn a_timeout_after_charging_keeps_the_charge_and_the_retry_replays_it() {
    let faults = Faults { timeout_after_charge_next: 1, hang_ms: 2_000, ..Faults::default() };
    let sb = Running::start(None, faults).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().expect("client");
    let lost = impatient
        .post(format!("{}/v1/payment_intents", sb.base))
        .bearer_auth(KEY)
        .header("idempotency-key", "pay_t1")
        .body(visa(900))
        .send()
        .await;
    assert!(lost.expect_err("the answer never came").is_timeout());
    assert_eq!(sb.succeeded_charges().await, 1, "charged before the hang");
    let (status, headers, intent) = sb.post("/v1/payment_intents", Some("pay_t1"), &visa(900)).await;
    assert_eq!((status, intent["status"].as_str()), (200, Some("succeeded")));
    assert!(headers.contains_key("idempotent-replayed"));
    assert_eq!(sb.succeeded_charges().await, 1, "the retry charged nothing more");
}

#[tokio::test]
async fn a_timeout_before_charging_charges_nothing_and_the_retry_charges_once() {
    let faults = Faults { timeout_before_charge_next: 1, hang_ms: 300, ..Faults::default() };
    let sb = Running::start(None, faults).await;
    let (status, _, body) = sb.post("/v1/payment_intents", Some("pay_t2"), &visa(900)).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(sb.succeeded_charges().await, 0);
    let (status, headers, _) = sb.post("/v1/payment_intents", Some("pay_t2"), &visa(900)).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("idempotent-replayed"));
    assert_eq!(sb.succeeded_charges().await, 1);
}

#[tokio::test]
async fn injected_errors_and_latency_apply_then_wear_off() {
    let sb = Running::start(None, Faults::default()).await;
    sb.set_faults(&Faults { fail_next: 2, ..Faults::default() }).await;
    for _ in 0..2 {
        let (status, _, body) = sb.post("/v1/payment_intents", Some("pay_e"), &visa(1)).await;
        assert_eq!((status, body["error"]["type"].as_str()), (500, Some("api_error")));
    }
    assert_eq!(sb.succeeded_charges().await, 0);
    let (status, _, _) = sb.post("/v1/payment_intents", Some("pay_e"), &visa(1)).await;
    assert_eq!(status, 200, "the key was not used up by the failed attempts");

    sb.set_faults(&Faults { latency_ms: 150, ..Faults::default() }).await;
    let started = Instant::now();
    assert_eq!(sb.get("/v1/charges").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn refunds_are_partial_several_and_capped_at_the_charge() {
    let sb = Running::start(None, Faults::default()).await;
    let (_, _, intent) = sb.post("/v1/payment_intents", None, &visa(1_000)).await;
    let pi = intent["id"].as_str().expect("id");
    let (status, _, refund) = sb.post("/v1/refunds", Some("re_k1"), &format!("payment_intent={pi}&amount=400")).await;
    assert_eq!((status, refund["amount"].as_u64()), (200, Some(400)));
    let (status, _, body) = sb.post("/v1/refunds", Some("re_k2"), &format!("payment_intent={pi}&amount=601")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("amount_too_large")));
    let (status, _, refund) = sb.post("/v1/refunds", Some("re_k3"), &format!("payment_intent={pi}")).await;
    assert_eq!((status, refund["amount"].as_u64()), (200, Some(600)));
    let (_, list) = sb.get(&format!("/v1/charges?payment_intent={pi}")).await;
    assert_eq!(list["data"][0]["amount_refunded"], 1_000);
    assert_eq!(list["data"][0]["refunded"], true);
    // Stripe's refund list, filtered by PaymentIntent, newest first.
    let (status, list) = sb.get(&format!("/v1/refunds?payment_intent={pi}&limit=1")).await;
    assert_eq!((status, list["object"].as_str(), list["has_more"].as_bool()), (200, Some("list"), Some(true)));
    assert_eq!(list["data"][0]["amount"], 600);
    assert_eq!(sb.get("/v1/refunds?payment_intent=pi_none").await.1["data"], serde_json::json!([]));
}

#[tokio::test]
async fn control_endpoints_answer_401_without_the_api_key() {
    let sb = Running::start(None, Faults::default()).await;
    let faults = format!("{}/_sandbox/faults", sb.base);
    let stats = format!("{}/_sandbox/stats", sb.base);
    let resend = format!("{}/_sandbox/events/evt_nope/resend", sb.base);
    for (what, request) in [
        ("GET faults", sb.client.get(&faults)),
        ("POST faults", sb.client.post(&faults).json(&Faults { fail_next: 5, ..Faults::default() })),
        ("GET stats", sb.client.get(&stats)),
        ("POST resend", sb.client.post(&resend)),
        ("POST faults, wrong key", sb.client.post(&faults).bearer_auth("sk_wrong").json(&Faults::default())),
    ] {
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 401, "{what}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "api_key_invalid", "{what}");
    }
    // Nothing was changed by the refused POST: a charge goes through.
    assert_eq!(sb.post("/v1/payment_intents", None, &visa(5)).await.0, 200);
    let (status, stats) = sb.get("/_sandbox/stats").await;
    assert_eq!((status, stats["injected_errors"].as_u64()), (200, Some(0)));
}

/// A webhook endpoint that hands every delivery to the test.
async fn receiver() -> (reqwest::Url, mpsc::UnboundedReceiver<(String, Bytes)>, crate::util::AbortOnDrop<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let signature =
                    headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let _ = tx.send((signature, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr")).parse().expect("url");
    let server = crate::util::AbortOnDrop::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx, server)
}

async fn next_delivery(rx: &mut mpsc::UnboundedReceiver<(String, Bytes)>) -> (String, Value) {
    let (signature, body) =
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a delivery within 10 s").expect("open");
    webhook_signature::verify(SECRET.as_bytes(), &signature, &body, http::now_secs(), 300).expect("signed");
    (signature, serde_json::from_slice(&body).expect("json"))
}

#[tokio::test]
async fn webhooks_are_signed_can_be_dropped_and_resent() {
    let (url, mut rx, _receiver) = receiver().await;
    let sb = Running::start(Some(WebhookTarget { url, secret: SECRET.into() }), Faults::default()).await;
    let (_, _, intent) = sb.post("/v1/payment_intents", None, &visa(250)).await;
    let (_, event) = next_delivery(&mut rx).await;
    assert_eq!(event["type"], "payment_intent.succeeded");
    assert_eq!(event["data"]["object"]["id"], intent["id"]);

    sb.set_faults(&Faults { drop_webhooks_next: 1, ..Faults::default() }).await;
    let declined = "amount=5&currency=usd&payment_method=pm_card_chargeDeclined&confirm=true";
    sb.post("/v1/payment_intents", None, declined).await;
    // The dropped event is counted as dropped; the next one arrives, so the dropped one never will.
    sb.post("/v1/payment_intents", None, &visa(260)).await;
    let (_, event) = next_delivery(&mut rx).await;
    assert_eq!(event["data"]["object"]["amount"], 260);
    let (_, stats) = sb.get("/_sandbox/stats").await;
    assert_eq!(stats["webhooks_dropped"], 1);

    let id = event["id"].as_str().expect("id");
    let resend = format!("{}/_sandbox/events/{id}/resend", sb.base);
    assert_eq!(sb.client.post(&resend).send().await.expect("send").status(), 401, "control needs the key");
    let resent = sb.client.post(&resend).bearer_auth(KEY).send().await.expect("send");
    assert_eq!(resent.status(), 200);
    let (_, again) = next_delivery(&mut rx).await;
    assert_eq!(again, event, "the same event, signed anew");
}
