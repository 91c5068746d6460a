//! The workloads: each sets up what it needs, drives it, and returns a [`Report`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use cluster_tests::harness::{Cluster, ClusterSpec};
use futures::future::BoxFuture;
use serde_json::json;
use shoal::NodeId;
use shoal::config::{PeerSection, TlsSection};
use shoal::transport::proto::{Echo, Request, Response, RpcError, RpcErrorCode};
use shoal::transport::tls::Identity;
use shoal::transport::{RpcHandler, Transport};

use super::Args;
use super::driver::{Report, run_load};

/// Answers echo requests; the bench's callee.
struct EchoHandler;

impl RpcHandler for EchoHandler {
    fn handle(&self, _from: NodeId, request: Request) -> BoxFuture<'static, Response> {
        let response = match request {
            Request::Echo(e) => Response::Echo(e),
            _ => Response::Error(RpcError { code: RpcErrorCode::Refused, message: "bench".into() }),
        };
        Box::pin(std::future::ready(response))
    }
}

fn endpoint(dir: &std::path::Path, id: NodeId) -> Result<Arc<Transport>> {
    let identity = Identity::load(&TlsSection {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}.key")),
    })?;
    let cfg = PeerSection { listen: "127.0.0.1:0".parse()?, ..PeerSection::default() };
    // A registry of its own per endpoint, as each node has.
    let metrics = shoal::supervisor::NodeMetrics::new(id)?.transport;
    let t = Transport::bind(&identity, &cfg, metrics)?;
    t.set_handler(Arc::new(EchoHandler));
    tokio::spawn(Arc::clone(&t).accept_loop());
    Ok(t)
}

/// Peer RPC echo from endpoint 1 to endpoint 2, `clients` calls in flight.
pub async fn echo(args: &Args) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    shoal::certs::init(dir.path(), 2)?;
    let a = endpoint(dir.path(), 1)?;
    let b = endpoint(dir.path(), 2)?;
    a.set_peer_addr(2, &b.local_addr()?.to_string());
    b.set_peer_addr(1, &a.local_addr()?.to_string());
    let payload = vec![0x5a_u8; args.payload];
    // Connect once before the clock starts.
    a.call(2, Echo { payload: payload.clone() }).await.context("first echo")?;
    let caller = Arc::clone(&a);
    let mut report = run_load("echo", args.load(), None, move |_| {
        let caller = Arc::clone(&caller);
        let payload = payload.clone();
        async move {
            let len = payload.len();
            let reply = caller.call(2, Echo { payload }).await?;
            anyhow::ensure!(reply.payload.len() == len, "echo came back with a different payload");
            Ok(())
        }
    })
    .await?;
    report.extra.insert("payload_bytes".into(), json!(args.payload));
    Ok(report)
}

pub(super) fn node_binary(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.shoal_bin {
        return Ok(p.clone());
    }
    let beside = std::env::current_exe()?.with_file_name("shoal-node");
    if beside.exists() {
        Ok(beside)
    } else {
        Err(anyhow!(
            "{} not found; build it with `cargo build --release -p cluster-tests --bins` or pass --shoal-bin",
            beside.display()
        ))
    }
}

pub(super) fn vm_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resident memory of the nodes of an idle 3-node cluster.
pub async fn idle_memory(args: &Args) -> Result<Report> {
    let cluster = Cluster::start(&node_binary(args)?, &ClusterSpec::new(3))?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.wait_all_see_up(&ids, &ids, Duration::from_secs(30)).await?;
    // The measured quantity is the memory after idling, so this wait is the workload itself.
    tokio::time::sleep(args.duration).await;
    let mut nodes = Vec::new();
    let mut max: f64 = 0.0;
    for id in &ids {
        let pid = cluster.node(*id).pid().ok_or_else(|| anyhow!("node {id} not running"))?;
        let rss = vm_rss_mb(pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/status"))?;
        let reported = cluster.metric(*id, "process_resident_memory_bytes").await.map(|b| b / 1048576.0);
        max = max.max(rss);
        nodes.push(json!({ "id": id, "pid": pid, "rss_mb": (rss * 10.0).round() / 10.0, "metrics_rss_mb": reported.map(|m| (m * 10.0).round() / 10.0) }));
    }
    Ok(Report {
        workload: "idle-memory".into(),
        clients: 0,
        rate_per_s: None,
        duration_s: args.duration.as_secs_f64(),
        requests: 0,
        errors: 0,
        throughput_per_s: 0.0,
        latency_ms: None,
        extra: serde_json::Map::from_iter([
            ("nodes".to_string(), json!(nodes)),
            ("max_rss_mb".to_string(), json!((max * 10.0).round() / 10.0)),
        ]),
    })
}

/// User plus system CPU time of process `pid` so far, in clock ticks (from /proc).
pub(super) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) end with `)`; utime and stime are
    // the 14th and 15th fields overall, the 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (USER_HZ): 100 on Linux unless `getconf` says otherwise.
