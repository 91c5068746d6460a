//! `shoal-bench payments`: charges through a local 3-node cluster and a real sandbox gateway
//! process (`--gateway-latency-ms`, default 20), then checks the sandbox's charge list for
//! duplicates.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, ensure};
use cluster_tests::harness::free_port;
use cluster_tests::sandbox::{API_KEY, Sandbox, WEBHOOK_SECRET};
use serde_json::json;

use super::Args;
use super::driver::{Report, run_load};
use super::workloads::{ServerWindow, http_client, node_binary, sign_up, target_cluster_with};

/// Payers: client `i` pays as user `i mod PAYERS`, so payments spread over the partitions.
const PAYERS: usize = 64;

/// `POST /v1/payments` with a fresh key each, from `--clients` clients spread over the nodes.
pub async fn payments(args: &Args) -> Result<Report> {
    ensure!(args.endpoints.is_empty(), "payments starts its own cluster and sandbox; --endpoints is not supported");
    let port = free_port()?;
    let url = format!("gateway_url = \"http://127.0.0.1:{port}\"");
    let key = format!("gateway_key = \"{API_KEY}\"");
    let secret = format!("webhook_secret = \"{WEBHOOK_SECRET}\"");
    let extra = [("payments", url.as_str()), ("payments", key.as_str()), ("payments", secret.as_str())];
    let (cluster, endpoints) = target_cluster_with(args, &extra).await?;
    let Some(cluster) = cluster else { anyhow::bail!("no local cluster") };
    let hook = format!("http://{}/v1/payments/webhooks/gateway", cluster.node(1).http);
    let sandbox =
        Sandbox::start(&node_binary(args)?, &cluster.dir, port, args.gateway_latency_ms, Some(hook.as_str())).await?;
    let http = http_client(args)?;
    let mut tokens = Vec::new();
    for n in 0..PAYERS {
        tokens.push(sign_up(&http, &endpoints[n % endpoints.len()]).await?);
    }
    let tokens = Arc::new(tokens);
    let endpoints = Arc::new(endpoints);
    let seq = Arc::new(AtomicU64::new(0));
    let (window, opened) = ServerWindow::open(&http, &endpoints);
    let client_http = http.clone();
    let mut report = run_load("payments", args.load(), Some(opened), move |client| {
        let http = client_http.clone();
        let token = tokens[client % tokens.len()].clone();
        let url = format!("{}/v1/payments", endpoints[client % endpoints.len()]);
        let key = format!("bench-{}", seq.fetch_add(1, Ordering::Relaxed));
        async move {
            let body = json!({"amount": 1999, "currency": "usd", "payment_method": "pm_card_visa"});
            let r = http.post(url).bearer_auth(token).header("idempotency-key", key).json(&body).send().await?;
            anyhow::ensure!(r.status().as_u16() == 201, "status {}", r.status());
            Ok(())
        }
    })
    .await?;
    window.close(&mut report).await?;
    let charges = sandbox.succeeded_charges().await?;
    let ids: HashSet<&str> = charges.iter().filter_map(|c| c["metadata"]["shoal_payment_id"].as_str()).collect();
    report.extra.insert("gateway_latency_ms".into(), json!(args.gateway_latency_ms));
    report.extra.insert("sandbox_charges".into(), json!(charges.len()));
    report.extra.insert("duplicate_charges".into(), json!(charges.len() - ids.len()));
    Ok(report)
}
