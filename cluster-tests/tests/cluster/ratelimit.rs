//! The rate limiter: limits shared across nodes with their headers, leases for a hot key that
//! never exceed its limit, and fail-open or fail-closed when a key's owner is unreachable.

use anyhow::{Context, Result, anyhow};
use cluster_tests::api::leader_of;
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, sample, wait_for_result};
use serde_json::{Value, json};

use crate::led;

/// A cluster whose limiter runs with `policies` (a TOML array of inline tables). The
/// policies must leave `GET /v1/cluster` out: waiting for leaders polls it.
async fn limited(policies: &str) -> Result<Cluster> {
    led(&ClusterSpec::new(3)
        .set("ratelimit", "enabled = true")
        .set("ratelimit", "owner_timeout = \"300ms\"")
        .set("ratelimit", &format!("policies = {policies}")))
    .await
}

/// Signs a user up (retrying while the limiter's owners are not all known yet); answers
/// its id and token.
async fn user(c: &Cluster, name: &str) -> Result<(String, String)> {
    let plain = reqwest::Client::new();
    let v = wait_for_result("a sign-up", FORM, || async {
        let r = plain.post(c.node(1).url("/v1/users")).json(&json!({ "name": name })).send().await?;
        Ok(if r.status().as_u16() == 201 { Some(r.json::<Value>().await?) } else { None })
    })
    .await?;
    let field = |f: &str| v[f].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {f} in {v}"));
    Ok((field("id")?, field("token")?))
}