pub(super) fn clock_ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// CPU use of the nodes of an idle 3-node cluster with production defaults.
pub async fn idle_cpu(args: &Args) -> Result<Report> {
    let cluster = start_cluster(args, &[])?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.wait_ready(&ids, Duration::from_secs(60)).await?;
    // Leaders settle, hand-overs finish and idle groups go quiet: the warm-up is part of the
    // workload, like the idle period itself.
    tokio::time::sleep(args.warmup).await;
    let pids: Vec<(u64, u32)> = ids
        .iter()
        .map(|id| cluster.node(*id).pid().map(|p| (*id, p)).ok_or_else(|| anyhow!("node {id} not running")))
        .collect::<Result<_>>()?;
    let before: Vec<u64> = pids
        .iter()
        .map(|(_, p)| cpu_ticks(*p).ok_or_else(|| anyhow!("cannot read /proc/{p}/stat")))
        .collect::<Result<_>>()?;
    let start = std::time::Instant::now();
    tokio::time::sleep(args.duration).await;
    let elapsed = start.elapsed().as_secs_f64();
    let ticks_per_s = clock_ticks_per_s();
    let mut nodes = Vec::new();
    let mut max: f64 = 0.0;
    for ((id, pid), b) in pids.iter().zip(before) {
        let after = cpu_ticks(*pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/stat"))?;
        let percent = (after - b) as f64 / ticks_per_s / elapsed * 100.0;
        max = max.max(percent);
        nodes.push(json!({ "id": id, "pid": pid, "cpu_percent": (percent * 100.0).round() / 100.0 }));
    }
    let quiet = {
        let mut n = 0.0;
        for id in &ids {
            if let Some(text) = cluster.metrics(*id).await {
                n += text.lines().filter(|l| l.starts_with("shoal_raft_quiet{") && l.ends_with(" 1")).count() as f64;
            }
        }
        n
    };
    Ok(Report {
        workload: "idle-cpu".into(),
        clients: 0,
        rate_per_s: None,
        duration_s: elapsed,
        requests: 0,
        errors: 0,
        throughput_per_s: 0.0,
        latency_ms: None,
        extra: serde_json::Map::from_iter([
            ("nodes".to_string(), json!(nodes)),
            ("max_cpu_percent".to_string(), json!((max * 100.0).round() / 100.0)),
            ("quiet_groups".to_string(), json!(quiet)),
        ]),
    })
}

/// `--endpoints` as base URLs.
fn normalized(endpoints: &[String]) -> Vec<String> {
    endpoints.iter().map(|e| if e.starts_with("http") { e.clone() } else { format!("http://{e}") }).collect()
}

/// One pooled HTTP client for all bench clients.
pub(super) fn http_client(args: &Args) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(args.clients).build()?)
}

/// `--set section.key=value` as harness settings.
fn settings(args: &Args) -> Result<Vec<(&'static str, String)>> {
    args.settings
        .iter()
        .map(|s| {
            let (key, value) = s.split_once('=').ok_or_else(|| anyhow!("--set {s}: expected SECTION.KEY=VALUE"))?;
            let (section, key) = key.split_once('.').ok_or_else(|| anyhow!("--set {s}: expected SECTION.KEY=VALUE"))?;
            let section: &'static str = Box::leak(section.trim().to_string().into_boxed_str());
            Ok((section, format!("{} = {}", key.trim(), value.trim())))
        })
        .collect()
}

