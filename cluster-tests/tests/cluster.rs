//! Cluster tests: real `shoal` processes on loopback, each test with its own ports and data.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cluster_tests::harness::{Cluster, ClusterSpec, sample, tool, wait_for, wait_for_result};
use nix::sys::signal::Signal;
use shoal::transport::frame::{self, FRAME_VERSION};
use shoal::transport::proto::{Echo, Request, Response, RpcErrorCode};
use shoal::transport::tls::Identity;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-node");
/// Generous deadline for a cluster to form on a loaded 2-core machine.
const FORM: Duration = Duration::from_secs(20);

fn bin() -> &'static Path {
    Path::new(BIN)
}

async fn formed(spec: &ClusterSpec) -> Result<Cluster> {
    let cluster = Cluster::start(bin(), spec)?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.wait_all_see_up(&ids, &ids, FORM).await.context("cluster did not form")?;
    cluster.wait_ready(&ids, FORM).await.context("cluster did not become ready")?;
    Ok(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_full_mesh() -> Result<()> {
    let c = formed(&ClusterSpec::new(3)).await?;
    for id in 1..=3 {
        let v = c.get_json(id, "/v1/cluster").await.ok_or_else(|| anyhow!("node {id} /v1/cluster"))?;
        assert_eq!(v["node_id"].as_u64(), Some(id));
        let members = v["members"].as_array().ok_or_else(|| anyhow!("members"))?;
        assert_eq!(members.len(), 3);
        for m in members {
            assert_eq!(m["state"], "up", "node {id} sees {m}");
            let mid = m["id"].as_u64().ok_or_else(|| anyhow!("id"))?;
            let n = c.node(mid);
            assert_eq!(m["http_addr"], n.http.to_string());
            assert_eq!(m["peer_addr"], n.peer.to_string());
        }
        assert_eq!(c.status_of(id, "/readyz").await, Some(200));
        // Every node holds a live QUIC link to both others.
        let metrics = c.metrics(id).await.ok_or_else(|| anyhow!("metrics"))?;
        for peer in (1..=3).filter(|p| *p != id) {
            let series = format!("shoal_transport_peer_connected{{peer=\"{peer}\"}}");
            assert_eq!(sample(&metrics, &series), Some(1.0), "node {id} link to {peer}");
            assert_eq!(sample(&metrics, &format!("shoal_peer_up{{peer=\"{peer}\"}}")), Some(1.0));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_node_is_reported_down_then_up_after_restart() -> Result<()> {
    let mut c = formed(&ClusterSpec::new(3)).await?;
    let cfg = shoal::config::Config::load(&c.node(1).config)?;
    let detection = cfg.membership.detection_time();
    c.kill(3)?;
    let killed = Instant::now();
    // Scheduling on a loaded 2-core machine and our 50 ms polling get a fixed allowance.
    let allowance = Duration::from_secs(1);
    wait_for("survivors to report node 3 down", detection + allowance, || async {
        let a = c.peer_state(1, 3).await?;
        let b = c.peer_state(2, 3).await?;
        (a == "down" && b == "down").then_some(())
    })
    .await?;
    let took = killed.elapsed();
    assert!(took <= detection + allowance, "detection took {took:?}, configured {detection:?}");
    // A majority is still up, so the survivors stay ready.
    assert_eq!(c.status_of(1, "/readyz").await, Some(200));

    c.start_node(3)?;
    let restarted = Instant::now();
    c.wait_all_see_up(&[1, 2], &[3], Duration::from_secs(2)).await.context("links to the restarted node")?;
    let took = restarted.elapsed();
    c.wait_all_see_up(&[3], &[1, 2], FORM).await?;
    assert!(took <= Duration::from_secs(2), "survivors saw node 3 up {took:?} after its restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_is_recovered_by_stateless_reset() -> Result<()> {
    // The failure detector is made slow (10 s) so that only a stateless reset can explain links
    // recovering within 2 s: without it, survivors would wait for the 10 s idle timeout.
    let spec = ClusterSpec::new(3).set("membership", "down_after_missed = 50");
    let mut c = formed(&spec).await?;
    let resets_before: f64 = {
        let mut sum = 0.0;
        for id in [1, 2] {
            sum += c.metric(id, "shoal_transport_connections_closed_total{reason=\"reset\"}").await.unwrap_or(0.0);
        }
        sum
    };
    c.kill(3)?;
    c.start_node(3)?;
    let restarted = Instant::now();
    // Up, with a heartbeat answered since the restart (last_seen under 400 ms, i.e. fresh).
    wait_for("survivors to reach the restarted node", Duration::from_secs(2), || async {
        for o in [1, 2] {
            let v = c.get_json(o, "/v1/cluster").await?;
            let m = v["members"].as_array()?.iter().find(|m| m["id"] == 3)?.clone();
            let fresh = m["last_seen_ms"].as_u64().is_some_and(|ms| (ms as u128) < restarted.elapsed().as_millis());
            if m["state"] != "up" || !fresh {
                return None;
            }
        }
        Some(())
    })
    .await?;
    let mut resets = 0.0;
    for id in [1, 2] {
        resets += c.metric(id, "shoal_transport_connections_closed_total{reason=\"reset\"}").await.unwrap_or(0.0);
    }
    assert!(resets > resets_before, "no survivor saw a stateless reset (before {resets_before}, after {resets})");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() -> Result<()> {
    let c = formed(&ClusterSpec::new(3)).await?;
    let foreign_dir = tempfile::tempdir()?;
    shoal::certs::init(foreign_dir.path(), 9)?;
    let cluster_ca = Identity::load(&tls_files(&c.dir.join("certs"), 1))?.ca;
    let foreign = Identity::load(&tls_files(foreign_dir.path(), 9))?;
    // Trusts the cluster CA (so the client side is happy) but presents a foreign certificate.
    let rogue = Identity { ca: cluster_ca, ..foreign };
    let before = c.metric(1, "shoal_transport_handshakes_total{direction=\"inbound\",outcome=\"failed\"}").await;
    let result = raw_call(&rogue, c.node(1).peer, &frame::encode(&Request::Echo(Echo { payload: vec![1] }))?).await;
    assert!(result.is_err(), "a foreign certificate got an answer: {result:?}");
    wait_for("node 1 to count the refused handshake", Duration::from_secs(5), || async {
        let after = c.metric(1, "shoal_transport_handshakes_total{direction=\"inbound\",outcome=\"failed\"}").await?;
        (after > before.unwrap_or(0.0)).then_some(())
    })
    .await?;
    assert_eq!(c.status_of(1, "/healthz").await, Some(200));
    let v = c.get_json(1, "/v1/cluster").await.ok_or_else(|| anyhow!("cluster"))?;
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "the rogue did not become a member");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_get_errors_and_crash_nothing() -> Result<()> {
    let c = formed(&ClusterSpec::new(3)).await?;
    // A valid certificate of a non-member (id 9) from the cluster CA.
    shoal::certs::init(&c.dir.join("certs"), 9)?;
    let me = Identity::load(&tls_files(&c.dir.join("certs"), 9))?;
    let endpoint = client_endpoint()?;
    let conn = endpoint.connect_with(me.client_config(&Default::default())?, c.node(1).peer, "node-1.shoal")?.await?;
    let good = frame::encode(&Request::Echo(Echo { payload: b"ok".to_vec() }))?;
    let mut wrong_version = good.clone();
    wrong_version[4] = FRAME_VERSION.wrapping_add(7);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    let mut bad_payload = good.clone();
    for b in bad_payload.iter_mut().skip(frame::HEADER_LEN) {
        *b = 0xff;
    }
    let cases: Vec<(&str, Vec<u8>, RpcErrorCode)> = vec![
        ("oversize length", vec![0xff, 0xff, 0xff, 0xff, FRAME_VERSION, 1, 2, 3], RpcErrorCode::FrameTooLarge),
        ("wrong version", wrong_version, RpcErrorCode::UnsupportedVersion),
        ("truncated", truncated, RpcErrorCode::BadFrame),
        ("invalid payload", bad_payload, RpcErrorCode::BadFrame),
        ("empty frame", vec![0, 0, 0, 0, FRAME_VERSION], RpcErrorCode::BadFrame),
    ];
    for (name, bytes, code) in cases {
        let answer = stream_exchange(&conn, &bytes).await.with_context(|| name.to_string())?;
        match frame::decode::<Response>(&answer, 1 << 20) {
            Ok(Response::Error(e)) => assert_eq!(e.code, code, "{name}: {}", e.message),
            other => bail!("{name}: expected an error frame, got {other:?}"),
        }
    }
    // Random bytes: an error frame or a reset stream, never a crash.
    for seed in 0..20u8 {
        let noise: Vec<u8> =
            (0..200u32).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed.wrapping_mul(17))).collect();
        let _ = stream_exchange(&conn, &noise).await;
    }
    // The same connection still serves a well-formed call.
    match frame::decode::<Response>(&stream_exchange(&conn, &good).await?, 1 << 20)? {
        Response::Echo(e) => assert_eq!(e.payload, b"ok"),
        other => bail!("echo answered with {other:?}"),
    }
    assert_eq!(c.status_of(1, "/healthz").await, Some(200));
    c.wait_all_see_up(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(5)).await?;
    let m = c.metrics(1).await.ok_or_else(|| anyhow!("metrics"))?;
    for kind in ["too_large", "bad_version", "truncated", "malformed", "empty"] {
        let n = sample(&m, &format!("shoal_transport_frame_errors_total{{kind=\"{kind}\"}}")).unwrap_or(0.0);
        assert!(n >= 1.0, "frame error kind {kind} not counted");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_actor_failures_are_restarted_and_counted_while_http_serves() -> Result<()> {
    let spec = ClusterSpec::new(3).set("testing", "fault_injection = true");
    let c = formed(&spec).await?;
    for (round, actor) in ["membership", "transport", "http"].into_iter().enumerate() {
        let series = format!("shoal_actor_restarts_total{{actor=\"{actor}\"}}");
        let before = c.metric(1, &series).await.ok_or_else(|| anyhow!("metrics"))?;
        assert_eq!(before, 0.0, "round {round}");
        let r = c.http.post(c.node(1).url(&format!("/v1/testing/faults/{actor}"))).send().await?;
        assert_eq!(r.status().as_u16(), 202);
        wait_for(&format!("{actor} restart to be counted"), Duration::from_secs(10), || async {
            (c.metric(1, &series).await? >= 1.0).then_some(())
        })
        .await?;
        // Still serving HTTP, and the restarted actor does its job again: fresh heartbeats.
        assert_eq!(c.status_of(1, "/healthz").await, Some(200));
        wait_for("fresh heartbeats from node 1", Duration::from_secs(10), || async {
            let v = c.get_json(1, "/v1/cluster").await?;
            v["members"]
                .as_array()?
                .iter()
                .all(|m| m["state"] == "up" && m["last_seen_ms"].as_u64().is_some_and(|ms| ms < 1000))
                .then_some(())
        })
        .await?;
        assert!(c.log(1).contains(&format!("injected fault in the {actor} actor")));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_refused_unless_enabled() -> Result<()> {
    let c = formed(&ClusterSpec::new(1)).await?;
    let r = c.http.post(c.node(1).url("/v1/testing/faults/membership")).send().await?;
    assert_eq!(r.status().as_u16(), 403);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["code"], "fault_injection_disabled");
    assert_eq!(c.metric(1, "shoal_actor_restarts_total{actor=\"membership\"}").await, Some(0.0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_storm_stops_the_node_with_exit_code_1() -> Result<()> {
    let spec = ClusterSpec::new(1)
        .set("testing", "fault_injection = true")
        .set("supervisor", "max_restarts = 2")
        .set("supervisor", "restart_backoff_min = \"50ms\"");
    let mut c = formed(&spec).await?;
    for n in 1..=2 {
        let r = c.http.post(c.node(1).url("/v1/testing/faults/membership")).send().await?;
        assert_eq!(r.status().as_u16(), 202);
        wait_for("the restart", Duration::from_secs(10), || async {
            (c.metric(1, "shoal_actor_restarts_total{actor=\"membership\"}").await? >= f64::from(n)).then_some(())
        })
        .await?;
    }
    let r = c.http.post(c.node(1).url("/v1/testing/faults/membership")).send().await?;
    assert_eq!(r.status().as_u16(), 202);
    let status = c.wait_exit(1, Duration::from_secs(15)).await?;
    assert_eq!(status.code(), Some(1), "exit status {status}");
    assert!(c.log(1).contains("the membership actor failed 3 times"), "{}", c.log(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_a_node_down_cleanly() -> Result<()> {
    let mut c = formed(&ClusterSpec::new(3)).await?;
    c.signal(2, Signal::SIGTERM)?;
    let status = c.wait_exit(2, Duration::from_secs(15)).await?;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let log = c.log(2);
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
    // It closed its links on the way out, so the others notice at once instead of timing out.
    wait_for("node 1 to see node 2 close its link", Duration::from_secs(5), || async {
        let closed = c.metric(1, "shoal_transport_connections_closed_total{reason=\"closed_by_peer\"}").await?;
        (closed >= 1.0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_a_reachable_majority() -> Result<()> {
    let mut c = formed(&ClusterSpec::new(3)).await?;
    c.kill(2)?;
    c.kill(3)?;
    wait_for("node 1 to report not ready", Duration::from_secs(10), || async {
        (c.status_of(1, "/readyz").await? == 503).then_some(())
    })
    .await?;
    let r = c.http.get(c.node(1).url("/readyz")).send().await?;
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["code"], "no_meta_leader");
    assert_eq!(c.status_of(1, "/healthz").await, Some(200), "alive, just not ready");
    c.start_node(2)?;
    wait_for("node 1 ready again", FORM, || async { (c.status_of(1, "/readyz").await? == 200).then_some(()) }).await?;
    Ok(())
}

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
    let m = c.metrics(1).await.ok_or_else(|| anyhow!("metrics"))?;
    assert!(m.contains("route=\"unmatched\""), "unmatched paths share one label");
    assert!(!m.contains("12345"), "raw paths never become labels");
    assert!(m.contains("route=\"/v1/testing/faults/{actor}\""), "templates, not raw paths");
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

fn tls_files(dir: &Path, id: u64) -> shoal::config::TlsSection {
    shoal::config::TlsSection {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}.key")),
    }
}

fn client_endpoint() -> Result<quinn::Endpoint> {
    Ok(quinn::Endpoint::client("127.0.0.1:0".parse()?)?)
}

/// One raw request/response exchange on a new stream; returns the raw answer bytes.
async fn stream_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(bytes).await?;
    send.finish()?;
    let answer = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20)).await??;
    Ok(answer)
}

/// Connects with `identity` and makes one call; any failure is an error.
async fn raw_call(identity: &Identity, addr: std::net::SocketAddr, request: &[u8]) -> Result<Vec<u8>> {
    let endpoint = client_endpoint()?;
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect_with(identity.client_config(&Default::default())?, addr, "node-1.shoal")?,
    )
    .await??;
    stream_exchange(&conn, request).await
}

fn shoal_cmd(args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(BIN).args(args).output()?)
}

#[test]
fn cli_reports_bad_config_and_usage_with_exit_code_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[node]\nid = 0\ndata_dir = \"d\"\n[tls]\nca_cert=\"a\"\ncert=\"b\"\nkey=\"c\"\n[cluster]\njoin=[\"127.0.0.1:1\"]\n",
    )?;
    let out = shoal_cmd(&["config", "check", bad.to_str().ok_or_else(|| anyhow!("path"))?])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.id"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");

    let out = shoal_cmd(&["config", "check", "/nonexistent.toml"])?;
    assert_eq!(out.status.code(), Some(2));
    let out = shoal_cmd(&["certs", "init", "--dir", dir.path().to_str().unwrap_or("."), "--nodes", "0"])?;
    assert_eq!(out.status.code(), Some(2));
    let out = shoal_cmd(&["no-such-command"])?;
    assert_eq!(out.status.code(), Some(2));

    let certs = dir.path().join("certs");
    let out = shoal_cmd(&["certs", "init", "--dir", certs.to_str().unwrap_or("."), "--nodes", "2"])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(certs.join("node-2.key").exists());
    for example in ["../config/shoal.example.toml", "../config/cluster-3/node-1.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(example);
        let out = shoal_cmd(&["config", "check", path.to_str().unwrap_or(".")])?;
        assert_eq!(out.status.code(), Some(0), "{example}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The newcomer's tour: `dev up`, `status`, `dev kill`, `dev start`, Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_up_kill_start_status_and_ctrl_c() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dev_dir = dir.path().join("dev");
    let dev = dev_dir.to_str().ok_or_else(|| anyhow!("path"))?.to_string();
    let base = dev_base_port()?;
    let stdout_path = dir.path().join("dev-up.out");
    let mut up = std::process::Command::new(BIN)
        .args(["dev", "up", "--dir", &dev, "--base-port", &base.to_string()])
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let guard = KillOnDrop(up.id(), Some(dev_dir.join("nodes.json")));
    let http: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", base + 10 * i)).collect();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    wait_for("dev up to print its summary", Duration::from_secs(60), || async {
        std::fs::read_to_string(&stdout_path).ok().filter(|s| s.contains("Ctrl-C stops every node")).map(|_| ())
    })
    .await?;
    let summary = std::fs::read_to_string(&stdout_path)?;
    for h in &http {
        assert!(summary.contains(h.trim_start_matches("http://")), "summary lacks {h}:\n{summary}");
        assert_eq!(client.get(format!("{h}/readyz")).send().await?.status().as_u16(), 200);
    }
    let nodes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dev_dir.join("nodes.json"))?)?;
    let pid2 = nodes[1]["pid"].as_u64().ok_or_else(|| anyhow!("pid of node 2: {nodes}"))?;
    for key in ["id", "http_addr", "peer_addr", "pid", "log"] {
        assert!(!nodes[0][key].is_null(), "nodes.json lacks {key}");
    }

    let out = shoal_cmd(&["dev", "kill", "2", "--dir", &dev])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!Path::new(&format!("/proc/{pid2}")).exists() || proc_is_zombie(pid2), "node 2 still runs");
    let nodes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dev_dir.join("nodes.json"))?)?;
    assert!(nodes[1]["pid"].is_null(), "kill keeps nodes.json current");
    wait_for("status to show node 2 down", Duration::from_secs(15), || async {
        let out = shoal_cmd(&["status", "--endpoint", &http[0]]).ok()?;
        String::from_utf8_lossy(&out.stdout).contains("1 of 3 members DOWN").then_some(())
    })
    .await?;
    let out = shoal_cmd(&["status", "--endpoint", &http[0], "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["members"][1]["state"], "down");

    let out = shoal_cmd(&["dev", "start", "2", "--dir", &dev])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("status to show all up", Duration::from_secs(15), || async {
        let out = shoal_cmd(&["status", "--endpoint", &http[0]]).ok()?;
        String::from_utf8_lossy(&out.stdout).contains("all 3 members up").then_some(())
    })
    .await?;
    let nodes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dev_dir.join("nodes.json"))?)?;
    let pids: Vec<u64> = (0..3).filter_map(|i| nodes[i]["pid"].as_u64()).collect();
    assert_eq!(pids.len(), 3, "{nodes}");

    // Ctrl-C: every node stops, including the one `dev start` launched.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), Signal::SIGINT)?;
    let status = wait_for("dev up to exit", Duration::from_secs(40), || {
        let s = up.try_wait().ok().flatten();
        async move { s }
    })
    .await?;
    drop(guard);
    assert!(status.success(), "dev up exited with {status}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid as u32 as u64),
            "node pid {pid} survived"
        );
    }
    Ok(())
}

fn proc_is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// A base port whose six dev ports (P, P+1, P+10, P+11, P+20, P+21) are free.
fn dev_base_port() -> Result<u16> {
    for _ in 0..200 {
        let p = cluster_tests::harness::free_port()?;
        if p > 65000 {
            continue;
        }
        let free = [0u16, 1, 10, 11, 20, 21].iter().all(|o| {
            std::net::TcpListener::bind(("127.0.0.1", p + o)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p + o)).is_ok()
        });
        if free {
            return Ok(p);
        }
    }
    bail!("no free port range for dev up")
}

/// SIGKILLs a process when dropped (a failing test included) and, for `dev up`, the nodes listed
/// in its `nodes.json`, which run in process groups of their own and would outlive it.
struct KillOnDrop(u32, Option<std::path::PathBuf>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        let nodes = self.1.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
        let nodes: Vec<serde_json::Value> = nodes.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let dir = self.1.as_ref().and_then(|p| p.parent()).map(|d| d.to_string_lossy().into_owned());
        for pid in nodes.iter().filter_map(|n| n["pid"].as_u64()) {
            // Only this cluster's nodes (their command line names its directory): a stale pid may
            // have been reused.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if dir.as_ref().is_some_and(|d| String::from_utf8_lossy(&cmdline).contains(d.as_str())) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

mod counters {
    use super::*;

    /// A formed cluster whose every Raft group (meta and partitions) has elected a leader.
    pub(super) async fn led(spec: &ClusterSpec) -> Result<Cluster> {
        let c = formed(spec).await?;
        let ids: Vec<u64> = c.nodes.keys().copied().collect();
        wait_for("every group to have a leader", FORM, || async {
            let groups = leaders(&c, &ids).await;
            let partitions = c.get_json(1, "/v1/cluster").await?["partitions"].as_array()?.len();
            (partitions > 0 && groups.len() == partitions + 1).then_some(())
        })
        .await?;
        Ok(c)
    }

    /// Every group's state as its leader reports it (`role == "leader"`), asked of `ids`.
    async fn leaders(c: &Cluster, ids: &[u64]) -> std::collections::BTreeMap<u64, serde_json::Value> {
        let mut out = std::collections::BTreeMap::new();
        for id in ids {
            let Some(v) = c.get_json(*id, "/v1/cluster").await else { continue };
            let meta = std::iter::once(&v["meta"]).filter(|m| m["leader"].as_u64() == Some(*id));
            for g in v["partitions"].as_array().into_iter().flatten() {
                if g["role"] == "leader"
                    && let Some(gid) = g["id"].as_u64()
                {
                    out.insert(gid, g.clone());
                }
            }
            for m in meta {
                out.insert(0, m.clone());
            }
        }
        out
    }
    use cluster_tests::history::{Kind, Op, Outcome, check_counter};
    use std::sync::{Arc, Mutex};

    /// `POST /v1/counters/{name}/increment` by 1 on `node`, once.
    async fn post_increment(c: &Cluster, node: u64, name: &str) -> reqwest::Result<reqwest::Response> {
        c.http
            .post(c.node(node).url(&format!("/v1/counters/{name}/increment")))
            .json(&serde_json::json!({"by": 1}))
            .send()
            .await
    }

    /// One increment by 1. A 503 `no_leader` answer means nothing was proposed, so it is
    /// retried; any other failure is returned.
    pub(super) async fn increment(c: &Cluster, node: u64, name: &str) -> Result<u64> {
        wait_for_result("an increment", FORM, || async {
            let r = post_increment(c, node, name).await?;
            let status = r.status();
            let v: serde_json::Value = r.json().await?;
            if status.as_u16() == 503 && v["error"]["code"] == "no_leader" {
                return Ok(None);
            }
            anyhow::ensure!(status.is_success(), "status {status}: {v}");
            Ok(Some(v["value"].as_u64().ok_or_else(|| anyhow!("no value in {v}"))?))
        })
        .await
    }

    async fn read(c: &Cluster, node: u64, name: &str) -> Result<u64> {
        let v = c.get_json(node, &format!("/v1/counters/{name}")).await.ok_or_else(|| anyhow!("read failed"))?;
        v["value"].as_u64().ok_or_else(|| anyhow!("no value in {v}"))
    }

    /// The node leading `group`, as node `observer` sees it.
    pub(super) async fn leader_of(c: &Cluster, observer: u64, group: u64) -> Option<u64> {
        let v = c.get_json(observer, "/v1/cluster").await?;
        if group == 0 {
            return v["meta"]["leader"].as_u64();
        }
        v["partitions"].as_array()?.iter().find(|p| p["id"].as_u64() == Some(group))?["leader"].as_u64()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_work_from_every_node_and_refuse_bad_input() -> Result<()> {
        let c = led(&ClusterSpec::new(3)).await?;
        let mut expected = 0;
        for node in [1, 2, 3, 1, 2, 3] {
            expected += 1;
            assert_eq!(increment(&c, node, "visits").await?, expected);
        }
        let r = c
            .http
            .post(c.node(2).url("/v1/counters/visits/increment"))
            .json(&serde_json::json!({"by": 10}))
            .send()
            .await?;
        assert_eq!(r.json::<serde_json::Value>().await?["value"], 16);
        for node in [1, 2, 3] {
            assert_eq!(read(&c, node, "visits").await?, 16, "node {node}");
            assert_eq!(read(&c, node, "never-touched").await?, 0);
        }
        for (path, body, code) in [
            ("/v1/counters/visits/increment", serde_json::json!({"by": 0}), "invalid_body"),
            ("/v1/counters/visits/increment", serde_json::json!({"by": -1}), "invalid_body"),
            ("/v1/counters/visits/increment", serde_json::json!({"step": 1}), "invalid_body"),
            ("/v1/counters/bad%20name/increment", serde_json::json!({"by": 1}), "invalid_name"),
        ] {
            let r = c.http.post(c.node(1).url(path)).json(&body).send().await?;
            assert_eq!(r.status().as_u16(), 400, "{path} {body}");
            let v: serde_json::Value = r.json().await?;
            assert_eq!(v["error"]["code"], code, "{path} {body}");
        }
        let r = c.http.post(c.node(1).url("/v1/counters/visits/increment")).body("{not json").send().await?;
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(read(&c, 3, "visits").await?, 16, "refused requests changed nothing");
        // The partition's leader reports each follower's progress; once idle, nobody lags and
        // everything in its log is committed.
        let group = shoal::placement::partition_of("visits", 4);
        wait_for("followers caught up, everything committed and applied", FORM, || async {
            let g = leaders(&c, &[1, 2, 3]).await.remove(&group)?;
            let replicas = g["replication"].as_array()?;
            let followers: Vec<_> = replicas.iter().filter(|r| r["node"] != g["leader"]).collect();
            let caught_up = followers.len() == 2 && followers.iter().all(|r| r["lag"] == 0);
            let committed = g["commit_index"] == g["last_log_index"] && g["applied_index"] == g["commit_index"];
            // Each follower reports the commit index the leader told it.
            let mut followers_know = true;
            for r in &followers {
                let v = c.get_json(r["node"].as_u64()?, "/v1/cluster").await?;
                let row = v["partitions"].as_array()?.iter().find(|p| p["id"].as_u64() == Some(group))?.clone();
                followers_know &= row["role"] == "follower" && row["commit_index"] == g["commit_index"];
            }
            (caught_up && committed && followers_know).then_some(())
        })
        .await?;
        Ok(())
    }

    /// Closed-loop clients on `nodes` increment (and sometimes read) `name` until `stop`.
    fn spawn_clients(
        c: &Arc<Cluster>,
        nodes: &[u64],
        name: &'static str,
        history: &Arc<Mutex<Vec<Op>>>,
        stop: &Arc<std::sync::atomic::AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (i, node) in nodes.iter().copied().enumerate() {
            let (c, history, stop) = (Arc::clone(c), Arc::clone(history), Arc::clone(stop));
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                // Bounded: the stop flag, and at most 5,000 operations per client.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5_000 {
                    n += 1;
                    let kind = if (n + i as u64) % 5 == 0 { Kind::Read } else { Kind::Increment };
                    let start = Instant::now();
                    let result = match kind {
                        Kind::Increment => {
                            c.http
                                .post(c.node(node).url(&format!("/v1/counters/{name}/increment")))
                                .json(&serde_json::json!({"by": 1}))
                                .send()
                                .await
                        }
                        Kind::Read => c.http.get(c.node(node).url(&format!("/v1/counters/{name}"))).send().await,
                    };
                    let outcome = match result {
                        // Never sent: the node is down; certainly not applied.
                        Err(e) if e.is_connect() => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
                            Ok(v) => v["value"].as_u64().map(Outcome::Ok).unwrap_or(Outcome::Unknown),
                            Err(_) => Outcome::Unknown,
                        },
                        _ => Outcome::Unknown,
                    };
                    history.lock().unwrap_or_else(|e| e.into_inner()).push(Op {
                        kind,
                        start,
                        end: Instant::now(),
                        outcome,
                    });
                }
            }));
        }
        tasks
    }

    async fn first_ack_after(history: &Mutex<Vec<Op>>, t: Instant, deadline: Duration) -> Result<Duration> {
        wait_for("an acknowledged increment after the kill", deadline, || async {
            let h = history.lock().unwrap_or_else(|e| e.into_inner());
            h.iter()
                .filter(|o| o.kind == Kind::Increment && o.start > t && matches!(o.outcome, Outcome::Ok(_)))
                .map(|o| o.end - t)
                .min()
        })
        .await
    }

    async fn ops_after(history: &Mutex<Vec<Op>>, t: Instant, count: usize, deadline: Duration) -> Result<()> {
        wait_for("more acknowledged operations", deadline, || async {
            let h = history.lock().unwrap_or_else(|e| e.into_inner());
            (h.iter().filter(|o| o.start > t && matches!(o.outcome, Outcome::Ok(_))).count() >= count).then_some(())
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_acknowledged_increment_is_lost_when_leaders_are_sigkilled() -> Result<()> {
        const NAME: &str = "linearized";
        let mut c = led(&ClusterSpec::new(3)).await?;
        // HTTP clients use a view of the same nodes; `c` keeps owning (and killing) the processes.
        let view = Arc::new(c.client_view());
        let group = shoal::placement::partition_of(NAME, 4);
        let history = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Phase 1: kill the counter's partition leader under load; phase 2: the meta leader.
        for (phase, target_group) in [(1, group), (2, 0)] {
            let victim = wait_for("a leader to kill", FORM, || async {
                for observer in [1, 2, 3] {
                    if let Some(l) = leader_of(&view, observer, target_group).await {
                        return Some(l);
                    }
                }
                None
            })
            .await?;
            let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != victim).collect();
            let clients = spawn_clients(&view, &[1, 2, 3, 1, 2, 3], NAME, &history, &stop);
            ops_after(&history, Instant::now(), 30, Duration::from_secs(20)).await.context("load before the kill")?;
            c.kill(victim)?;
            let killed = Instant::now();
            let failover = first_ack_after(&history, killed, Duration::from_secs(20)).await?;
            eprintln!(
                "phase {phase}: killed node {victim} (leader of group {target_group}); first acknowledged increment after {failover:?}"
            );
            ops_after(&history, killed + failover, 30, Duration::from_secs(20))
                .await
                .context("load after the failover")?;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for t in clients {
                t.await?;
            }
            stop.store(false, std::sync::atomic::Ordering::Relaxed);
            c.start_node(victim)?;
            c.wait_ready(&survivors, FORM).await?;
        }
        c.wait_ready(&[1, 2, 3], FORM).await?;
        let mut finals = Vec::new();
        for node in [1, 2, 3] {
            finals.push(wait_for("a linearizable read", FORM, || async { read(&c, node, NAME).await.ok() }).await?);
        }
        assert!(finals.windows(2).all(|w| w[0] == w[1]), "nodes disagree: {finals:?}");
        let h = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let acked = h.iter().filter(|o| o.kind == Kind::Increment && matches!(o.outcome, Outcome::Ok(_))).count();
        eprintln!("{} operations, {acked} acknowledged increments, final value {}", h.len(), finals[0]);
        assert!(acked >= 120, "the load made progress in both phases");
        check_counter(&h, finals[0]).map_err(|e| anyhow!("history is not linearizable: {e}"))?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_joins_through_a_member_becomes_a_meta_voter_and_takes_replicas() -> Result<()> {
        let mut c = formed(&ClusterSpec::new(3)).await?;
        let id = c.add_joining_node(1)?;
        c.start_node(id)?;
        c.wait_all_see_up(&[1, 2, 3, id], &[1, 2, 3, id], FORM).await?;
        let all = [1, 2, 3, id];
        // Recorded in meta state, added to the meta group as a learner, then made a voter (meta
        // has up to five voters), after which it serves like any member.
        wait_for("the joined node to become a meta voter", Duration::from_secs(60), || async {
            let meta = leaders(&c, &all).await.remove(&0)?;
            let layout = c.get_json(meta["leader"].as_u64()?, "/v1/cluster").await?["layout"]["groups"]["0"].clone();
            let joined = serde_json::json!(id);
            (meta["replicas"].as_array()?.contains(&joined) && layout.as_array()?.contains(&joined)).then_some(())
        })
        .await?;
        c.wait_ready(&[id], FORM).await?;
        // Partitions then rebalance onto it: 4 partitions × 3 replicas over 4 nodes is 3 each,
        // and the groups' real voters follow the layout.
        wait_for("partition replicas to spread onto the joined node", Duration::from_secs(90), || async {
            let v = c.get_json(1, "/v1/cluster").await?;
            let groups = v["layout"]["groups"].as_object()?.clone();
            let mut per_node = std::collections::BTreeMap::new();
            for (_, r) in groups.iter().filter(|(g, _)| *g != "0") {
                for n in r.as_array()? {
                    *per_node.entry(n.as_u64()?).or_insert(0) += 1;
                }
            }
            if per_node.get(&id) != Some(&3) || per_node.values().any(|l| *l != 3) {
                return None;
            }
            let led = leaders(&c, &all).await;
            let follow = groups
                .iter()
                .filter(|(g, _)| *g != "0")
                .all(|(g, r)| g.parse::<u64>().ok().and_then(|gid| led.get(&gid)).is_some_and(|l| &l["replicas"] == r));
            follow.then_some(())
        })
        .await?;
        assert_eq!(increment(&c, id, "joined").await?, 1);
        // Each founder gave one replica away: once the group's committed membership leaves it
        // out, it stops hosting the group and deletes its data.
        wait_for("founders to stop hosting the groups they gave away", Duration::from_secs(60), || async {
            for n in [1, 2, 3] {
                let v = c.get_json(n, "/v1/cluster").await?;
                let layout = v["layout"]["groups"].as_object()?.clone();
                for p in v["partitions"].as_array()? {
                    let listed =
                        layout.get(&p["id"].as_u64()?.to_string())?.as_array()?.contains(&serde_json::json!(n));
                    if (p["role"] != "none") != listed {
                        return None;
                    }
                }
                if c.metric(n, "shoal_raft_groups_removed_total").await? < 1.0 {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        // Every node still serves every partition (through the leaders of those it left).
        for i in 0..8u64 {
            for n in [1, 2, 3, id] {
                increment(&c, n, &format!("after-join-{i}")).await?;
            }
            let name = format!("after-join-{i}");
            // A hand-over may pause the partition for a moment: reads are retried until they answer.
            let v = wait_for("a read", FORM, || async { read(&c, i % 3 + 1, &name).await.ok() }).await?;
            assert_eq!(v, 4, "{name}");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_stopped_by_a_storage_fault_restarts_alone_from_storage() -> Result<()> {
        let c = led(&ClusterSpec::new(3).set("testing", "fault_injection = true")).await?;
        let name = "fatal-write";
        assert_eq!(increment(&c, 1, name).await?, 1);
        let group = shoal::placement::partition_of(name, 4);
        let leader = wait_for("the partition's leader", FORM, || leader_of(&c, 1, group)).await?;
        let raft_restarts = r#"shoal_actor_restarts_total{actor="raft"}"#;
        let actor_restarts_before = c.metric(leader, raft_restarts).await.ok_or_else(|| anyhow!("metrics"))?;
        let r = c.http.post(c.node(leader).url(&format!("/v1/testing/faults/storage/{group}"))).send().await?;
        assert_eq!(r.status().as_u16(), 202);
        // The leader's next write of that group fails: openraft stops the group with a fatal
        // storage error, and the Raft actor restarts that group, and only it, from storage. The
        // increment that hit the fault has an unknown outcome (it may reach the followers).
        let hit = post_increment(&c, leader, name).await?;
        let hit_ok = hit.status().is_success();
        let series = format!(r#"shoal_raft_group_restarts_total{{group="{group}"}}"#);
        wait_for("the group to restart from storage", FORM, || async {
            (c.metric(leader, &series).await? >= 1.0).then_some(())
        })
        .await?;
        assert!(c.log(leader).contains("injected storage fault"), "the fault was hit");
        // The group's own actor failed, and the Raft actor (its supervisor) restarted that group.
        assert!(c.log(leader).contains(&format!("raft group {group} stopped")), "the group actor failed");
        let metrics = c.metrics(leader).await.ok_or_else(|| anyhow!("metrics"))?;
        let restarted: Vec<&str> =
            metrics.lines().filter(|l| l.starts_with("shoal_raft_group_restarts_total{")).collect();
        assert_eq!(restarted.len(), 1, "only the failed group restarted: {restarted:?}");
        assert_eq!(c.metric(leader, raft_restarts).await, Some(actor_restarts_before), "the raft actor kept running");
        assert_eq!(c.status_of(leader, "/healthz").await, Some(200));
        // The group serves again, with every acknowledged increment (and maybe the unknown one).
        let v = increment(&c, leader, name).await?;
        if hit_ok {
            assert_eq!(v, 3);
        } else {
            assert!(v == 2 || v == 3, "value {v} after one acknowledged and one unknown increment");
        }
        for node in [1, 2, 3] {
            assert_eq!(increment(&c, node, "fatal-elsewhere").await?, node, "other counters");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_leaders_start_spread_over_the_founders() -> Result<()> {
        let c = led(&ClusterSpec::new(3).set("raft", "partitions = 6")).await?;
        let per_node = leads_per_node(&c, &[1, 2, 3]).await;
        assert_eq!(per_node, std::collections::BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
        let groups = leaders(&c, &[1, 2, 3]).await;
        assert_eq!(groups.get(&0).and_then(|m| m["leader"].as_u64()), Some(1), "meta starts on the lowest id");
        Ok(())
    }

    /// Partitions led by each node, as the leaders report them (meta left out).
    async fn leads_per_node(c: &Cluster, ids: &[u64]) -> std::collections::BTreeMap<u64, usize> {
        let mut per_node = std::collections::BTreeMap::new();
        for (_, g) in leaders(c, ids).await.iter().filter(|(id, _)| **id > 0) {
            *per_node.entry(g["leader"].as_u64().unwrap_or(0)).or_insert(0) += 1;
        }
        per_node
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leadership_returns_to_a_restarted_node_once_it_caught_up() -> Result<()> {
        let mut c = led(&ClusterSpec::new(3).set("raft", "partitions = 6")).await?;
        c.kill(3)?;
        // Node 3's partitions elect leaders on 1 and 2.
        wait_for("nodes 1 and 2 to lead every partition", FORM, || async {
            let per_node = leads_per_node(&c, &[1, 2]).await;
            (per_node.values().sum::<usize>() == 6).then_some(())
        })
        .await?;
        // Written while node 3 is down: it has to catch up before it may lead again.
        let names: Vec<String> = (0..12).map(|i| format!("handover-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            increment(&c, (i % 2) as u64 + 1, name).await?;
        }
        c.start_node(3)?;
        c.wait_ready(&[3], FORM).await?;
        let spread = std::collections::BTreeMap::from([(1, 2), (2, 2), (3, 2)]);
        wait_for("leaders to spread over the three nodes again", Duration::from_secs(90), || async {
            (leads_per_node(&c, &[1, 2, 3]).await == spread).then_some(())
        })
        .await?;
        let mut handed_over = 0.0;
        for id in [1, 2] {
            handed_over += c.metric(id, r#"shoal_raft_leader_transfers_total{outcome="done"}"#).await.unwrap_or(0.0);
        }
        // At least one came back by hand-over (a restarted node's higher term may also win it an
        // election of its own: openraft 0.9 has no pre-vote).
        assert!(handed_over >= 1.0, "node 3 took partitions back by hand-over, counted: {handed_over}");
        // Nothing written before was lost, and the counters take writes through every node.
        for (i, name) in names.iter().enumerate() {
            assert_eq!(increment(&c, (i % 3) as u64 + 1, name).await?, 2, "{name}");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_of_a_dead_node_move_to_the_spare_nodes() -> Result<()> {
        let spec = ClusterSpec::new(5).set("placement", "dead_after = \"3s\"");
        let mut c = led(&spec).await?;
        let live = [1, 2, 3, 4];
        let names: Vec<String> = (0..16).map(|i| format!("moved-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            for _ in 0..=(i % 3) {
                increment(&c, (i % 4) as u64 + 1, name).await?;
            }
        }
        let before = c.get_json(1, "/v1/cluster").await.ok_or_else(|| anyhow!("no cluster view"))?;
        let version = before["layout"]["version"].as_u64().ok_or_else(|| anyhow!("no layout in {before}"))?;
        let on_dead: Vec<String> = before["layout"]["groups"]
            .as_object()
            .ok_or_else(|| anyhow!("no layout groups"))?
            .iter()
            .filter(|(g, r)| *g != "0" && r.as_array().is_some_and(|r| r.contains(&serde_json::json!(5))))
            .map(|(g, _)| g.clone())
            .collect();
        assert!(!on_dead.is_empty(), "node 5 replicates some partition: {}", before["layout"]);
        c.kill(5)?;
        // The driver declares node 5 dead after `dead_after`, moves its replicas to spare nodes in
        // the layout, and every group's real Raft voters follow it.
        let moved = wait_for("every replica of node 5 to move to a live node", Duration::from_secs(90), || async {
            let v = c.get_json(1, "/v1/cluster").await?;
            let layout = v["layout"].clone();
            let groups = layout["groups"].as_object()?;
            let partitions_ok = groups.iter().filter(|(g, _)| *g != "0").all(|(_, r)| {
                let r = r.as_array().cloned().unwrap_or_default();
                r.len() == 3 && !r.contains(&serde_json::json!(5))
            });
            if layout["version"].as_u64()? <= version || !partitions_ok {
                return None;
            }
            let led = leaders(&c, &live).await;
            let follow = groups.iter().filter(|(g, _)| *g != "0").all(|(g, r)| {
                let Ok(id) = g.parse::<u64>() else { return false };
                led.get(&id)
                    .is_some_and(|l| &l["replicas"] == r && l["learners"].as_array().is_some_and(|x| x.is_empty()))
            });
            follow.then_some(layout)
        })
        .await;
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                for id in live {
                    let log = c.log(id);
                    let interesting: Vec<&str> = log
                        .lines()
                        .filter(|l| {
                            l.contains("WARN") || l.contains("ERROR") || l.contains("moved") || l.contains("membership")
                        })
                        .collect();
                    eprintln!("--- node {id}: {:?}\n{}", c.get_json(id, "/v1/cluster").await, interesting.join("\n"));
                }
                return Err(e);
            }
        };
        eprintln!("layout after node 5 died: {moved}");
        let v = c.get_json(1, "/v1/cluster").await.ok_or_else(|| anyhow!("no cluster view"))?;
        let five = v["members"].as_array().and_then(|m| m.iter().find(|m| m["id"] == 5).cloned());
        assert_eq!(five.map(|m| m["dead"].clone()), Some(serde_json::json!(true)), "node 5 is recorded dead");
        let mut moves = 0.0;
        let mut lag_series = 0;
        for id in live {
            let m = c.metrics(id).await.unwrap_or_default();
            lag_series += m.lines().filter(|l| l.starts_with("shoal_raft_replica_lag_entries{")).count();
            moves += cluster_tests::harness::sample(&m, "shoal_placement_moves_total{kind=\"replace\"}").unwrap_or(0.0);
        }
        assert!(moves >= on_dead.len() as f64, "{moves} replace moves counted for {} partitions", on_dead.len());
        assert!(lag_series >= 3 * 2, "every partition leader exports its followers' lag ({lag_series} series)");
        // Nothing acknowledged was lost, and every partition takes writes on its new replicas.
        for (i, name) in names.iter().enumerate() {
            let node = (i % 4) as u64 + 1;
            let v = wait_for("a read after the move", FORM, || async { read(&c, node, name).await.ok() }).await?;
            assert_eq!(v, (i % 3) as u64 + 1, "{name}");
            assert_eq!(increment(&c, (i as u64 + 1) % 4 + 1, name).await?, (i % 3) as u64 + 2, "{name}");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_counter_survives_a_restart_of_all_nodes_at_once() -> Result<()> {
        let mut c = led(&ClusterSpec::new(3)).await?;
        let names: Vec<String> = (0..12).map(|i| format!("survivor-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            for _ in 0..=i {
                increment(&c, (i % 3) as u64 + 1, name).await?;
            }
        }
        for id in [1, 2, 3] {
            c.kill(id)?;
        }
        for id in [1, 2, 3] {
            c.start_node(id)?;
        }
        c.wait_ready(&[1, 2, 3], FORM).await?;
        for (i, name) in names.iter().enumerate() {
            let v =
                wait_for("a read after the restart", FORM, || async { read(&c, (i % 3) as u64 + 1, name).await.ok() })
                    .await?;
            assert_eq!(v, i as u64 + 1, "{name}");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_compacted_log_catches_up_by_snapshot() -> Result<()> {
    let spec = ClusterSpec::new(3)
        .set("raft", "partitions = 1")
        .set("raft", "snapshot_after_entries = 100")
        .set("raft", "keep_logs_after_snapshot = 0");
    let mut c = formed(&spec).await?;
    let group_of = |v: &serde_json::Value| v["partitions"][0].clone();
    let leader = wait_for("a partition leader", FORM, || async {
        group_of(&c.get_json(1, "/v1/cluster").await?)["leader"].as_u64()
    })
    .await?;
    // A follower falls behind while it is down.
    let lagger = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap_or(3);
    let behind = group_of(&c.get_json(lagger, "/v1/cluster").await.ok_or_else(|| anyhow!("view"))?)["last_log_index"]
        .as_u64()
        .ok_or_else(|| anyhow!("last_log_index"))?;
    c.kill(lagger)?;
    for i in 1..=350u64 {
        assert_eq!(counters::increment(&c, leader, "compacted").await?, i);
    }
    // The leader has snapshotted and purged past everything node 3 has.
    let purged = wait_for("the leader to purge its log", FORM, || async {
        group_of(&c.get_json(leader, "/v1/cluster").await?)["purged_index"].as_u64().filter(|p| *p > behind)
    })
    .await?;
    c.start_node(lagger)?;
    let caught_up = wait_for("the lagging node to install a snapshot and catch up", FORM, || async {
        let g = group_of(&c.get_json(lagger, "/v1/cluster").await?);
        let snap = g["snapshot_index"].as_u64()?;
        (snap >= purged && g["commit_index"].as_u64()? >= purged).then_some(snap)
    })
    .await?;
    eprintln!("node {lagger} was at {behind}, leader purged to {purged}, it installed a snapshot at {caught_up}");
    // With the caught-up node and one other left, the counter is intact.
    let other = [1, 2, 3].into_iter().find(|n| *n != leader && *n != lagger).unwrap_or(1);
    c.kill(leader)?;
    let v = wait_for("a read without the old leader", FORM, || async {
        c.get_json(other, "/v1/counters/compacted").await?["value"].as_u64()
    })
    .await?;
    assert_eq!(v, 350);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sign_up_and_their_tokens_authenticate_on_every_node() -> Result<()> {
    let c = formed(&ClusterSpec::new(3)).await?;
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let r = plain.post(c.node(1).url("/v1/users")).json(&serde_json::json!({"name": "ada"})).send().await?;
    assert_eq!(r.status().as_u16(), 201);
    let user: serde_json::Value = r.json().await?;
    let token = user["token"].as_str().ok_or_else(|| anyhow!("no token in {user}"))?.to_string();
    assert_eq!(user["name"], "ada");
    // Right away, on another node: a miss in local state falls back to the meta leader.
    for node in [2, 3, 1] {
        let r = plain.get(c.node(node).url("/v1/users/me")).bearer_auth(&token).send().await?;
        assert_eq!(r.status().as_u16(), 200, "node {node}");
        let me: serde_json::Value = r.json().await?;
        assert_eq!(me["id"], user["id"]);
        assert_eq!(me["name"], "ada");
    }
    // The user's token works for counters (retrying while the partition still elects a leader).
    let status = wait_for_result("an authenticated increment", FORM, || async {
        let r = plain.post(c.node(2).url("/v1/counters/mine/increment")).bearer_auth(&token).send().await?;
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await?;
        Ok((status != 503 || v["error"]["code"] != "no_leader").then_some(status))
    })
    .await?;
    assert_eq!(status, 200);
    for (auth, code) in
        [(None, "missing_token"), (Some("Bearer nope"), "invalid_token"), (Some("Basic x"), "invalid_token")]
    {
        let mut req = plain.get(c.node(1).url("/v1/counters/mine"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await?;
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(r.json::<serde_json::Value>().await?["error"]["code"], code);
    }
    for body in [serde_json::json!({}), serde_json::json!({"name": ""}), serde_json::json!({"name": "a\u{7}b"})] {
        let r = plain.post(c.node(1).url("/v1/users")).json(&body).send().await?;
        assert_eq!(r.status().as_u16(), 400, "{body}");
    }
    // /v1/cluster needs no token.
    assert_eq!(plain.get(c.node(1).url("/v1/cluster")).send().await?.status().as_u16(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_signup_needs_the_admin_token() -> Result<()> {
    let c = formed(&ClusterSpec::new(1).set("auth", "open_signup = false")).await?;
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let r = plain.post(c.node(1).url("/v1/users")).json(&serde_json::json!({"name": "eve"})).send().await?;
    assert_eq!(r.status().as_u16(), 401);
    let r = c.http.post(c.node(1).url("/v1/users")).json(&serde_json::json!({"name": "bob"})).send().await?;
    assert_eq!(r.status().as_u16(), 201, "the admin may create users");
    let token = r.json::<serde_json::Value>().await?["token"].as_str().unwrap_or_default().to_string();
    let r = plain
        .post(c.node(1).url("/v1/users"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403, "a user may not");
    Ok(())
}

mod urls {
    use super::counters::{leader_of, led};
    use super::*;
    use serde_json::{Value, json};

    /// A client that does not follow redirects (so a 302 is seen as one) and sends the admin token.
    fn no_follow() -> Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers
            .insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", cluster_tests::harness::ADMIN_TOKEN).parse()?);
        Ok(reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()?)
    }

    /// `POST /v1/urls` on `node`, retrying 503s (no leader yet, or a failover under way: a
    /// retry after an unknown outcome may leave one extra link, which these tests allow);
    /// answers status and body.
    async fn shorten(c: &Cluster, node: u64, body: Value) -> Result<(u16, Value)> {
        wait_for_result("a shorten", FORM, || async {
            let r = c.http.post(c.node(node).url("/v1/urls")).json(&body).send().await?;
            let status = r.status().as_u16();
            let v: Value = r.json().await?;
            Ok((status != 503).then_some((status, v)))
        })
        .await
    }

    async fn created(c: &Cluster, node: u64, body: Value) -> Result<String> {
        let (status, v) = shorten(c, node, body).await?;
        anyhow::ensure!(status == 201, "shorten answered {status}: {v}");
        Ok(v["code"].as_str().ok_or_else(|| anyhow!("no code in {v}"))?.to_string())
    }

    /// Status and `Location` of `GET /{code}` on `node`.
    async fn visit(client: &reqwest::Client, c: &Cluster, node: u64, code: &str) -> Result<(u16, Option<String>)> {
        let r = client.get(c.node(node).url(&format!("/{code}"))).send().await?;
        let location = r.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
        Ok((r.status().as_u16(), location))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shortened_links_redirect_from_every_node_and_bad_input_is_refused() -> Result<()> {
        let c = led(&ClusterSpec::new(3)).await?;
        let client = no_follow()?;
        let mut codes = Vec::new();
        for node in [1, 2, 3] {
            let (status, v) = shorten(&c, node, json!({"url": format!("https://example.com/page/{node}?q=1")})).await?;
            assert_eq!(status, 201, "{v}");
            let code = v["code"].as_str().unwrap_or_default().to_string();
            assert_eq!(code.len(), 7, "{v}");
            assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
            assert_eq!(v["short_url"], format!("http://{}/{code}", c.node(node).http));
            assert!(v["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')), "{v}");
            codes.push((code, format!("https://example.com/page/{node}?q=1")));
        }
        let distinct: std::collections::BTreeSet<_> = codes.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(distinct.len(), 3, "codes are unique: {codes:?}");
        // Write affinity: each node handed out a code of a partition it leads.
        for (i, (code, _)) in codes.iter().enumerate() {
            let group = shoal::placement::partition_of(code, 4);
            assert_eq!(leader_of(&c, 1, group).await, Some(i as u64 + 1), "{code} (group {group})");
        }
        // Right after creation, from every node (a replica that has not applied the link yet asks
        // the leader).
        for (code, target) in &codes {
            for node in [3, 2, 1] {
                assert_eq!(visit(&client, &c, node, code).await?, (302, Some(target.clone())), "{code} on {node}");
            }
        }
        // Aliases: taken once, 409 after.
        let alias = created(&c, 2, json!({"url": "http://example.org/", "alias": "launch-day_1"})).await?;
        assert_eq!(alias, "launch-day_1");
        let (status, v) = shorten(&c, 3, json!({"url": "http://example.org/other", "alias": "launch-day_1"})).await?;
        assert_eq!((status, v["error"]["code"].as_str()), (409, Some("alias_taken")), "{v}");
        assert_eq!(visit(&client, &c, 1, "launch-day_1").await?, (302, Some("http://example.org/".into())));
        // Bad input: 400 with a code naming what is wrong, and nothing created.
        let own = format!("http://{}/launch-day_1", c.node(2).http);
        for (body, code) in [
            (json!({"url": "ftp://example.com/file"}), "invalid_url"),
            (json!({"url": "javascript:alert(1)"}), "invalid_url"),
            (json!({"url": "no scheme here"}), "invalid_url"),
            (json!({"url": "https://user:secret@example.com/"}), "invalid_url"),
            (json!({"url": format!("https://example.com/{}", "a".repeat(2048))}), "invalid_url"),
            (json!({"url": own}), "invalid_url"),
            (json!({"url": "https://example.com/", "alias": "ab"}), "invalid_alias"),
            (json!({"url": "https://example.com/", "alias": "has/slash"}), "invalid_alias"),
            (json!({"url": "https://example.com/", "alias": "metrics"}), "invalid_alias"),
            (json!({"url": "https://example.com/", "expires_at": "2001-01-01T00:00:00Z"}), "invalid_expires_at"),
            (json!({"url": "https://example.com/", "expires_at": "tomorrow"}), "invalid_expires_at"),
            (json!({"link": "https://example.com/"}), "invalid_body"),
        ] {
            let r = c.http.post(c.node(1).url("/v1/urls")).json(&body).send().await?;
            assert_eq!(r.status().as_u16(), 400, "{body}");
            let v: Value = r.json().await?;
            assert_eq!(v["error"]["code"], code, "{body}: {v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        assert_eq!(visit(&client, &c, 1, "ab").await?.0, 404);
        assert_eq!(visit(&client, &c, 2, "nosuchcode").await?.0, 404);
        // Shortening needs a token.
        let plain = reqwest::Client::new();
        let r = plain.post(c.node(1).url("/v1/urls")).json(&json!({"url": "https://example.com/"})).send().await?;
        assert_eq!(r.status().as_u16(), 401);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleted_and_expired_links_answer_410_everywhere_and_only_owners_see_them() -> Result<()> {
        let c = led(&ClusterSpec::new(3)).await?;
        let client = no_follow()?;
        // A user of their own (the admin may see and delete anything).
        let r = reqwest::Client::new().post(c.node(1).url("/v1/users")).json(&json!({"name": "owner"})).send().await?;
        let token = r.json::<Value>().await?["token"].as_str().unwrap_or_default().to_string();
        let r = reqwest::Client::new().post(c.node(1).url("/v1/users")).json(&json!({"name": "other"})).send().await?;
        let other = r.json::<Value>().await?["token"].as_str().unwrap_or_default().to_string();
        let user = cluster_tests::harness::plain_client()?;
        let r = user
            .post(c.node(2).url("/v1/urls"))
            .bearer_auth(&token)
            .json(&json!({"url": "https://example.com/doomed"}))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 201);
        let code = r.json::<Value>().await?["code"].as_str().unwrap_or_default().to_string();
        // Cached on every node.
        for node in [1, 2, 3] {
            assert_eq!(visit(&client, &c, node, &code).await?.0, 302);
        }
        // Someone else may neither see nor delete it.
        let path = format!("/v1/urls/{code}");
        let r = user.get(c.node(1).url(&path)).bearer_auth(&other).send().await?;
        assert_eq!(r.status().as_u16(), 403);
        let r = user.delete(c.node(1).url(&path)).bearer_auth(&other).send().await?;
        assert_eq!(r.status().as_u16(), 403);
        assert_eq!(visit(&client, &c, 3, &code).await?.0, 302);
        let r = user.get(c.node(3).url(&path)).bearer_auth(&token).send().await?;
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await?;
        assert_eq!((v["status"].as_str(), v["url"].as_str()), (Some("active"), Some("https://example.com/doomed")));
        // Deleted on node 3: every node answers 410 within a second (node 3 tells the others).
        let r = user.delete(c.node(3).url(&path)).bearer_auth(&token).send().await?;
        assert_eq!(r.status().as_u16(), 204);
        let deleted = Instant::now();
        wait_for("every node to answer 410 for the deleted link", Duration::from_secs(5), || async {
            for node in [1, 2, 3] {
                if visit(&client, &c, node, &code).await.ok()?.0 != 410 {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        let took = deleted.elapsed();
        assert!(took < Duration::from_millis(1500), "410 everywhere took {took:?}");
        let r = user.get(c.node(1).url(&path)).bearer_auth(&token).send().await?;
        assert_eq!(r.json::<Value>().await?["status"], "deleted");
        // The code is never handed out again: recreating it as an alias is refused.
        let (status, _) = shorten(&c, 1, json!({"url": "https://example.com/again", "alias": code})).await?;
        assert_eq!(status, 409);
        // A link expiring in two seconds redirects, then answers 410.
        let at = std::time::SystemTime::now() + Duration::from_secs(3);
        let at = humantime::format_rfc3339_seconds(at).to_string();
        let short = created(&c, 1, json!({"url": "https://example.com/brief", "expires_at": at})).await?;
        assert_eq!(visit(&client, &c, 2, &short).await?.0, 302);
        wait_for("the link to expire", Duration::from_secs(10), || async {
            (visit(&client, &c, 2, &short).await.ok()?.0 == 410).then_some(())
        })
        .await?;
        for node in [1, 3] {
            assert_eq!(visit(&client, &c, node, &short).await?.0, 410, "node {node}");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clicks_from_several_nodes_are_counted_and_a_stampede_loads_once_per_node() -> Result<()> {
        // Cached mappings stay fresh for the whole burst, so every load the metrics show is one
        // of the stampede's.
        let c = led(&ClusterSpec::new(3).set("urls", "cache_fresh_for = \"30s\"")).await?;
        let client = no_follow()?;
        let code = created(&c, 1, json!({"url": "https://example.com/popular"})).await?;
        let loads_before: Vec<f64> = futures::future::join_all([1, 2, 3].map(|n| {
            let c = &c;
            async move { c.metric(n, "shoal_urls_cache_loads_total{outcome=\"ok\"}").await.unwrap_or(0.0) }
        }))
        .await;
        // A stampede: 40 concurrent first requests per node for the uncached code.
        let mut burst = Vec::new();
        for node in [1, 2, 3] {
            for i in 0..40 {
                let (client, c, code) = (&client, &c, &code);
                burst.push(async move {
                    let referer = if i % 2 == 0 { "https://news.example/item" } else { "https://blog.example/post" };
                    let r = client.get(c.node(node).url(&format!("/{code}"))).header("referer", referer).send().await?;
                    Ok::<u16, anyhow::Error>(r.status().as_u16())
                });
            }
        }
        for status in futures::future::join_all(burst).await {
            assert_eq!(status?, 302);
        }
        for (i, node) in [1u64, 2, 3].into_iter().enumerate() {
            let loads = c.metric(node, "shoal_urls_cache_loads_total{outcome=\"ok\"}").await.unwrap_or(0.0);
            assert_eq!(loads - loads_before[i], 1.0, "node {node} loaded the code once for 40 requests");
        }
        // Clicks land in the partition within about a second of being counted.
        let path = format!("/v1/urls/{code}");
        let v = wait_for("all 120 clicks to be counted", Duration::from_secs(10), || async {
            let v = c.get_json(2, &path).await?;
            (v["clicks_total"] == 120).then_some(v)
        })
        .await?;
        let today = v["clicks_by_day"].as_array().and_then(|d| d.last()).cloned().unwrap_or_default();
        assert_eq!(today["clicks"], 120, "{v}");
        assert_eq!(v["clicks_by_day"].as_array().map(Vec::len), Some(30));
        let hosts: Vec<(String, u64)> = v["top_referrers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["host"].as_str().unwrap_or_default().to_string(), r["clicks"].as_u64().unwrap_or(0)))
            .collect();
        assert_eq!(hosts, vec![("blog.example".to_string(), 60), ("news.example".to_string(), 60)]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redirects_survive_a_killed_partition_leader_and_shortens_resume_after_failover() -> Result<()> {
        let mut c = led(&ClusterSpec::new(3)).await?;
        let client = no_follow()?;
        let code = created(&c, 1, json!({"url": "https://example.com/steady"})).await?;
        let group = shoal::placement::partition_of(&code, 4);
        let leader = wait_for("the link's partition leader", FORM, || leader_of(&c, 1, group)).await?;
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
        for node in &others {
            assert_eq!(visit(&client, &c, *node, &code).await?.0, 302);
        }
        c.kill(leader)?;
        // Redirects keep working on the survivors throughout the failover.
        for node in &others {
            assert_eq!(visit(&client, &c, *node, &code).await?, (302, Some("https://example.com/steady".into())));
        }
        // New shortens resume once partitions have leaders again.
        let fresh = created(&c, others[0], json!({"url": "https://example.com/after"})).await?;
        for node in &others {
            assert_eq!(visit(&client, &c, *node, &fresh).await?.0, 302);
        }
        c.start_node(leader)?;
        c.wait_ready(&[leader], FORM).await?;
        wait_for("the restarted node to redirect the new link", FORM, || async {
            (visit(&client, &c, leader, &fresh).await.ok()?.0 == 302).then_some(())
        })
        .await?;
        Ok(())
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_without_a_replica_serves_cached_links_stale_when_their_partition_is_down() -> Result<()> {
        // Cached links are revalidated after a second here, so the stale path comes soon.
        let mut c = led(&ClusterSpec::new(5).set("urls", "cache_fresh_for = \"1s\"")).await?;
        let client = no_follow()?;
        // Two links in one partition: one to cache on a node that holds no replica of it, one
        // left uncached there.
        let first = created(&c, 1, json!({"url": "https://example.com/cached"})).await?;
        let group = shoal::placement::partition_of(&first, 4);
        let mut second = None;
        for i in 0..40 {
            let alias = format!("same-partition-{i}");
            if shoal::placement::partition_of(&alias, 4) == group {
                second = Some(created(&c, 1, json!({"url": "https://example.com/uncached", "alias": alias})).await?);
                break;
            }
        }
        let second = second.context("no alias landed in the partition")?;
        let view = c.get_json(1, "/v1/cluster").await.context("cluster view")?;
        let replicas: Vec<u64> = view["partitions"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"].as_u64() == Some(group)))
            .and_then(|p| p["replicas"].as_array())
            .map(|r| r.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        assert_eq!(replicas.len(), 3, "{view}");
        let outsider = (1..=5).find(|n| !replicas.contains(n)).context("a node outside the partition")?;
        // Cached there (the load asks the partition's leader, which a node outside it may first
        // have to find: 503 until then).
        let cached = wait_for_result("the outsider to redirect the link", FORM, || async {
            let answer = visit(&client, &c, outsider, &first).await?;
            Ok((answer.0 != 503).then_some(answer))
        })
        .await?;
        assert_eq!(cached, (302, Some("https://example.com/cached".into())));
        // The partition loses its majority.
        c.kill(replicas[0])?;
        c.kill(replicas[1])?;
        // The cached link keeps redirecting, served stale once it is due for revalidation.
        wait_for_result("a stale redirect", FORM, || async {
            let (status, _) = visit(&client, &c, outsider, &first).await?;
            assert_eq!(status, 302, "a cached link is served while its partition is down");
            let stale = c.metric(outsider, "shoal_urls_cache_requests_total{result=\"stale\"}").await.unwrap_or(0.0);
            Ok((stale > 0.0).then_some(()))
        })
        .await?;
        // The uncached one cannot be looked up: 503 with Retry-After.
        let r = client.get(c.node(outsider).url(&format!("/{second}"))).send().await?;
        assert_eq!(r.status().as_u16(), 503);
        assert!(r.headers().get("retry-after").is_some());
        Ok(())
    }
}

mod ratelimit {
    use super::counters::{leader_of, led};
    use super::*;
    use serde_json::{Value, json};

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
            let closed =
                sample(&m, "shoal_ratelimit_decisions_total{decision=\"unavailable_closed\",policy=\"strict\"}")
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
}

// --- openapi / schemathesis regressions ---

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

/// Regression (schemathesis): the description lets the increment body be absent or `null` and
/// `by` be any u64; the node refused `null` with 400, and `by` above 2^63 - 1 must keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_takes_a_null_body_and_any_u64() -> Result<()> {
    let c = formed(&ClusterSpec::new(1)).await?;
    let url = c.node(1).url("/v1/counters/nullable/increment");
    let increment = |body: &'static str| {
        let req = c.http.post(&url).header("content-type", "application/json").body(body);
        async move {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await?;
            // Retried while the partition still elects its first leader.
            Ok(match (status, v["error"]["code"].as_str()) {
                (503, Some("no_leader")) => None,
                _ => Some((status, v)),
            })
        }
    };
    let (status, v) = wait_for_result("an increment with a null body", FORM, || increment("null")).await?;
    assert_eq!((status, &v["value"]), (200, &1.into()), "{v}");
    let (status, v) = wait_for_result("an increment without a body", FORM, || increment("")).await?;
    assert_eq!((status, &v["value"]), (200, &2.into()), "{v}");
    let (status, v) = wait_for_result("a big increment", FORM, || increment(r#"{"by": 9223372036854775808}"#)).await?;
    assert_eq!((status, &v["value"]), (200, &9_223_372_036_854_775_810_u64.into()), "{v}");
    Ok(())
}
