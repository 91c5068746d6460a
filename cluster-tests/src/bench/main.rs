//! `shoal-bench`: drives a named workload and prints throughput and latency percentiles.
//!
//! ```text
//! shoal-bench echo --clients 64 --duration 10s          # peer RPC echo between two endpoints
//! shoal-bench idle-memory --duration 5s                 # resident memory of idle cluster nodes
//! shoal-bench echo --json                               # one JSON object instead of text
//! shoal-bench counters --clients 64                     # HTTP increments on a local 3-node cluster
//! shoal-bench counters --set raft.batching=false        # the same without the batching proposer
//! shoal-bench failover --rounds 5                       # SIGKILL a partition leader under load
//! shoal-bench restart --entries 100000                  # restart a node with a long log behind it
//! shoal-bench shorten --clients 64                      # URL shortens on a local 3-node cluster
//! shoal-bench redirect --clients 64                     # cached redirects, spread over the nodes
//! shoal-bench ratelimited --clients 64                  # requests whose limiter key another node owns
//! shoal-bench chat --clients 32                         # 32 pairs of users chatting over WebSockets
//! shoal-bench chat-idle --clients 10000 --warmup 15s    # idle WebSocket sessions: node CPU and memory
//! shoal-bench payments --clients 64                     # charges through a sandbox gateway (20 ms)
//! shoal-bench objects-put --clients 32                  # 4 KiB S3 PUTs, beside a dd ceiling
//! shoal-bench objects-get --size 256MiB --rounds 3      # one large object: PUT and GET MB/s
//! ```
//!
//! Closed-loop load: each client issues its next request as soon as the previous one answered.
//! `--rate R` makes it open loop instead: R requests per second over all clients on a fixed
//! schedule (`--clients` must be enough to keep up), which measures what a request costs at a
//! given load rather than at saturation. A request that fell due while its client was still
//! waiting is timed from when it was due, so queueing shows; one that fell due to an idle client
//! is timed from when it went out, so tokio's 1 ms timer granularity is not counted.
//! Requests completing during `--warmup` are not counted. Latencies are recorded per client in
//! HDR histograms (microseconds) and merged at the end, so recording never contends.

mod chat;
mod driver;
mod objects;
mod payments;
mod services;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, ValueEnum};

/// The workloads this tool knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Workload {
    /// Peer RPC echo across the mesh: two QUIC transport endpoints in this process.
    Echo,
    /// Start a local 3-node cluster, let it idle, report each node's resident memory.
    IdleMemory,
    /// Start a local 3-node cluster with production defaults (16 partitions), wait until it is
    /// ready and settled (`--warmup`, at least 15 s is sensible), then report each node's CPU use
    /// over `--duration` as a percentage of one core (from /proc).
    IdleCpu,
    /// Counter increments over HTTP, spread over the nodes and over many counters.
    Counters,
    /// etcd v3 puts over its HTTP/JSON gateway (needs `--endpoints`), for side-by-side figures.
    EtcdPut,
    /// SIGKILL the leader of a counter's partition under load, `--rounds` times: time from the
    /// kill to the first acknowledged increment.
    Failover,
    /// Fill one partition's log with `--entries` entries (no snapshot), SIGKILL a node, restart
    /// it: time until it serves again.
    Restart,
    /// URL shortens over HTTP, spread over the nodes.
    Shorten,
    /// Redirects of `--keys` (at most 1,000) cached links, spread over the nodes.
    Redirect,
    /// Authenticated requests through the rate limiter, each key owned by another node than
    /// the one asked (`--set ratelimit.enabled=false` for the baseline).
    Ratelimited,
    /// `--clients` pairs of users on different nodes, each sending over a WebSocket as fast as
    /// its `sent` arrives: messages delivered per second, send → recipient latency.
    Chat,
    /// `--clients` idle WebSocket sessions pinging every `--heartbeat`: the nodes' CPU and
    /// memory.
    ChatIdle,
    /// Payments (`POST /v1/payments`, a fresh key each) through a sandbox gateway process at
    /// `--gateway-latency-ms`; reports the sandbox's charges and any duplicate.
    Payments,
    /// S3 PUTs of `--size` objects (small: `--clients` closed-loop clients, ops/s and latency;
    /// over 1 MiB: one object `--rounds` times, MB/s), beside a `dd conv=fdatasync` ceiling.
    ObjectsPut,
    /// S3 GETs of `--keys` small objects at random, or of one large object (`--size` over 1 MiB,
    /// `--rounds` times, PUT and GET MB/s), beside a `dd` ceiling.
    ObjectsGet,
}

#[derive(Parser, Debug)]
#[command(name = "shoal-bench", about = "Benchmarks for Shoal: throughput and latency percentiles.")]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    workload: Workload,
    /// Concurrent clients (requests in flight).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to measure (for idle-memory: how long to idle).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Open loop: this many requests per second over all clients (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Load before measuring starts, not counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Payload bytes per request (echo).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The node binary for workloads that start a cluster (default: `shoal-node` beside this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// HTTP endpoints of a running cluster (comma-separated); default: start a local 3-node one.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Distinct keys the clients spread their writes over.
    #[arg(long, default_value_t = 1024)]
    keys: usize,
    /// A node setting for clusters this tool starts, `section.key=value` (TOML value), e.g.
    /// `--set raft.batching=false`; repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    settings: Vec<String>,
    /// Kills (failover); PUT and GET rounds of one large object (objects-* with --size over 1 MiB).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Log entries behind the restarted node (restart).
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// restart: kill the node before the log is filled, so it must catch up on every entry.
    #[arg(long)]
    while_down: bool,
    /// chat-idle: how often each session pings.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// payments: the sandbox gateway's added latency, in milliseconds.
    #[arg(long, default_value_t = 20)]
    gateway_latency_ms: u64,
    /// objects-*: bytes per object (`4KiB`, `256MiB`, …).
    #[arg(long, default_value = "4KiB", value_parser = objects::parse_size)]
    size: u64,
}

impl Args {
    fn load(&self) -> driver::Load {
        driver::Load { clients: self.clients, warmup: self.warmup, duration: self.duration, rate: self.rate }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        match args.workload {
            Workload::Echo => workloads::echo(&args).await,
            Workload::IdleMemory => workloads::idle_memory(&args).await,
            Workload::IdleCpu => workloads::idle_cpu(&args).await,
            Workload::Counters => workloads::counters(&args).await,
            Workload::EtcdPut => workloads::etcd_put(&args).await,
            Workload::Failover => workloads::failover(&args).await,
            Workload::Restart => workloads::restart(&args).await,
            Workload::Shorten => services::shorten(&args).await,
            Workload::Redirect => services::redirect(&args).await,
            Workload::Ratelimited => services::ratelimited(&args).await,
            Workload::Chat => chat::chat(&args).await,
            Workload::ChatIdle => chat::chat_idle(&args).await,
            Workload::Payments => payments::payments(&args).await,
            Workload::ObjectsPut => objects::objects_put(&args).await,
            Workload::ObjectsGet => objects::objects_get(&args).await,
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", driver::render(&report));
    }
    Ok(())
}
