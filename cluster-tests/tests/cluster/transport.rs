//! The QUIC mesh and membership: every node linked to every other, a SIGKILLed node reported
//! down and back up, stateless resets after a fast restart, mutual TLS that refuses a foreign
//! CA, and frame validation that answers garbage with errors.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cluster_tests::harness::{ClusterSpec, FORM, sample, wait_for};
use shoal::transport::frame::{self, FRAME_VERSION};
use shoal::transport::proto::{Echo, Request, Response, RpcErrorCode};
use shoal::transport::tls::Identity;

use crate::formed;

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
