//! The counters service: increments and linearizable reads from every node, bad input
//! refused, followers caught up.

use anyhow::Result;
use cluster_tests::api::{increment, leaders, read};
use cluster_tests::harness::{ClusterSpec, FORM, wait_for, wait_for_result};

use crate::{formed, led};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_work_from_every_node_and_refuse_bad_input() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let mut expected = 0;
    for node in [1, 2, 3, 1, 2, 3] {
        expected += 1;
        assert_eq!(increment(&c, node, "visits").await?, expected);
    }
    let r =
        c.http.post(c.node(2).url("/v1/counters/visits/increment")).json(&serde_json::json!({"by": 10})).send().await?;
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
