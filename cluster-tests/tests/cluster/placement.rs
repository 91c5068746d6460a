//! Placement: a joining node becomes a meta voter and takes replicas, partition leaders
//! spread over the nodes and come back to a restarted one, and replicas of a dead node move to
//! spare nodes.

use std::time::Duration;

use anyhow::{Result, anyhow};
use cluster_tests::api::{increment, leaders, read};
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, wait_for};

use crate::{formed, led};

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
                let listed = layout.get(&p["id"].as_u64()?.to_string())?.as_array()?.contains(&serde_json::json!(n));
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
    // At least one came back by hand-over (with pre-vote a restarted node no longer wins one by
    // raising the term, but a leader may still fall to it in an ordinary election).
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
            led.get(&id).is_some_and(|l| &l["replicas"] == r && l["learners"].as_array().is_some_and(|x| x.is_empty()))
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