/// The token of a new user whose key under `policy` node `owner` owns (the leader of the
/// key's partition).
async fn user_owned_by(c: &Cluster, policy: &str, owner: u64) -> Result<String> {
    for i in 0..60 {
        let (id, token) = user(c, &format!("{policy}-{i}")).await?;
        let group = shoal::placement::partition_of(&format!("{policy}/user:{id}"), 4);
        if leader_of(c, 1, group).await == Some(owner) {
            return Ok(token);
        }
    }
    Err(anyhow!("no user whose `{policy}` key node {owner} owns"))
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_nodes_with_their_headers() -> Result<()> {
    let c = limited(
        r#"[{ name = "api", limit = 6, window = "60s", algorithm = "token_bucket", routes = ["/v1/*"], except = ["GET /v1/cluster", "POST /v1/users"], key = "user" },
            { name = "redirects", limit = 4, window = "60s", algorithm = "sliding_window", routes = ["GET /{code}"], key = "ip" }]"#,
    )
    .await?;
    let (_, token) = user(&c, "busy").await?;
    let (_, other) = user(&c, "calm").await?;
    let plain = cluster_tests::harness::plain_client()?;
    // Six requests spread over the three nodes share one quota.
    for (i, node) in [1, 2, 3, 1, 2, 3].into_iter().enumerate() {
        let r = plain.get(c.node(node).url("/v1/users/me")).bearer_auth(&token).send().await?;
        assert_eq!(r.status().as_u16(), 200, "request {i} on node {node}");
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("6"));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some((5 - i).to_string()), "request {i}");
        let reset: u64 = header(&r, "x-ratelimit-reset").unwrap_or_default().parse()?;
        assert!((1..=60).contains(&reset), "reset {reset}");
        assert_eq!(header(&r, "ratelimit-policy").as_deref(), Some("\"api\";q=6;w=60"));
        assert_eq!(header(&r, "ratelimit"), Some(format!("\"api\";r={};t={reset}", 5 - i)));
    }
    // The seventh is refused on every node, with Retry-After (one token per 10 s).
    for node in [2, 3, 1] {
        let r = plain.get(c.node(node).url("/v1/users/me")).bearer_auth(&token).send().await?;
        assert_eq!(r.status().as_u16(), 429, "node {node}");
        let retry: u64 = header(&r, "retry-after").unwrap_or_default().parse()?;
        assert!((1..=10).contains(&retry), "retry-after {retry}");
        assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(r.json::<Value>().await?["error"]["code"], "rate_limited");
    }
    // Another user has a quota of their own.
    let r = plain.get(c.node(3).url("/v1/users/me")).bearer_auth(&other).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("5"));
    let r = plain.get(c.node(2).url("/v1/ratelimit")).bearer_auth(&other).send().await?;
    let v: Value = r.json().await?;
    let api = v["policies"].as_array().and_then(|p| p.iter().find(|p| p["policy"] == "api")).cloned();
    assert_eq!(api.map(|a| a["remaining"].clone()), Some(json!(4)), "{v}");
    // Redirects: four per client IP in any 60 s, whichever node serves them.
    let code = wait_for_result("a shorten", FORM, || async {
        let r = plain
            .post(c.node(1).url("/v1/urls"))
            .bearer_auth(&other)
            .json(&json!({"url": "https://example.com/"}))
            .send()
            .await?;
        Ok(if r.status().as_u16() == 201 {
            r.json::<Value>().await?["code"].as_str().map(str::to_string)
        } else {
            None
        })
    })
    .await?;
    let mut statuses = Vec::new();
    for node in [1, 2, 3, 1, 2, 3] {
        statuses.push(plain.get(c.node(node).url(&format!("/{code}"))).send().await?.status().as_u16());
    }
    assert_eq!(statuses, vec![302, 302, 302, 302, 429, 429]);
    // Health, readiness and metrics are not limited.
    let r = plain.get(c.node(1).url("/healthz")).send().await?;
    assert!(r.headers().get("x-ratelimit-limit").is_none());
    let metrics = c.metrics(1).await.unwrap_or_default();
    assert!(metrics.contains("shoal_ratelimit_decisions_total{decision=\"limited\",policy=\"api\"}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_admitted_from_leases_and_still_never_beyond_its_limit() -> Result<()> {
    // 300 per 600 s: one request comes back every 2 s, so the run itself refills only a few.
    let (limit, window_s) = (300u64, 600u64);
    let c = limited(&format!(
        r#"[{{ name = "api", limit = {limit}, window = "{window_s}s", algorithm = "token_bucket", routes = ["GET /v1/users/me"], key = "user" }}]"#
    ))
    .await?;
    // A user whose key node 3 owns, so nodes 1 and 2 must ask it, or spend a lease.
    let token = user_owned_by(&c, "api", 3).await?;
    let plain = cluster_tests::harness::plain_client()?;
    // Twice the limit, 16 at a time, through nodes 1 and 2.
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u64 {
        let (plain, token) = (plain.clone(), token.clone());
        let urls = [c.node(1).url("/v1/users/me"), c.node(2).url("/v1/users/me")];
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for i in 0..(2 * limit / 16) {
                let r = plain.get(&urls[((worker + i) % 2) as usize]).bearer_auth(&token).send().await?;
                let remaining: Option<u64> = header(&r, "x-ratelimit-remaining").and_then(|v| v.parse().ok());
                seen.push((r.status().as_u16(), remaining));
            }
            anyhow::Ok(seen)
        });
    }
    let mut seen = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seen.extend(r??);
    }
    let elapsed = started.elapsed();
    let admitted = seen.iter().filter(|(status, _)| *status == 200).count() as u64;
    let refused = seen.iter().filter(|(status, _)| *status == 429).count() as u64;
    assert_eq!(admitted + refused, seen.len() as u64, "only 200 and 429: {seen:?}");
    // Never beyond the limit plus what refilled during the run.
    let refilled = elapsed.as_secs() / (window_s / limit) + 1;
    assert!(admitted <= limit + refilled, "{admitted} admitted: limit {limit}, {refilled} refilled");
    // A lease left unspent when its span ends costs quota, never much: each is at most an
    // eighth of what is left and about half a span's demand.
    assert!(admitted >= limit * 8 / 10, "only {admitted} of {limit} admitted");
    assert!(
        seen.iter().all(|(_, remaining)| remaining.is_none_or(|r| r < limit)),
        "remaining above the limit: {seen:?}"
    );
    // Some of them came from leases, on the nodes that do not own the key, which node 3 granted.
    let from_leases = "shoal_ratelimit_check_duration_seconds_count{owner=\"lease\"}";
    let mut admitted_from_leases = 0.0;
    for node in [1, 2] {
        let m = c.metrics(node).await.context("node metrics")?;
        admitted_from_leases += sample(&m, from_leases).unwrap_or(0.0);
    }
    assert!(admitted_from_leases > 0.0, "no request was admitted from a lease");
    let m = c.metrics(3).await.context("node 3 metrics")?;
    assert_eq!(sample(&m, from_leases).unwrap_or(0.0), 0.0, "the owner decides itself");
    let granted = sample(&m, "shoal_ratelimit_leased_total").unwrap_or(0.0);
    assert!(granted >= admitted_from_leases, "{admitted_from_leases} admitted from leases, {granted} granted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_owner_fails_open_or_closed_as_the_policy_says() -> Result<()> {
    let c = limited(
        r#"[{ name = "soft", limit = 1000, window = "60s", algorithm = "token_bucket", routes = ["GET /v1/users/me"], key = "user", on_unavailable = "open" },
            { name = "strict", limit = 1000, window = "60s", algorithm = "token_bucket", routes = ["GET /v1/ratelimit"], key = "user", on_unavailable = "closed" }]"#,
    )
    .await?;
    let mut c = c;
    // Users whose keys node 3 owns: "soft" for one, "strict" for another.
    let soft = user_owned_by(&c, "soft", 3).await?;
    let strict = user_owned_by(&c, "strict", 3).await?;
    let plain = reqwest::Client::new();
    assert_eq!(plain.get(c.node(1).url("/v1/users/me")).bearer_auth(&soft).send().await?.status().as_u16(), 200);
    assert_eq!(plain.get(c.node(1).url("/v1/ratelimit")).bearer_auth(&strict).send().await?.status().as_u16(), 200);
    c.kill(3)?;
    // Until the partitions elect new leaders, node 3's keys have no owner that answers.
    wait_for_result("a fail-open and a fail-closed decision", FORM, || async {
        let r = plain.get(c.node(1).url("/v1/users/me")).bearer_auth(&soft).send().await?;
        assert_eq!(r.status().as_u16(), 200, "a fail-open policy admits");
        let r = plain.get(c.node(1).url("/v1/ratelimit")).bearer_auth(&strict).send().await?;
        let status = r.status().as_u16();
        if status == 503 {
            assert_eq!(r.json::<Value>().await?["error"]["code"], "rate_limiter_unavailable");
        } else {
            assert_eq!(status, 200);
        }
        let m = c.metrics(1).await.unwrap_or_default();
        let opened = sample(&m, "shoal_ratelimit_decisions_total{decision=\"unavailable_open\",policy=\"soft\"}")
            .unwrap_or(0.0)
            > 0.0;
        let closed = sample(&m, "shoal_ratelimit_decisions_total{decision=\"unavailable_closed\",policy=\"strict\"}")
            .unwrap_or(0.0)
            > 0.0;
        Ok((opened && closed).then_some(()))
    })
    .await?;
    // Once a new owner leads the partition, the strict policy decides again (a fresh bucket).
    wait_for_result("the strict policy to decide again", FORM, || async {
        let r = plain.get(c.node(2).url("/v1/ratelimit")).bearer_auth(&strict).send().await?;
        Ok((r.status().as_u16() == 200 && header(&r, "x-ratelimit-remaining").is_some()).then_some(()))
    })
    .await?;
    Ok(())
}
