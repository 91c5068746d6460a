//! Payments against real nodes and a real sandbox gateway process: idempotency (replay,
//! mismatch, in use, validation), card data refused and never logged, a timeout after charging
//! reconciled to one charge, one key retried concurrently across nodes charging once, webhooks
//! (valid, bad signature, replayed, out of order), refunds (partial, several, over-refund,
//! concurrent), and a refund the gateway never received failed only once the gateway confirms it.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use cluster_tests::api::leader_of;
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, plain_client, wait_for, wait_for_result};
use cluster_tests::sandbox::{Sandbox, WEBHOOK_SECRET, spec_with_gateway};
use serde_json::{Value, json};

use crate::{bin, led};

/// Generous deadline for the reconciler and webhooks on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(40);

#[derive(Debug, Clone)]
struct User {
    id: String,
    token: String,
}

async fn sign_up(c: &Cluster, name: &str) -> Result<User> {
    let r = plain_client()?.post(c.node(1).url("/v1/users")).json(&json!({"name": name})).send().await?;
    ensure!(r.status().as_u16() == 201, "sign-up answered {}", r.status());
    let v: Value = r.json().await?;
    let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {k} in {v}"));
    Ok(User { id: field("id")?, token: field("token")? })
}

/// What a request answered.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

async fn post(c: &Cluster, node: u64, user: &User, path: &str, key: Option<&str>, body: &str) -> Result<Answer> {
    let mut request = plain_client()?
        .post(c.node(node).url(path))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    Ok(Answer { status, replayed, body: r.json().await.unwrap_or(Value::Null) })
}

