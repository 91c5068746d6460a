//! What operators watch: JSON errors and route-template metric labels, the OpenAPI description, `/metrics` that
//! `promtool` accepts, alert rules and the dashboard using only exported metrics, and the
//! systemd unit.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};
use cluster_tests::harness::{ClusterSpec, FORM, tool, wait_for, wait_for_result};

use crate::{BIN, formed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_json_and_metrics_use_route_templates() -> Result<()> {
    let c = formed(&ClusterSpec::new(1)).await?;
    let r = c.http.get(c.node(1).url("/no/such/path/12345")).send().await?;
    assert_eq!(r.status().as_u16(), 404);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let r = c.http.post(c.node(1).url("/v1/testing/faults/nosuchactor")).send().await?;
    assert_eq!(r.status().as_u16(), 403, "disabled switch wins over the unknown name");
    // The framework's own rejections answer in the same shape.
    // A 10 MB body is refused on its declared length, before it is read. Sent by hand: a client
    // still writing the body when the server answers and closes may see a reset instead.
    let (head, body) = declare_body(c.node(1).http, "/v1/urls", 10 * 1024 * 1024).await?;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    for (method, path) in [(reqwest::Method::DELETE, "/v1/cluster"), (reqwest::Method::POST, "/healthz")] {
        let r = c.http.request(method.clone(), c.node(1).url(path)).send().await?;
        let allow = r.headers().get(reqwest::header::ALLOW).map(|v| v.to_str().unwrap_or_default().to_string());
        assert_eq!(allow.as_deref(), Some("GET,HEAD"), "{method} {path}");
        assert_json_error(r, 405, "method_not_allowed").await?;
    }
    // A path parameter that is not UTF-8 once decoded.
    let r = c.http.get(c.node(1).url("/%FF")).send().await?;
    assert_json_error(r, 400, "bad_request").await?;
    let m = c.metrics(1).await.ok_or_else(|| anyhow!("metrics"))?;
    assert!(m.contains("route=\"unmatched\""), "unmatched paths share one label");
    assert!(!m.contains("12345"), "raw paths never become labels");
    assert!(m.contains("route=\"/v1/testing/faults/{actor}\""), "templates, not raw paths");
    Ok(())
}

/// `/v1/cluster` lists the layout's groups by number ("2" before "10"), not as strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_lists_layout_groups_in_numeric_order() -> Result<()> {
    let c = formed(&ClusterSpec::new(1).set("raft", "partitions = 12")).await?;
    let keys = wait_for("the layout in /v1/cluster", FORM, || async {
        let text = c.http.get(c.node(1).url("/v1/cluster")).send().await.ok()?.text().await.ok()?;
        // The groups object holds only arrays, so its first `}` closes it.
        let groups = text.split(r#""groups":{"#).nth(1)?.split('}').next()?.to_string();
        let keys: Vec<u64> = groups.split("],").filter_map(|kv| kv.split('"').nth(1)?.parse().ok()).collect();
        (!keys.is_empty()).then_some(keys)
    })
    .await?;
    assert_eq!(keys, (0..=12).collect::<Vec<u64>>());
    Ok(())
}

/// Sends the head of a POST declaring a `length`-byte body (and none of the body) and reads the
/// answer until the server closes: its head and its body.
async fn declare_body(addr: std::net::SocketAddr, path: &str, length: usize) -> Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no answer head: {answer}"))?;
    Ok((head.to_string(), body.to_string()))
}

