//! A node's supervisor: failed actors restarted and counted while HTTP serves, a restart storm
//! that stops the node, the fault-injection switch, and a clean shutdown on SIGTERM.

use std::time::Duration;

use anyhow::{Result, anyhow};
use cluster_tests::harness::{ClusterSpec, wait_for};
use nix::sys::signal::Signal;

use crate::formed;

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