async fn get(c: &Cluster, node: u64, user: &User, path: &str) -> Result<(u16, Value)> {
    let r = plain_client()?.get(c.node(node).url(path)).bearer_auth(&user.token).send().await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

fn payment(amount: u64, pm: &str) -> String {
    json!({"amount": amount, "currency": "usd", "payment_method": pm}).to_string()
}

/// A 3-node cluster pointed at a sandbox process (webhooks to node 1 when `webhooks`).
async fn setup(extra: &[(&'static str, &str)], latency_ms: u64, webhooks: bool) -> Result<(Cluster, Sandbox)> {
    let mut spec = ClusterSpec::new(3)
        .set("payments", "gateway_timeout = \"1s\"")
        .set("payments", "reconcile_interval = \"200ms\"")
        .set("payments", "reconcile_backoff_min = \"200ms\"")
        .set("payments", "reconcile_backoff_max = \"2s\"");
    for (section, line) in extra {
        spec = spec.set(section, line);
    }
    let (port, spec) = spec_with_gateway(spec)?;
    let c = led(&spec).await?;
    let hook = webhooks.then(|| c.node(1).url("/v1/payments/webhooks/gateway"));
    let sandbox = Sandbox::start(bin(), &c.dir, port, latency_ms, hook.as_deref()).await?;
    Ok((c, sandbox))
}

/// The payment `id` once it is no longer pending.
async fn settled(c: &Cluster, user: &User, id: &str) -> Result<Value> {
    wait_for_result("the payment to leave pending", SETTLE, || async {
        let (status, v) = get(c, 2, user, &format!("/v1/payments/{id}")).await?;
        Ok((status == 200 && v["status"] != "pending").then_some(v))
    })
    .await
}

/// Succeeded sandbox charges of Shoal payment `id`.
async fn charges_of(sandbox: &Sandbox, id: &str) -> Result<usize> {
    Ok(sandbox.succeeded_charges().await?.iter().filter(|c| c["metadata"]["shoal_payment_id"] == id).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_idempotency_replays_refuses_mismatch_and_in_use_and_validation_stores_nothing() -> Result<()> {
    let (c, sandbox) = setup(&[], 0, false).await?;
    let ann = sign_up(&c, "ann").await?;

    let a = post(&c, 1, &ann, "/v1/payments", None, &payment(500, "pm_card_visa")).await?;
    ensure!(a.status == 400 && a.body["error"]["code"] == "idempotency_key_required", "{a:?}");

    // Validation refuses and stores nothing: the same key then works with a valid body.
    let a = post(&c, 1, &ann, "/v1/payments", Some("k-1"), &payment(0, "pm_card_visa")).await?;
    ensure!(a.status == 400 && a.body["error"]["code"] == "invalid_amount", "{a:?}");
    let a = post(&c, 1, &ann, "/v1/payments", Some("k-1"), &payment(500, "pm_card_visa")).await?;
    ensure!(a.status == 201 && a.body["status"] == "succeeded" && !a.replayed, "{a:?}");
    ensure!(a.body["amount"] == 500 && a.body["amount_refunded"] == 0 && a.body["currency"] == "usd", "{a:?}");
    let first = a.body.clone();

    // Replay through another node: the stored answer, status included.
    let a = post(&c, 3, &ann, "/v1/payments", Some("k-1"), &payment(500, "pm_card_visa")).await?;
    ensure!(a.status == 201 && a.replayed && a.body == first, "{a:?}");
    // Mismatch.
    let a = post(&c, 2, &ann, "/v1/payments", Some("k-1"), &payment(501, "pm_card_visa")).await?;
    ensure!(a.status == 422 && a.body["error"]["code"] == "idempotency_key_reused", "{a:?}");
    let id = first["id"].as_str().ok_or_else(|| anyhow!("no id"))?;
    ensure!(charges_of(&sandbox, id).await? == 1, "one charge");

    // A decline is final and replays as 402.
    let a = post(&c, 1, &ann, "/v1/payments", Some("k-2"), &payment(700, "pm_card_chargeDeclined")).await?;
    ensure!(a.status == 402 && a.body["status"] == "failed" && a.body["failure_code"] == "card_declined", "{a:?}");
    let b = post(&c, 2, &ann, "/v1/payments", Some("k-2"), &payment(700, "pm_card_chargeDeclined")).await?;
    ensure!(b.status == 402 && b.replayed && b.body == a.body, "{b:?}");

    // In use: while the first request waits on a slow gateway, the same key is 409 anywhere.
    sandbox.set_faults(json!({"latency_ms": 3000})).await?;
    let slow = {
        let (c2, ann2) = (c.client_view(), ann.clone());
        tokio::spawn(
            async move { post(&c2, 1, &ann2, "/v1/payments", Some("k-3"), &payment(900, "pm_card_visa")).await },
        )
    };
    let in_use = wait_for_result("the first request to hold its key", FORM, || async {
        let (_, list) = get(&c, 2, &ann, "/v1/payments?limit=1").await?;
        if list["data"][0]["amount"] != 900 {
            return Ok(None);
        }
        Ok(Some(post(&c, 2, &ann, "/v1/payments", Some("k-3"), &payment(900, "pm_card_visa")).await?))
    })
    .await?;
    ensure!(in_use.status == 409 && in_use.body["error"]["code"] == "idempotency_key_in_use", "{in_use:?}");
    let first = slow.await??;
    // The sandbox's 3 s exceed the node's 1 s gateway timeout: pending, then reconciled.
    ensure!(first.status == 202 && first.body["status"] == "pending", "{first:?}");
    let id = first.body["id"].as_str().ok_or_else(|| anyhow!("no id"))?;
    sandbox.set_faults(json!({})).await?;
    ensure!(settled(&c, &ann, id).await?["status"] == "succeeded");
    let a = post(&c, 3, &ann, "/v1/payments", Some("k-3"), &payment(900, "pm_card_visa")).await?;
    ensure!(a.status == 201 && a.replayed && a.body["status"] == "succeeded", "{a:?}");
    ensure!(charges_of(&sandbox, id).await? == 1, "one charge");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_card_numbers_anywhere_are_refused_and_never_logged() -> Result<()> {
    let (c, sandbox) = setup(&[("log", "filter = \"debug,openraft=error,quinn=info,rustls=info\"")], 0, false).await?;
    let ann = sign_up(&c, "ann").await?;
    let bodies = [
        json!({"amount": 500, "currency": "usd", "payment_method": "pm_card_visa",
               "metadata": {"note": "card 4242 4242 4242 4242"}}),
        json!({"amount": 500, "currency": "usd", "payment_method": "pm_card_visa",
               "description": "5555-5555-5555-4444"}),
        json!({"amount": 500, "currency": "usd", "payment_method": "378282246310005"}),
    ];
    for (n, body) in bodies.iter().enumerate() {
        let a = post(&c, 1 + n as u64 % 3, &ann, "/v1/payments", Some(&format!("card-{n}")), &body.to_string()).await?;
        ensure!(a.status == 400 && a.body["error"]["code"] == "card_data_not_allowed", "{a:?}");
        ensure!(!a.body.to_string().contains("4242"), "the answer echoes no number: {a:?}");
    }
    let (_, list) = get(&c, 1, &ann, "/v1/payments").await?;
    ensure!(list["data"].as_array().is_some_and(Vec::is_empty), "nothing stored: {list}");
    ensure!(sandbox.charges().await?.is_empty(), "nothing charged");
    let mut logs: Vec<String> = c.nodes.keys().map(|id| c.log(*id)).collect();
    logs.push(std::fs::read_to_string(&sandbox.log).unwrap_or_default());
    for (i, log) in logs.iter().enumerate() {
        let digits: String = log.chars().filter(|ch| !matches!(ch, ' ' | '-')).collect();
        for number in ["4242424242424242", "5555555555554444", "378282246310005"] {
            ensure!(!digits.contains(number), "log {i} holds a card number");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_a_timeout_after_charging_is_reconciled_to_succeeded_with_one_charge() -> Result<()> {
    let (c, sandbox) = setup(&[], 0, false).await?;
    let ann = sign_up(&c, "ann").await?;
    sandbox.set_faults(json!({"timeout_after_charge_next": 1, "hang_ms": 4000})).await?;
    let a = post(&c, 1, &ann, "/v1/payments", Some("t-1"), &payment(1_250, "pm_card_visa")).await?;
    ensure!(a.status == 202 && a.body["status"] == "pending", "{a:?}");
    let id = a.body["id"].as_str().ok_or_else(|| anyhow!("no id"))?;
    ensure!(charges_of(&sandbox, id).await? == 1, "the sandbox charged before it hung");
    let done = settled(&c, &ann, id).await?;
    ensure!(done["status"] == "succeeded" && done["amount"] == 1_250, "{done}");
    let (_, events) = get(&c, 3, &ann, &format!("/v1/payments/{id}/events")).await?;
    let kinds: Vec<(&str, &str)> = events["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|e| Some((e["type"].as_str()?, e["source"].as_str()?))).collect())
        .unwrap_or_default();
    ensure!(kinds == [("payment.pending", "api"), ("payment.succeeded", "reconciler")], "{events}");
    ensure!(charges_of(&sandbox, id).await? == 1, "still one charge");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_one_key_retried_20_times_concurrently_across_3_nodes_charges_once() -> Result<()> {
    let (c, sandbox) = setup(&[], 300, false).await?;
    let ann = sign_up(&c, "ann").await?;
    let body = payment(4_200, "pm_card_visa");
    let tries = (0..20u64).map(|n| {
        let (c, ann, body) = (c.client_view(), ann.clone(), body.clone());
        tokio::spawn(async move { post(&c, 1 + n % 3, &ann, "/v1/payments", Some("same-key"), &body).await })
    });
    let mut answers = Vec::new();
    for t in futures::future::join_all(tries).await {
        answers.push(t??);
    }
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    ensure!(!ok.is_empty(), "someone charged: {answers:?}");
    ensure!(answers.iter().all(|a| a.status == 201 || a.status == 409), "201 or 409 only: {answers:?}");
    ensure!(ok.iter().all(|a| a.body["id"] == ok[0].body["id"]), "one payment: {answers:?}");
    let charges = sandbox.succeeded_charges().await?;
    ensure!(charges.len() == 1, "one charge in the sandbox: {charges:?}");
    Ok(())
}

/// A `Stripe-Signature` header for `payload`, signed now with `secret`.
fn sign(secret: &str, payload: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    shoal::util::webhook_signature::header(secret.as_bytes(), now, payload.as_bytes())
}

async fn deliver(c: &Cluster, node: u64, signature: &str, payload: &str) -> Result<(u16, Value)> {
    let r = plain_client()?
        .post(c.node(node).url("/v1/payments/webhooks/gateway"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(payload.to_owned())
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_webhooks_valid_bad_signature_replayed_and_out_of_order() -> Result<()> {
    // The reconciler waits an hour, so only webhooks can settle what the gateway's hang left
    // pending.
    let (c, sandbox) = setup(&[("payments", "reconcile_interval = \"1h\"")], 0, true).await?;
    let ann = sign_up(&c, "ann").await?;
    sandbox.set_faults(json!({"timeout_after_charge_next": 2, "drop_webhooks_next": 1, "hang_ms": 3000})).await?;
    let mut ids = Vec::new();
    for key in ["w-1", "w-2"] {
        let a = post(&c, 1, &ann, "/v1/payments", Some(key), &payment(300, "pm_card_visa")).await?;
        ensure!(a.status == 202, "{a:?}");
        ids.push(a.body["id"].as_str().ok_or_else(|| anyhow!("no id"))?.to_owned());
    }
    let intent = sandbox.intent_of(&ids[0]).await?.ok_or_else(|| anyhow!("the sandbox has no intent"))?;
    let event = |id: &str, kind: &str, object: &Value| {
        json!({"id": id, "object": "event", "type": kind, "created": 0, "data": {"object": object}}).to_string()
    };

    // Bad signature: 400, nothing changes.
    let good = event("evt_t1", "payment_intent.succeeded", &intent);
    let (status, v) = deliver(&c, 2, &sign("whsec_wrong", &good), &good).await?;
    ensure!(status == 400 && v["error"]["code"] == "invalid_signature", "{status} {v}");
    let (_, p) = get(&c, 1, &ann, &format!("/v1/payments/{}", ids[0])).await?;
    ensure!(p["status"] == "pending", "{p}");

    // Valid: applied through any node.
    let (status, v) = deliver(&c, 3, &sign(WEBHOOK_SECRET, &good), &good).await?;
    ensure!(status == 200 && v["outcome"] == "applied", "{status} {v}");
    let (_, p) = get(&c, 1, &ann, &format!("/v1/payments/{}", ids[0])).await?;
    ensure!(p["status"] == "succeeded", "{p}");

    // Replayed (signed anew): unchanged.
    let (status, v) = deliver(&c, 1, &sign(WEBHOOK_SECRET, &good), &good).await?;
    ensure!(status == 200 && v["outcome"] == "unchanged", "{status} {v}");

    // Out of order: a failure reported after the success changes nothing.
    let mut failed = intent.clone();
    failed["status"] = json!("requires_payment_method");
    let late = event("evt_t2", "payment_intent.payment_failed", &failed);
    let (status, v) = deliver(&c, 2, &sign(WEBHOOK_SECRET, &late), &late).await?;
    ensure!(status == 200 && v["outcome"] == "unchanged", "{status} {v}");
    let (_, p) = get(&c, 1, &ann, &format!("/v1/payments/{}", ids[0])).await?;
    ensure!(p["status"] == "succeeded", "{p}");
    let (_, events) = get(&c, 2, &ann, &format!("/v1/payments/{}/events", ids[0])).await?;
    ensure!(events["data"][1]["source"] == "webhook" && events["data"].as_array().map(Vec::len) == Some(2), "{events}");

    // The sandbox's own signed webhook (its real sender, to node 1) settled the second payment.
    let second = settled(&c, &ann, &ids[1]).await?;
    ensure!(second["status"] == "succeeded", "{second}");
    let (_, events) = get(&c, 2, &ann, &format!("/v1/payments/{}/events", ids[1])).await?;
    ensure!(events["data"][1]["source"] == "webhook", "{events}");
    let stats = sandbox.stats().await?;
    ensure!(stats["webhooks_dropped"] == 1 && stats["webhooks_delivered"] == 1, "{stats}");
    ensure!(charges_of(&sandbox, &ids[0]).await? == 1 && charges_of(&sandbox, &ids[1]).await? == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_refunds_partial_several_never_beyond_the_amount_even_concurrently() -> Result<()> {
    let (c, sandbox) = setup(&[], 0, false).await?;
    let ann = sign_up(&c, "ann").await?;
    let a = post(&c, 1, &ann, "/v1/payments", Some("r-pay"), &payment(1_000, "pm_card_visa")).await?;
    ensure!(a.status == 201, "{a:?}");
    let id = a.body["id"].as_str().ok_or_else(|| anyhow!("no id"))?.to_owned();
    let path = format!("/v1/payments/{id}/refunds");

    let r = post(&c, 2, &ann, &path, Some("r-1"), &json!({"amount": 300}).to_string()).await?;
    ensure!(r.status == 201 && r.body["status"] == "succeeded" && r.body["amount"] == 300, "{r:?}");
    let again = post(&c, 3, &ann, &path, Some("r-1"), &json!({"amount": 300}).to_string()).await?;
    ensure!(again.status == 201 && again.replayed && again.body == r.body, "{again:?}");
    let r = post(&c, 1, &ann, &path, Some("r-2"), &json!({"amount": 100, "reason": "duplicate"}).to_string()).await?;
    ensure!(r.status == 201, "{r:?}");
    let over = post(&c, 1, &ann, &path, Some("r-3"), &json!({"amount": 601}).to_string()).await?;
    ensure!(over.status == 400 && over.body["error"]["code"] == "refund_exceeds_amount", "{over:?}");

    // 600 left; five concurrent refunds of 200 on three nodes: three fit, two are refused.
    let tries = (0..5u64).map(|n| {
        let (c, ann, path) = (c.client_view(), ann.clone(), path.clone());
        tokio::spawn(async move {
            post(&c, 1 + n % 3, &ann, &path, Some(&format!("rc-{n}")), &json!({"amount": 200}).to_string()).await
        })
    });
    let mut statuses = Vec::new();
    for t in futures::future::join_all(tries).await {
        statuses.push(t??.status);
    }
    statuses.sort_unstable();
    ensure!(statuses == [201, 201, 201, 400, 400], "{statuses:?}");
    let (_, p) = get(&c, 2, &ann, &format!("/v1/payments/{id}")).await?;
    ensure!(p["amount_refunded"] == 1_000 && p["refunds"].as_array().map(Vec::len) == Some(5), "{p}");
    let charge = sandbox.charges().await?.into_iter().find(|ch| ch["metadata"]["shoal_payment_id"] == id.as_str());
    ensure!(charge.is_some_and(|ch| ch["amount_refunded"] == 1_000 && ch["refunded"] == true), "the sandbox agrees");
    let (_, events) = get(&c, 2, &ann, &format!("/v1/payments/{id}/events")).await?;
    ensure!(events["data"].as_array().map(Vec::len) == Some(2 + 2 * 5), "{events}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_a_refund_the_gateway_never_made_fails_as_gateway_unreachable_after_bounded_attempts() -> Result<()> {
    const ATTEMPTS: u64 = 3;
    let (c, sandbox) = setup(&[("payments", "reconcile_attempts = 3")], 0, false).await?;
    ensure!(sandbox.control_status_without_key("/_sandbox/stats").await? == 401, "control endpoints want the key");
    let ann = sign_up(&c, "ann").await?;
    let a = post(&c, 1, &ann, "/v1/payments", Some("u-pay"), &payment(1_000, "pm_card_visa")).await?;
    ensure!(a.status == 201, "{a:?}");
    let id = a.body["id"].as_str().ok_or_else(|| anyhow!("no id"))?.to_owned();
    let path = format!("/v1/payments/{id}/refunds");

    // Every refund call hangs and answers 504 having done nothing; lookups still answer.
    sandbox.set_faults(json!({"timeout_before_charge_next": 1_000, "hang_ms": 50})).await?;
    let r = post(&c, 2, &ann, &path, Some("u-1"), &json!({"amount": 400}).to_string()).await?;
    ensure!(r.status == 202 && r.body["status"] == "pending", "{r:?}");
    let refund_id = r.body["id"].as_str().ok_or_else(|| anyhow!("no refund id"))?.to_owned();
    let refund = wait_for_result("the refund to be resolved", SETTLE, || async {
        let (_, p) = get(&c, 3, &ann, &format!("/v1/payments/{id}")).await?;
        let found = p["refunds"].as_array().and_then(|rs| rs.iter().find(|r| r["id"] == refund_id.as_str()).cloned());
        Ok(found.filter(|r| r["status"] != "pending"))
    })
    .await?;
    ensure!(refund["status"] == "failed" && refund["failure_code"] == "gateway_unreachable", "{refund}");
    // Bounded: the request's own call and the reconciler's attempts, then the lookup said "none".
    let stats = sandbox.stats().await?;
    ensure!(stats["injected_timeouts"] == 1 + ATTEMPTS && stats["refunds"] == 0, "{stats}");
    let charge = sandbox.charges().await?.into_iter().find(|ch| ch["metadata"]["shoal_payment_id"] == id.as_str());
    let pi = charge.and_then(|ch| ch["payment_intent"].as_str().map(str::to_owned)).ok_or_else(|| anyhow!("no pi"))?;
    ensure!(sandbox.refunds_of_intent(&pi).await?.is_empty(), "the gateway refunded nothing");

    // The failed refund's amount is free again: the whole charge can still be refunded, once.
    sandbox.set_faults(json!({})).await?;
    let r = post(&c, 1, &ann, &path, Some("u-2"), &json!({}).to_string()).await?;
    ensure!(r.status == 201 && r.body["amount"] == 1_000, "{r:?}");
    ensure!(sandbox.refunds_of_intent(&pi).await?.len() == 1);
    let (_, events) = get(&c, 2, &ann, &format!("/v1/payments/{id}/events")).await?;
    let failed = events["data"].as_array().and_then(|e| e.iter().find(|e| e["type"] == "refund.failed").cloned());
    ensure!(failed.is_some_and(|e| e["source"] == "reconciler"), "{events}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_sigkill_of_the_partition_leader_mid_charge_leaves_every_payment_resolved_and_charged_once()
-> Result<()> {
    let (mut c, sandbox) = setup(&[], 300, false).await?;
    let ann = sign_up(&c, "ann").await?;
    let group = shoal::placement::partition_of(&ann.id, 4);
    let leader = wait_for("the payer's partition leader", FORM, || leader_of(&c, 1, group)).await?;
    let survivor = c.nodes.keys().copied().find(|id| *id != leader).ok_or_else(|| anyhow!("one node"))?;

    // Load on the leader, six payments in flight at a time: it records, calls the gateway
    // (300 ms) and records again. A worker stops at its first failure (the node is gone).
    let load = (0..6u64).map(|worker| {
        let (view, ann) = (c.client_view(), ann.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..6u64 {
                let key = format!("kill-{worker}-{n}");
                let body = payment(100 + worker * 10 + n, "pm_card_visa");
                match post(&view, leader, &ann, "/v1/payments", Some(&key), &body).await {
                    Ok(a) => answers.push(a),
                    Err(_) => break,
                }
            }
            answers
        })
    });
    let load = futures::future::join_all(load);
    let kill = async {
        // Some charged already, and one recorded pending (committed, its gateway call running).
        wait_for_result("charges done and one in flight", FORM, || async {
            if sandbox.stats().await?["charges_succeeded"].as_u64() < Some(3) {
                return Ok(None);
            }
            let (_, list) = get(&c, survivor, &ann, "/v1/payments?limit=100").await?;
            Ok(list["data"].as_array().is_some_and(|d| d.iter().any(|p| p["status"] == "pending")).then_some(()))
        })
        .await?;
        c.kill(leader)
    };
    let (answers, killed) = tokio::join!(load, kill);
    killed?;
    let acknowledged: BTreeSet<String> = answers
        .into_iter()
        .filter_map(Result::ok)
        .flatten()
        .filter(|a| a.status == 201)
        .filter_map(|a| a.body["id"].as_str().map(str::to_owned))
        .collect();

    // Recovery: a new leader's reconciler resolves whatever the killed node left pending.
    let payments = wait_for_result("every payment resolved", Duration::from_secs(60), || async {
        let (status, list) = get(&c, survivor, &ann, "/v1/payments?limit=100").await?;
        let data = list["data"].as_array().cloned().unwrap_or_default();
        Ok((status == 200 && data.iter().all(|p| p["status"] != "pending")).then_some(data))
    })
    .await?;
    let succeeded: BTreeSet<String> = payments
        .iter()
        .filter(|p| p["status"] == "succeeded")
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();
    ensure!(payments.len() == succeeded.len(), "visa payments all succeed: {payments:?}");
    ensure!(acknowledged.is_subset(&succeeded), "every acknowledged payment is recorded");
    let charged: Vec<String> = sandbox
        .succeeded_charges()
        .await?
        .iter()
        .filter_map(|ch| ch["metadata"]["shoal_payment_id"].as_str().map(str::to_owned))
        .collect();
    let charged_set: BTreeSet<String> = charged.iter().cloned().collect();
    ensure!(charged.len() == charged_set.len(), "no payment charged twice: {charged:?}");
    ensure!(charged_set == succeeded, "charges and succeeded payments match one to one");
    ensure!(succeeded.len() >= 3, "the load got going: {}", succeeded.len());
    // Some were caught between the gateway call and the record, and finished by the reconciler.
    let mut reconciled = 0;
    for id in &succeeded {
        let (_, events) = get(&c, survivor, &ann, &format!("/v1/payments/{id}/events")).await?;
        if events["data"].as_array().is_some_and(|d| d.iter().any(|e| e["source"] == "reconciler")) {
            reconciled += 1;
        }
    }
    ensure!(reconciled >= 1, "no payment was left for the reconciler: the kill came too late");
    Ok(())
}