/// A local 3-node cluster with production defaults, quiet logs, `extra` and `--set` settings.
fn start_cluster(args: &Args, extra: &[(&'static str, &str)]) -> Result<Cluster> {
    // The limiter is off unless a workload (or --set) turns it on, as `dev up --set
    // ratelimit.enabled=false` would for a benchmark.
    // Three nodes share this machine: each gets its share of the cores, as `dev up` gives them.
    let workers = format!("worker_threads = {}", shoal::config::NodeSection::shared_machine_workers(3));
    let base =
        vec![("log", "filter = \"warn\"".to_string()), ("ratelimit", "enabled = false".to_string()), ("node", workers)];
    let mut spec = ClusterSpec { nodes: 3, settings: base };
    for (section, line) in extra {
        spec = spec.set(section, line);
    }
    for (section, line) in settings(args)? {
        spec = spec.set(section, &line);
    }
    Cluster::start(&node_binary(args)?, &spec)
}

/// Starts a local 3-node cluster with production defaults unless `--endpoints` names one.
pub(super) async fn target_cluster(args: &Args) -> Result<(Option<Cluster>, Vec<String>)> {
    target_cluster_with(args, &[]).await
}

/// [`target_cluster`] with `extra` settings (before `--set` ones) for a cluster it starts.
pub(super) async fn target_cluster_with(
    args: &Args,
    extra: &[(&'static str, &str)],
) -> Result<(Option<Cluster>, Vec<String>)> {
    if !args.endpoints.is_empty() {
        return Ok((None, normalized(&args.endpoints)));
    }
    let cluster = start_cluster(args, extra)?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.wait_all_see_up(&ids, &ids, Duration::from_secs(30)).await?;
    cluster.wait_ready(&ids, Duration::from_secs(30)).await?;
    cluster_tests::harness::wait_for("every partition to have a leader", Duration::from_secs(30), || async {
        let v = cluster.get_json(1, "/v1/cluster").await?;
        let parts = v["partitions"].as_array()?;
        (!parts.is_empty() && parts.iter().all(|p| p["leader"].is_u64())).then_some(())
    })
    .await?;
    let eps = ids.iter().map(|id| format!("http://{}", cluster.node(*id).http)).collect();
    Ok((Some(cluster), eps))
}

/// `POST /v1/counters/{key}/increment` from `clients` closed-loop clients, client `i` talking to
/// node `i mod n` and cycling over `--keys` counters.
pub async fn counters(args: &Args) -> Result<Report> {
    let (_cluster, endpoints) = target_cluster(args).await?;
    let http = http_client(args)?;
    let endpoints = Arc::new(endpoints);
    let keys = args.keys.max(1);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Counters need a bearer token: sign up once (open sign-up is the default).
    let token = sign_up(&http, &endpoints[0]).await?;
    let (window, opened) = ServerWindow::open(&http, &endpoints);
    let mut report = run_load("counters", args.load(), Some(opened), move |client| {
        let http = http.clone();
        let token = token.clone();
        let url = {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{}/v1/counters/bench-{}/increment", endpoints[client % endpoints.len()], n % keys)
        };
        async move {
            let r = http.post(url).bearer_auth(token).json(&json!({"by": 1})).send().await?;
            anyhow::ensure!(r.status().is_success(), "status {}", r.status());
            Ok(())
        }
    })
    .await?;
    report.extra.insert("keys".into(), json!(keys));
    window.close(&mut report).await?;
    Ok(report)
}

/// `POST /v3/kv/put` to an etcd cluster (`--endpoints`), client `i` talking to endpoint `i mod n`
/// and cycling over `--keys` keys: the same shape as [`counters`].
pub async fn etcd_put(args: &Args) -> Result<Report> {
    anyhow::ensure!(!args.endpoints.is_empty(), "etcd-put needs --endpoints (see cluster-tests/scripts/etcd-3.sh)");
    let endpoints = Arc::new(normalized(&args.endpoints));
    let http = http_client(args)?;
    let keys = args.keys.max(1);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b64 = |s: &str| {
        use std::fmt::Write;
        // Minimal standard base64 for short ASCII keys.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    let _ = out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let (window, opened) = ServerWindow::open(&http, &endpoints);
    let mut report = run_load("etcd-put", args.load(), Some(opened), move |client| {
        let http = http.clone();
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = format!("{}/v3/kv/put", endpoints[client % endpoints.len()]);
        let body = json!({ "key": b64(&format!("bench-{}", n % keys)), "value": b64(&n.to_string()) });
        async move {
            let r = http.post(url).json(&body).send().await?;
            anyhow::ensure!(r.status().is_success(), "status {}", r.status());
            Ok(())
        }
    })
    .await?;
    report.extra.insert("keys".into(), json!(keys));
    window.close(&mut report).await?;
    Ok(report)
}

/// Metrics read from every server for the server-side cost of a run.
const COST_METRICS: [&str; 3] =
    ["process_cpu_seconds_total", "shoal_raft_batch_commands_sum", "shoal_raft_batch_commands_count"];

/// The servers' own cost over a run's measured window, from their `/metrics` (Shoal nodes and
/// etcd both export `process_cpu_seconds_total`): CPU per request over all server processes
/// and, for Shoal, commands per proposed log entry.
pub(super) struct ServerWindow {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Sums when the measured window opened (read once the load driver says so).
    start: tokio::task::JoinHandle<Result<std::collections::HashMap<String, f64>>>,
}

impl ServerWindow {
    /// Reads the servers when the returned sender fires (give it to [`run_load`]).
    pub(super) fn open(http: &reqwest::Client, endpoints: &[String]) -> (Self, tokio::sync::oneshot::Sender<()>) {
        let (opened, window_open) = tokio::sync::oneshot::channel();
        let (client, eps) = (http.clone(), endpoints.to_vec());
        let start = tokio::spawn(async move {
            window_open.await.map_err(|_| anyhow!("the load driver never opened the measured window"))?;
            scrape_sums(&client, &eps).await
        });
        (Self { http: http.clone(), endpoints: endpoints.to_vec(), start }, opened)
    }

    /// Adds `server_cpu_us_per_request` (and `commands_per_request` and `commands_per_entry`
    /// where known) to `report`.
    pub(super) async fn close(self, report: &mut Report) -> Result<()> {
        let end = scrape_sums(&self.http, &self.endpoints).await?;
        let start = self.start.await??;
        let delta = |name: &str| end.get(name).copied().unwrap_or(0.0) - start.get(name).copied().unwrap_or(0.0);
        if report.requests > 0 {
            let cpu_us = delta("process_cpu_seconds_total") * 1e6 / report.requests as f64;
            report.extra.insert("server_cpu_us_per_request".into(), json!(cpu_us.round()));
        }
        let commands = delta("shoal_raft_batch_commands_sum");
        if report.requests > 0 && commands > 0.0 {
            let per_request = commands / report.requests as f64;
            report.extra.insert("commands_per_request".into(), json!((per_request * 100.0).round() / 100.0));
        }
        let entries = delta("shoal_raft_batch_commands_count");
        if entries > 0.0 {
            let per_entry = delta("shoal_raft_batch_commands_sum") / entries;
            report.extra.insert("commands_per_entry".into(), json!((per_entry * 100.0).round() / 100.0));
        }
        Ok(())
    }
}

/// Each of [`COST_METRICS`] summed over every series of every endpoint.
async fn scrape_sums(http: &reqwest::Client, endpoints: &[String]) -> Result<std::collections::HashMap<String, f64>> {
    let mut sums = std::collections::HashMap::new();
    for endpoint in endpoints {
        let text = http.get(format!("{endpoint}/metrics")).send().await?.error_for_status()?.text().await?;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if !COST_METRICS.contains(&name) {
                continue;
            }
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *sums.entry(name.to_string()).or_insert(0.0) += v;
            }
        }
    }
    Ok(sums)
}

/// Signs up a bench user on `endpoint` and returns its bearer token.
pub(super) async fn sign_up(http: &reqwest::Client, endpoint: &str) -> Result<String> {
    let signup = http.post(format!("{endpoint}/v1/users")).json(&json!({"name": "shoal-bench"})).send().await?;
    anyhow::ensure!(signup.status().is_success(), "sign-up failed: {}", signup.status());
    let v: serde_json::Value = signup.json().await?;
    Ok(v["token"].as_str().ok_or_else(|| anyhow!("no token in {v}"))?.to_string())
}

/// The leader of `group` as the nodes in `ids` report it (first answer wins).
async fn leader_of(cluster: &Cluster, ids: &[u64], group: u64) -> Option<u64> {
    for id in ids {
        let Some(v) = cluster.get_json(*id, "/v1/cluster").await else { continue };
        let found = v["partitions"].as_array()?.iter().find(|p| p["id"].as_u64() == Some(group))?["leader"].as_u64();
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Whether partition leadership is spread over `ids` (each leads as many partitions as any other,
/// within one), as the leaders report it.
async fn leaders_spread(cluster: &Cluster, ids: &[u64]) -> Option<()> {
    let mut per_node: std::collections::BTreeMap<u64, usize> = ids.iter().map(|id| (*id, 0)).collect();
    for id in ids {
        let v = cluster.get_json(*id, "/v1/cluster").await?;
        let leads = v["partitions"].as_array()?.iter().filter(|p| p["role"] == "leader").count();
        per_node.insert(*id, leads);
    }
    let (min, max) = (per_node.values().min()?, per_node.values().max()?);
    (max - min <= 1).then_some(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// SIGKILLs the leader of one counter's partition while `--clients` clients increment it, and
/// measures the time from the kill to the first acknowledged increment; `--rounds` times, the
/// killed node restarted in between.
pub async fn failover(args: &Args) -> Result<Report> {
    const NAME: &str = "failover";
    let mut cluster = start_cluster(args, &[])?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.wait_ready(&ids, Duration::from_secs(30)).await?;
    let http = http_client(args)?;
    let token = sign_up(&http, &format!("http://{}", cluster.node(1).http)).await?;
    // The partition count as the cluster has it (`--set raft.partitions=…` may change it).
    let view = cluster.get_json(1, "/v1/cluster").await.ok_or_else(|| anyhow!("no cluster view"))?;
    let partitions = view["partitions"].as_array().map_or(0, Vec::len) as u64;
    anyhow::ensure!(partitions > 0, "the cluster reports no partitions: {view}");
    let group = shoal::placement::partition_of(NAME, partitions);
    let mut times = Vec::new();
    for round in 0..args.rounds {
        cluster.wait_ready(&ids, Duration::from_secs(30)).await?;
        // Each round starts from a settled cluster: the restarted node took its leaders back
        // (hand-overs pause partitions; one during the round would count as failover time).
        let spread = Duration::from_secs(60);
        if cluster_tests::harness::wait_for("leaders to spread", spread, || leaders_spread(&cluster, &ids))
            .await
            .is_err()
        {
            eprintln!("round {}: leaders are not spread over the nodes after {spread:?}; going on", round + 1);
        }
        let leader = cluster_tests::harness::wait_for("a partition leader", Duration::from_secs(30), || {
            leader_of(&cluster, &ids, group)
        })
        .await?;
        let urls: Vec<String> = ids
            .iter()
            .filter(|id| **id != leader)
            .map(|id| format!("http://{}/v1/counters/{NAME}/increment", cluster.node(*id).http))
            .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // (sent, answered) of every acknowledged increment.
        type Acks = Vec<(std::time::Instant, std::time::Instant)>;
        let acks = Arc::new(std::sync::Mutex::new(Acks::new()));
        let mut tasks = Vec::new();
        for c in 0..args.clients.max(1) {
            let (http, token, url) = (http.clone(), token.clone(), urls[c % urls.len()].clone());
            let (stop, acks) = (Arc::clone(&stop), Arc::clone(&acks));
            tasks.push(tokio::spawn(async move {
                // Bounded by the stop flag and a count.
                for _ in 0..1_000_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let sent = std::time::Instant::now();
                    let r = http.post(&url).bearer_auth(&token).json(&json!({"by": 1})).send().await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        let answered = std::time::Instant::now();
                        acks.lock().unwrap_or_else(|e| e.into_inner()).push((sent, answered));
                    }
                }
            }));
        }
        cluster_tests::harness::wait_for("load before the kill", Duration::from_secs(30), || async {
            (acks.lock().unwrap_or_else(|e| e.into_inner()).len() >= 50).then_some(())
        })
        .await?;
        cluster.kill(leader)?;
        let killed = std::time::Instant::now();
        // Failover: from the kill to the first acknowledgement of an increment sent after it.
        let elapsed =
            cluster_tests::harness::wait_for("an acknowledged increment", Duration::from_secs(60), || async {
                let acks = acks.lock().unwrap_or_else(|e| e.into_inner());
                acks.iter()
                    .filter(|(sent, _)| *sent > killed)
                    .map(|(_, answered)| answered.duration_since(killed))
                    .min()
            })
            .await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        eprintln!(
            "round {}: killed node {leader}; first increment acknowledged {:?} after the kill",
            round + 1,
            elapsed
        );
        times.push(elapsed.as_secs_f64() * 1000.0);
        cluster.start_node(leader)?;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Report {
        workload: "failover".into(),
        clients: args.clients,
        rate_per_s: None,
        duration_s: 0.0,
        requests: times.len() as u64,
        errors: 0,
        throughput_per_s: 0.0,
        latency_ms: None,
        extra: serde_json::Map::from_iter([
            ("rounds_ms".to_string(), json!(times)),
            ("failover_ms_median".to_string(), json!(percentile(&sorted, 0.5))),
            ("failover_ms_max".to_string(), json!(sorted.last().copied().unwrap_or(0.0))),
        ]),
    })
}

/// Fills one partition's log with `--entries` entries (batching off, no snapshot, so every
/// increment is one entry that stays in the log), SIGKILLs a follower, restarts it, and measures
/// how long until it is ready, serves a linearizable read, and has applied everything. With
/// `--while-down` the follower is killed before the fill, so it catches up on every entry.
pub async fn restart(args: &Args) -> Result<Report> {
    let snapshot_after = format!("snapshot_after_entries = {}", args.entries * 10);
    let extra = [("raft", "partitions = 1"), ("raft", "batching = false"), ("raft", snapshot_after.as_str())];
    let mut cluster = start_cluster(args, &extra)?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.wait_ready(&ids, Duration::from_secs(30)).await?;
    let http = http_client(args)?;
    let token = sign_up(&http, &format!("http://{}", cluster.node(1).http)).await?;
    let leader = cluster_tests::harness::wait_for("a partition leader", Duration::from_secs(30), || {
        leader_of(&cluster, &ids, 1)
    })
    .await?;
    let last_index = |v: &serde_json::Value| {
        v["partitions"]
            .as_array()
            .and_then(|p| p.iter().find(|g| g["id"] == 1))
            .and_then(|g| g["last_log_index"].as_u64())
    };
    let url = format!("http://{}/v1/counters", cluster.node(leader).http);
    let victim = ids.iter().copied().find(|id| *id != leader).ok_or_else(|| anyhow!("no follower"))?;
    if args.while_down {
        cluster.kill(victim)?;
    }
    let fill_start = std::time::Instant::now();
    let target = args.entries;
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.clients.max(1) {
        let (http, token, url, written) = (http.clone(), token.clone(), url.clone(), Arc::clone(&written));
        let keys = args.keys.max(1);
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            while written.load(std::sync::atomic::Ordering::Relaxed) < target {
                n += 7;
                let r = http
                    .post(format!("{url}/fill-{}/increment", n % keys))
                    .bearer_auth(&token)
                    .json(&json!({"by": 1}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let v = cluster.get_json(leader, "/v1/cluster").await.ok_or_else(|| anyhow!("no cluster view"))?;
    let behind = last_index(&v).ok_or_else(|| anyhow!("no partition in {v}"))?;
    eprintln!("filled {behind} log entries in {:?}", fill_start.elapsed());
    if !args.while_down {
        cluster.kill(victim)?;
    }
    cluster.start_node(victim)?;
    let started = std::time::Instant::now();
    cluster.wait_ready(&[victim], Duration::from_secs(120)).await?;
    let ready = started.elapsed();
    let served =
        cluster_tests::harness::wait_for("a read through the restarted node", Duration::from_secs(120), || async {
            let r = http
                .get(format!("http://{}/v1/counters/fill-0", cluster.node(victim).http))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?;
            r.status().is_success().then(|| started.elapsed())
        })
        .await?;
    let caught_up =
        cluster_tests::harness::wait_for("the node to apply every entry", Duration::from_secs(120), || async {
            let v = cluster.get_json(victim, "/v1/cluster").await?;
            let g = v["partitions"].as_array()?.iter().find(|g| g["id"] == 1)?.clone();
            (g["commit_index"].as_u64()? >= behind).then(|| started.elapsed())
        })
        .await?;
    let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
    Ok(Report {
        workload: "restart".into(),
        clients: args.clients,
        rate_per_s: None,
        duration_s: 0.0,
        requests: behind,
        errors: 0,
        throughput_per_s: 0.0,
        latency_ms: None,
        extra: serde_json::Map::from_iter([
            ("log_entries".to_string(), json!(behind)),
            ("killed_before_fill".to_string(), json!(args.while_down)),
            ("ready_ms".to_string(), json!(ms(ready))),
            ("first_read_ms".to_string(), json!(ms(served))),
            ("caught_up_ms".to_string(), json!(ms(caught_up))),
        ]),
    })
}
