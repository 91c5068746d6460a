//! Crashes under write load: a node SIGKILLed at random every few seconds, and every node
//! SIGKILLed at once. Afterwards every node has applied the same log, every acknowledged
//! increment is in the counters, and none was applied twice (the linearizability check of
//! [`check_counter`]).
//!
//! The crash loop runs `SHOAL_CRASH_LOOP_SECS` seconds (default 60) with the schedule drawn from
//! `SHOAL_CRASH_LOOP_SEED` (default: random, printed), so a failing schedule can be replayed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use cluster_tests::api::{Attempt, counter_op, read};
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, wait_for};
use cluster_tests::history::{Kind, Op, Outcome, check_counter};
use rand::{Rng, SeedableRng};

use crate::led;

const NODES: [u64; 3] = [1, 2, 3];
const COUNTERS: [&str; 4] = ["crash-a", "crash-b", "crash-c", "crash-d"];
/// How long the cluster may take to agree again after the last crash (debug build, 2 cores).
const SETTLE: Duration = Duration::from_secs(60);

type Histories = Arc<Mutex<BTreeMap<&'static str, Vec<Op>>>>;

/// Eight closed-loop clients, two per counter, each starting on its own node and moving to the
/// next node when its node refuses the connection (it is down). Only operations that may have
/// been applied are recorded ([`counter_op`]).
struct Load {
    histories: Histories,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(c: &Arc<Cluster>) -> Self {
        let histories: Histories = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..8usize)
            .map(|i| {
                let (c, histories, stop) = (Arc::clone(c), Arc::clone(&histories), Arc::clone(&stop));
                let name = COUNTERS[i % COUNTERS.len()];
                tokio::spawn(async move {
                    let mut node = NODES[i % NODES.len()];
                    let mut n = 0u64;
                    // Bounded: the stop flag, and at most 50,000 operations per client.
                    while !stop.load(Ordering::Relaxed) && n < 50_000 {
                        n += 1;
                        let kind = if (n + i as u64) % 5 == 0 { Kind::Read } else { Kind::Increment };
                        let start = Instant::now();
                        let outcome = match counter_op(&c, node, name, kind).await {
                            Attempt::Done(outcome) => outcome,
                            // Not applied: pause like a client honouring Retry-After (on the
                            // next node if this one is down), then try again.
                            attempt => {
                                if attempt == Attempt::Refused {
                                    node = node % NODES.len() as u64 + 1;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        };
                        let op = Op { kind, start, end: Instant::now(), outcome };
                        histories.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default().push(op);
                    }
                })
            })
            .collect();
        Self { histories, stop, clients }
    }

    /// Stops the clients and waits for them.
    async fn stop(self) -> Result<Histories> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.clients {
            t.await?;
        }
        Ok(self.histories)
    }
}

/// Acknowledged operations recorded so far, over all counters.
fn acknowledged(histories: &Histories) -> usize {
    let h = histories.lock().unwrap_or_else(|e| e.into_inner());
    h.values().flatten().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count()
}

async fn wait_acknowledged(histories: &Histories, more: usize, what: &str) -> Result<()> {
    let target = acknowledged(histories) + more;
    wait_for(what, SETTLE, || async { (acknowledged(histories) >= target).then_some(()) }).await
}

/// With every node up: waits until all have applied the same log, then reads each counter
/// through every node (all must agree) and checks its history.
async fn check(c: &Cluster, histories: &Histories) -> Result<()> {
    let applied = c.wait_converged(&NODES, SETTLE).await.context("the nodes did not converge")?;
    eprintln!("converged: applied index by group {applied:?}");
    let h = histories.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for name in COUNTERS {
        let ops = h.get(name).map(Vec::as_slice).unwrap_or_default();
        let mut values = Vec::new();
        for node in NODES {
            values.push(wait_for("a linearizable read", FORM, || async { read(c, node, name).await.ok() }).await?);
        }
        ensure!(values.windows(2).all(|w| w[0] == w[1]), "{name}: nodes disagree: {values:?}");
        let acked = ops.iter().filter(|o| o.kind == Kind::Increment && matches!(o.outcome, Outcome::Ok(_))).count();
        let unknown = ops.iter().filter(|o| o.kind == Kind::Increment && o.outcome == Outcome::Unknown).count();
        eprintln!(
            "{name}: {} operations, {acked} acknowledged and {unknown} unknown increments, value {}",
            ops.len(),
            values[0]
        );
        ensure!(acked > 0, "{name}: no increment was acknowledged");
        check_counter(ops, values[0]).map_err(|e| anyhow!("{name}: history is not linearizable: {e}"))?;
    }
    Ok(())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_under_load_loses_no_acknowledged_increment_and_applies_none_twice() -> Result<()> {
    let secs = env_u64("SHOAL_CRASH_LOOP_SECS").unwrap_or(60);
    let seed = env_u64("SHOAL_CRASH_LOOP_SEED").unwrap_or_else(rand::random);
    eprintln!("crash loop: {secs} s, SHOAL_CRASH_LOOP_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = led(&ClusterSpec::new(3)).await?;
    let load = Load::start(&Arc::new(c.client_view()));
    wait_acknowledged(&load.histories, 50, "load before the first crash").await?;
    let began = Instant::now();
    let mut kills = Vec::new();
    while began.elapsed() < Duration::from_secs(secs) {
        let victim = NODES[rng.random_range(0..NODES.len())];
        let down_for = Duration::from_millis(rng.random_range(2_000..=5_000));
        c.kill(victim)?;
        kills.push(victim);
        // The fault schedule, not synchronisation: the node stays down this long under load.
        tokio::time::sleep(down_for).await;
        c.start_node(victim)?;
        // The next crash comes once the restarted node serves again, so a majority of every
        // group is up between crashes and the load keeps making progress.
        c.wait_ready(&[victim], FORM).await.with_context(|| format!("node {victim} after its restart"))?;
    }
    eprintln!("killed, in order: {kills:?}");
    wait_acknowledged(&load.histories, 50, "load after the last crash").await?;
    check(&c, &load.stop().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_increment_survives_sigkilling_every_node_at_once_under_load() -> Result<()> {
    let mut c = led(&ClusterSpec::new(3)).await?;
    let load = Load::start(&Arc::new(c.client_view()));
    wait_acknowledged(&load.histories, 200, "load before the crash").await?;
    for id in NODES {
        c.kill(id)?;
    }
    let before = acknowledged(&load.histories);
    for id in NODES {
        c.start_node(id)?;
    }
    wait_acknowledged(&load.histories, 50, "load after the restart").await?;
    let histories = load.stop().await?;
    eprintln!("{before} operations acknowledged before the crash, {} in all", acknowledged(&histories));
    check(&c, &histories).await
}