/// Asserts a response is `status` with a JSON `{"error": {"code", "message"}}` body.
async fn assert_json_error(r: reqwest::Response, status: u16, code: &str) -> Result<()> {
    assert_eq!(r.status().as_u16(), status, "{}", r.url());
    let content_type = r.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    assert_eq!(content_type.as_ref().and_then(|v| v.to_str().ok()), Some("application/json"), "{}", r.url());
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check() -> Result<()> {
    let Some(promtool) = tool("promtool", "Debian package `prometheus`") else {
        return Ok(());
    };
    let c = formed(&ClusterSpec::new(3)).await?;
    // Touch a few routes so labelled series exist.
    let _ = c.status_of(1, "/v1/cluster").await;
    let _ = c.status_of(1, "/nope").await;
    let text = c.metrics(1).await.ok_or_else(|| anyhow!("metrics"))?;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child.stdin.take().ok_or_else(|| anyhow!("stdin"))?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool failed:\n{report}");
    assert!(report.trim().is_empty(), "promtool warnings:\n{report}");
    Ok(())
}

/// `deploy/prometheus` and `deploy/grafana`: the scrape config and alert rules pass `promtool
/// check`, the alert unit tests pass `promtool test rules`, and every Shoal metric the rules and
/// the dashboard use is exported by a running node (so renaming a metric cannot silently break
/// an alert or a panel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_pass_promtool_and_use_only_exported_metrics() -> Result<()> {
    let Some(promtool) = tool("promtool", "Debian package `prometheus`") else {
        return Ok(());
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new(&promtool).args(&args).current_dir(&dir).output()?;
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {}:\n{report}", args.join(" "));
    }
    let rules = std::fs::read_to_string(dir.join("alerts.yml"))?;
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("../grafana/shoal.json"))?)?;
    let mut exprs = vec![rules];
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(exprs.len() > 20, "the dashboard has panels with queries");
    let mut used: Vec<String> = Vec::new();
    for text in &exprs {
        for (i, _) in text.match_indices("shoal_") {
            let name: String = text[i..]
                .chars()
                .take_while(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '_')
                .collect();
            if !used.contains(&name) {
                used.push(name);
            }
        }
    }
    assert!(used.len() >= 20, "expected the rules and the dashboard to use Shoal metrics: {used:?}");
    // A cluster with every series they use: served requests through the limiter, a short link
    // created and followed, a restarted actor, leaders with followers.
    let spec = ClusterSpec::new(3).set("testing", "fault_injection = true").set("ratelimit", "enabled = true");
    let c = formed(&spec).await?;
    let _ = c.status_of(1, "/v1/cluster").await;
    let code = wait_for_result("a shorten", FORM, || async {
        let r = c
            .http
            .post(c.node(1).url("/v1/urls"))
            .json(&serde_json::json!({"url": "https://example.com/"}))
            .send()
            .await?;
        let ok = r.status().as_u16() == 201;
        let v: serde_json::Value = r.json().await?;
        Ok(if ok { v["code"].as_str().map(str::to_string) } else { None })
    })
    .await?;
    // Not followed: tests send traffic to loopback only.
    let no_follow = cluster_tests::harness::plain_client()?;
    for id in [1, 2, 3] {
        let r = no_follow.get(c.node(id).url(&format!("/{code}"))).send().await?;
        assert_eq!(r.status().as_u16(), 302);
    }
    let r = c.http.post(c.node(1).url("/v1/testing/faults/membership")).send().await?;
    assert_eq!(r.status().as_u16(), 202);
    let series = "shoal_actor_restarts_total{actor=\"membership\"}";
    wait_for("the actor restart to be counted", Duration::from_secs(10), || async {
        (c.metric(1, series).await? >= 1.0).then_some(())
    })
    .await?;
    let exported = wait_for("every metric the rules and the dashboard use to be exported", FORM, || async {
        let mut all = String::new();
        for id in [1, 2, 3] {
            all.push_str(&c.metrics(id).await?);
        }
        let families: std::collections::BTreeSet<&str> =
            all.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let missing: Vec<&String> = used
            .iter()
            .filter(|name| {
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                !families.contains(name.as_str()) && !families.contains(base)
            })
            .collect();
        missing.is_empty().then_some(families.len())
    })
    .await?;
    assert!(exported > 20);
    Ok(())
}

/// `deploy/systemd/shoal.service` passes `systemd-analyze verify` without a warning (every
/// directive known, every value parsed), with its binary path pointed at the built node.
#[test]
fn the_systemd_unit_verifies_cleanly() -> Result<()> {
    let Some(analyze) = tool("systemd-analyze", "Debian package `systemd`") else {
        return Ok(());
    };
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/shoal.service"))?;
    assert!(unit.contains("ExecStart=/usr/local/bin/shoal start --config /etc/shoal/shoal.toml"));
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shoal.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/shoal", BIN))?;
    let out = std::process::Command::new(analyze).arg("verify").arg(&path).output()?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "systemd-analyze verify:\n{report}");
    Ok(())
}

/// `GET /v1/openapi.json` needs no token and passes no rate limiter (with the default policies
/// on, a `/v1/*` route next to it carries the limiter's headers), and describes the routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_is_served_without_token_outside_the_rate_limiter() -> Result<()> {
    let c = formed(&ClusterSpec::new(1).set("ratelimit", "enabled = true")).await?;
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let r = plain.get(c.node(1).url("/v1/openapi.json")).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    assert!(r.headers().get("x-ratelimit-limit").is_none(), "the description is not rate limited");
    let spec: serde_json::Value = r.json().await?;
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", spec["openapi"]);
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/counters/{name}/increment", "post"),
        ("/v1/urls/{code}", "delete"),
        ("/{code}", "get"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} is not described");
    }
    let r = c.http.get(c.node(1).url("/v1/users/me")).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("x-ratelimit-limit").is_some(), "other /v1/* routes are limited");
    Ok(())
}
