//! Raft groups: readiness needs the meta group's majority, no acknowledged write is lost when
//! leaders are SIGKILLed under load (a linearizability check), a storage fault stops and
//! restarts one group, a lagging follower installs a snapshot, a restart of every node keeps
//! every write, and reads right after such a restart already see them all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use cluster_tests::api::{Attempt, counter_op, increment, leader_of, leaders, post_increment, read};
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, wait_for, wait_for_result};
use cluster_tests::history::{Kind, Op, Outcome, check_counter};

use crate::{formed, led};

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
                let outcome = match counter_op(&c, node, name, kind).await {
                    Attempt::Done(outcome) => outcome,
                    // Not applied (the node is down, or no leader yet): pause like a client
                    // honouring Retry-After, then try again.
                    Attempt::Refused | Attempt::NotApplied => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
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

/// Waits for `count` acknowledged increments sent after `t`.
async fn ops_after(history: &Mutex<Vec<Op>>, t: Instant, count: usize, deadline: Duration) -> Result<()> {
    wait_for("more acknowledged increments", deadline, || async {
        let h = history.lock().unwrap_or_else(|e| e.into_inner());
        let acked =
            h.iter().filter(|o| o.kind == Kind::Increment && o.start > t && matches!(o.outcome, Outcome::Ok(_)));
        (acked.count() >= count).then_some(())
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
        ops_after(&history, killed + failover, 30, Duration::from_secs(20)).await.context("load after the failover")?;
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
    // The load made progress in both phases: 30 acknowledged increments before each kill and 30
    // after each failover, or `ops_after` failed the test.
    eprintln!("{} operations, {acked} acknowledged increments, final value {}", h.len(), finals[0]);
    check_counter(&h, finals[0]).map_err(|e| anyhow!("history is not linearizable: {e}"))?;
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
    let restarted: Vec<&str> = metrics.lines().filter(|l| l.starts_with("shoal_raft_group_restarts_total{")).collect();
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
        let v = wait_for("a read after the restart", FORM, || async { read(&c, (i % 3) as u64 + 1, name).await.ok() })
            .await?;
        assert_eq!(v, i as u64 + 1, "{name}");
    }
    Ok(())
}

/// A restarted leader must not answer a linearizable read from a state machine that misses a
/// write it acknowledged before the crash: the commit index of the newest writes rides along
/// with a later log flush, and the state machine is checkpointed lazily, so both lag after a
/// SIGKILL. (openraft's leader restore let the old leader serve reads at that stale index.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_right_after_a_whole_cluster_restart_see_every_acknowledged_write() -> Result<()> {
    let mut c = led(&ClusterSpec::new(3)).await?;
    // One counter per partition (the harness runs 4), written concurrently so each leader's
    // newest commits are still unwritten when it dies.
    let mut names: Vec<String> = Vec::new();
    let mut taken = std::collections::BTreeSet::new();
    for i in 0.. {
        let name = format!("fresh-{i}");
        if taken.insert(shoal::placement::partition_of(&name, 4)) {
            names.push(name);
        }
        if taken.len() == 4 {
            break;
        }
    }
    let mut expected: Vec<u64> = vec![0; names.len()];
    for round in 1..=5 {
        let acked = {
            let c = &c;
            let writes = names.iter().enumerate().map(|(i, name)| async move {
                let mut last = 0;
                for _ in 0..3 {
                    last = increment(c, (i % 3) as u64 + 1, name).await?;
                }
                anyhow::Ok(last)
            });
            futures::future::try_join_all(writes).await?
        };
        for (i, v) in acked.iter().enumerate() {
            expected[i] += 3;
            assert_eq!(*v, expected[i], "{}: acknowledged values before restart {round}", names[i]);
        }
        for id in [1, 2, 3] {
            c.kill(id)?;
        }
        for id in [1, 2, 3] {
            c.start_node(id)?;
        }
        // Read at once (not after readiness), every counter concurrently, each retried until a
        // node answers.
        let got = {
            let c = &c;
            let reads = names.iter().enumerate().map(|(i, name)| async move {
                wait_for("a read after the restart", FORM, || async { read(c, (i % 3) as u64 + 1, name).await.ok() })
                    .await
            });
            futures::future::try_join_all(reads).await?
        };
        for (i, v) in got.iter().enumerate() {
            assert_eq!(*v, expected[i], "{}: read right after restart {round}", names[i]);
        }
    }
    Ok(())
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
        assert_eq!(increment(&c, leader, "compacted").await?, i);
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

/// The node tick (raft/tick.rs) sends every led group's heartbeats and switches the groups' own
/// election timers off while their leader is heard: an idle cluster must keep its leaders (no
/// group's term moves on any node) while heartbeats keep flowing.
/// Waits until every group's leader reports it quiet (see `node/src/raft/tick.rs`), checking
/// the terms `terms` (per node) on every poll when given.
async fn wait_all_quiet(c: &Cluster, ids: &[u64], groups: usize) -> Result<()> {
    wait_for("every group to go quiet", FORM, || async {
        let mut quiet = 0;
        for id in ids {
            quiet += c.group_metric(*id, "shoal_raft_quiet").await.unwrap_or_default().values().sum::<u64>();
        }
        (quiet as usize == groups).then_some(())
    })
    .await
}

/// Every group's `(term, leader)` as node `id` reports it on `/v1/cluster` (openraft's metrics;
/// the gauges trail them). The leader matters as much as the term: with openraft's advanced
/// leader ids a candidate with a higher node id can win an election in the same term.
async fn leadership(c: &Cluster, id: u64) -> Option<BTreeMap<String, (u64, u64)>> {
    let v = c.get_json(id, "/v1/cluster").await?;
    let mut out = BTreeMap::new();
    out.insert("0".to_string(), (v["meta"]["term"].as_u64()?, v["meta"]["leader"].as_u64()?));
    for p in v["partitions"].as_array()? {
        out.insert(p["id"].as_u64()?.to_string(), (p["term"].as_u64()?, p["leader"].as_u64()?));
    }
    Some(out)
}

/// Every group's `(term, leader)` once all nodes in `ids` agree on one for every group (a
/// replica that had not heard from its leader yet would report a new one later without any
/// election).
async fn settled_leadership(c: &Cluster, ids: &[u64]) -> Result<BTreeMap<String, (u64, u64)>> {
    wait_for("every node to know every group's leader", FORM, || async {
        let mut views = Vec::new();
        for id in ids {
            views.push(leadership(c, *id).await?);
        }
        views.windows(2).all(|w| w[0] == w[1]).then_some(views.remove(0))
    })
    .await
}

/// How many quiet groups led by node `id` woke so far, for any reason.
async fn wakes(c: &Cluster, id: u64) -> Option<f64> {
    let text = c.metrics(id).await?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("shoal_raft_quiet_wakes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

const APPENDS: &str = r#"shoal_transport_rpc_calls_total{method="raft_append",outcome="ok"}"#;
const QUIET_BEATS: &str = r#"shoal_transport_rpc_calls_total{method="raft_quiet_beat",outcome="ok"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_goes_quiet_and_keeps_every_leader_on_quiet_beats_alone() -> Result<()> {
    // No hand-overs to preferred leaders either: each is an election, and this test counts any
    // new leadership as an election quiet beats failed to prevent.
    let c = led(&ClusterSpec::new(3).set("placement", "balance_leaders = false")).await?;
    c.wait_converged(&[1, 2, 3], FORM).await?;
    let groups = 5; // meta and the harness's 4 partitions
    wait_all_quiet(&c, &[1, 2, 3], groups).await?;
    let terms = settled_leadership(&c, &[1, 2, 3]).await?;
    let mut before = Vec::new();
    for id in [1, 2, 3] {
        let led: u64 = c.group_metric(id, "shoal_raft_leader").await.unwrap_or_default().values().sum();
        let appends = c.metric(id, APPENDS).await.ok_or_else(|| anyhow!("metrics of node {id}"))?;
        let beats = c.metric(id, QUIET_BEATS).await.ok_or_else(|| anyhow!("metrics of node {id}"))?;
        let wakes = wakes(&c, id).await.ok_or_else(|| anyhow!("metrics of node {id}"))?;
        before.push((id, led, appends, beats, wakes));
    }
    // Quiet beats go to each peer every 300 ms in test clusters, so 20 per peer span three of
    // the longest election timeouts (2 s): long enough for any follower whose leader went
    // unheard to campaign. Every poll checks that no leadership changed and that AppendEntries
    // went out only for the rare woken group: at most one wake per node (a follower starved of
    // CPU past the shortest election timeout asks to wake; see the wake reasons in the error),
    // each costing the heartbeats before its group is quiet again. The deadline fails a node
    // whose beats fall far behind.
    wait_for_result("quiet beats spanning three election timeouts", Duration::from_secs(20), || async {
        let mut done = true;
        for (id, led, appends, beats, woke) in &before {
            let now = leadership(&c, *id).await.ok_or_else(|| anyhow!("no view from node {id}"))?;
            ensure!(
                now == terms,
                "node {id}: a group elected a new leader while the cluster was idle: {terms:?} -> {now:?}"
            );
            let text = c.metrics(*id).await.ok_or_else(|| anyhow!("metrics of node {id}"))?;
            let reasons: Vec<&str> = text.lines().filter(|l| l.starts_with("shoal_raft_quiet_wakes_total{")).collect();
            let woken = wakes(&c, *id).await.ok_or_else(|| anyhow!("metrics of node {id}"))? - woke;
            ensure!(woken <= 1.0, "node {id}: {woken} quiet groups woke while the cluster was idle: {reasons:?}");
            let sent = c.metric(*id, APPENDS).await.ok_or_else(|| anyhow!("metrics of node {id}"))? - appends;
            // Calls are counted when they complete: the last heartbeat of each group this node
            // leads (one AppendEntries per peer at a time) may still have been on its way when
            // the counts were read, on a busy machine. CI once saw exactly that: "4 sent, 0
            // wakes" from a node leading two groups.
            let in_flight = *led as f64 * 2.0;
            let allowed = in_flight + woken * f64::from(shoal::raft::QUIET_AFTER + 2) * 2.0;
            ensure!(sent <= allowed, "node {id} sent {sent} AppendEntries while quiet ({woken} wakes: {reasons:?})");
            let beats_now = c.metric(*id, QUIET_BEATS).await.ok_or_else(|| anyhow!("metrics of node {id}"))?;
            if *led > 0 {
                done &= beats_now - beats >= 40.0;
            }
        }
        Ok(done.then_some(()))
    })
    .await?;
    wait_all_quiet(&c, &[1, 2, 3], groups).await?;
    // A write wakes its group, commits, and the group goes quiet again.
    assert_eq!(increment(&c, 2, "wakes-up").await?, 1);
    assert_eq!(read(&c, 3, "wakes-up").await?, 1);
    wait_all_quiet(&c, &[1, 2, 3], groups).await?;
    assert_eq!(settled_leadership(&c, &[1, 2, 3]).await?, terms, "the write needed no election");
    Ok(())
}

/// The partitions (not meta) each node leads, as the leaders report it.
async fn partitions_led(c: &Cluster, ids: &[u64]) -> BTreeMap<u64, Vec<u64>> {
    let mut led_by: BTreeMap<u64, Vec<u64>> = ids.iter().map(|id| (*id, Vec::new())).collect();
    for (group, state) in leaders(c, ids).await {
        if group > 0
            && let Some(l) = state["leader"].as_u64()
        {
            led_by.entry(l).or_default().push(group);
        }
    }
    led_by
}

/// The terms of the groups not in `except`.
fn leadership_but(terms: &BTreeMap<String, (u64, u64)>, except: &[u64]) -> BTreeMap<String, (u64, u64)> {
    terms.iter().filter(|(g, _)| !except.iter().any(|e| e.to_string() == **g)).map(|(g, t)| (g.clone(), *t)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_groups_fail_over_and_a_restarted_follower_unseats_no_quiet_leader() -> Result<()> {
    let mut c = led(&ClusterSpec::new(3).set("placement", "balance_leaders = false")).await?;
    c.wait_converged(&[1, 2, 3], FORM).await?;
    let groups = 5;
    wait_all_quiet(&c, &[1, 2, 3], groups).await?;
    let terms = settled_leadership(&c, &[1, 2, 3]).await?;

    // A node leading partitions dies while every group is quiet: its groups elect new leaders
    // (the others' quiet beats stop nothing) and serve writes.
    let (victim, orphaned) = partitions_led(&c, &[1, 2, 3])
        .await
        .into_iter()
        .max_by_key(|(_, g)| g.len())
        .ok_or_else(|| anyhow!("no leaders"))?;
    ensure!(!orphaned.is_empty(), "no node leads a partition");
    let names: Vec<String> = orphaned
        .iter()
        .map(|g| (0..).map(|i| format!("orphan-{i}")).find(|n| shoal::placement::partition_of(n, 4) == *g))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("no key for a group"))?;
    c.kill(victim)?;
    let alive: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != victim).collect();
    // Once both survivors know a new leader (a request forwarded to the dead one would have an
    // unknown outcome), each orphaned group serves writes.
    for g in &orphaned {
        wait_for("a new leader", FORM, || async {
            let mut seen = Vec::new();
            for id in &alive {
                seen.push(leader_of(&c, *id, *g).await.filter(|l| *l != victim)?);
            }
            seen.windows(2).all(|w| w[0] == w[1]).then_some(())
        })
        .await?;
    }
    for name in &names {
        assert_eq!(increment(&c, alive[0], name).await?, 1, "{name}: served by a new leader");
    }
    let failed_over = settled_leadership(&c, &alive).await?;
    // The meta group may have moved too if the victim led it.
    let moved: Vec<u64> =
        failed_over.iter().filter(|(g, t)| terms.get(*g) != Some(*t)).filter_map(|(g, _)| g.parse().ok()).collect();
    assert!(
        orphaned.iter().all(|g| moved.contains(g)),
        "every group node {victim} led ({orphaned:?}) elected: (term, leader) {terms:?} -> {failed_over:?}"
    );
    assert_eq!(
        leadership_but(&failed_over, &moved),
        leadership_but(&terms, &moved),
        "only the dead leader's groups elected"
    );
    c.start_node(victim)?;
    c.wait_converged(&[1, 2, 3], FORM).await?;
    wait_all_quiet(&c, &[1, 2, 3], groups).await?;
    assert_eq!(settled_leadership(&c, &[1, 2, 3]).await?, failed_over, "the returning node caused an election");
    for name in &names {
        assert_eq!(read(&c, victim, name).await?, 1, "{name} through the returning node");
    }

    // A node restarted at once while its groups stay quiet (nothing was written meanwhile, so
    // their leaders still count it matched): it knows no leader until their quiet beats wake its
    // groups, and its election timers, running meanwhile, unseat no leader: voters that quiet
    // beats keep refuse its votes. Only groups it led itself need an election.
    let terms = settled_leadership(&c, &[1, 2, 3]).await?;
    let (restarted, its_own) = partitions_led(&c, &[1, 2, 3])
        .await
        .into_iter()
        .min_by_key(|(_, g)| g.len())
        .ok_or_else(|| anyhow!("no nodes"))?;
    let meta_leader = leader_of(&c, 1, 0).await.ok_or_else(|| anyhow!("no meta leader"))?;
    let mut its_own = its_own;
    if meta_leader == restarted {
        its_own.push(0);
    }
    c.kill(restarted)?;
    c.start_node(restarted)?;
    c.wait_converged(&[1, 2, 3], FORM).await?;
    wait_all_quiet(&c, &[1, 2, 3], groups).await?;
    let after = settled_leadership(&c, &[1, 2, 3]).await?;
    assert_eq!(
        leadership_but(&after, &its_own),
        leadership_but(&terms, &its_own),
        "node {restarted}'s restart unseated a leader of a group it did not lead ({its_own:?})"
    );
    Ok(())
}
