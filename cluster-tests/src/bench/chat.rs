//! `shoal-bench chat`: `--clients` pairs of users, the two of a pair on different nodes, each
//! sending to the other as fast as its `sent` arrives, over real WebSockets. Counts messages
//! that reached the recipient's socket in the measured window, and their end-to-end latency
//! (the sender's `send` frame going out → the recipient reading the `message` frame).
//! `chat-idle` instead connects `--clients` sessions that only ping every `chat.heartbeat`
//! and reports the nodes' CPU and memory.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use cluster_tests::chat::{ChatSocket, Incoming};
use hdrhistogram::Histogram;
use serde_json::json;

use super::Args;
use super::driver::{Latency, Report};
use super::workloads::{ServerWindow, http_client, target_cluster_with};

/// A bench user.
#[derive(Clone)]
struct User {
    id: String,
    token: String,
}

async fn sign_up(http: &reqwest::Client, endpoint: &str, name: &str) -> Result<User> {
    // A 503 (no leader for a moment, e.g. while a quiet group wakes) is retried, a few times.
    let mut attempts = 0;
    let r = loop {
        let r = http.post(format!("{endpoint}/v1/users")).json(&json!({ "name": name })).send().await?;
        attempts += 1;
        if r.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE || attempts == 5 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = r.status();
    anyhow::ensure!(status.is_success(), "sign-up failed: {status}: {}", r.text().await.unwrap_or_default());
    let v: serde_json::Value = r.json().await?;
    let field = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {k} in {v}"));
    Ok(User { id: field("id")?, token: field("token")? })
}

fn addr(endpoint: &str) -> Result<std::net::SocketAddr> {
    Ok(endpoint.trim_start_matches("http://").trim_end_matches('/').parse()?)
}

/// What one user's loop measured.
struct Side {
    /// Latencies (µs) of the peer's messages read in the window.
    hist: Histogram<u64>,
    /// Own sends answered `sent` in the window.
    sent: u64,
    errors: u64,
}

/// One user: sends to `peer` one at a time, body = microseconds since `origin` at send time;
/// reads every frame; records the latency of the peer's messages from their bodies.
async fn side(
    mut socket: ChatSocket,
    me: User,
    peer: User,
    origin: Instant,
    measure: (Instant, Instant),
) -> Result<Side> {
    let (from, end) = measure;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut sent, mut errors, mut n) = (0u64, 0u64, 0u64);
    let mut pair = [me.id.as_str(), peer.id.as_str()];
    pair.sort_unstable();
    let conversation = pair.join(":");
    let mut last_seq = 0;
    let mut waiting = false;
    loop {
        let now = Instant::now();
        if now >= end + Duration::from_secs(2) {
            break;
        }
        if !waiting && now < end {
            let body = origin.elapsed().as_micros().to_string();
            socket.send_message(&peer.id, &format!("{}-{n}", me.id), &body).await?;
            n += 1;
            waiting = true;
        }
        let frame = match socket.frame(Duration::from_secs(10)).await {
            Ok(f) => f,
            Err(_) if now >= end => break,
            Err(e) => return Err(e),
        };
        let at = Instant::now();
        match frame["type"].as_str() {
            Some("sent") => {
                waiting = false;
                if at >= from && at <= end {
                    sent += 1;
                }
            }
            Some("error") => {
                waiting = false;
                errors += 1;
            }
            Some("message") => {
                last_seq = frame["seq"].as_u64().unwrap_or(last_seq);
                if last_seq % 100 == 0 {
                    socket.ack(&conversation, last_seq).await?;
                }
                if frame["from"].as_str() != Some(peer.id.as_str()) || at < from || at > end {
                    continue;
                }
                let Some(at_send) = frame["body"].as_str().and_then(|b| b.parse::<u64>().ok()) else {
                    bail!("a message body that is not a bench timestamp: {frame}");
                };
                let micros = (at.duration_since(origin).as_micros() as u64).saturating_sub(at_send);
                hist.saturating_record(micros.max(1));
            }
            _ => {}
        }
        if at >= end && !waiting {
            break;
        }
    }
    socket.close().await;
    Ok(Side { hist, sent, errors })
}

/// See the module docs.
pub async fn chat(args: &Args) -> Result<Report> {
    let (_cluster, endpoints) = target_cluster_with(args, &[]).await?;
    anyhow::ensure!(endpoints.len() >= 2, "chat needs at least two nodes");
    let http = http_client(args)?;
    let pairs = args.clients.max(1);
    let mut sockets = Vec::new();
    for p in 0..pairs {
        let (ea, eb) = (&endpoints[p % endpoints.len()], &endpoints[(p + 1) % endpoints.len()]);
        let a = sign_up(&http, ea, &format!("bench-a{p}")).await?;
        let b = sign_up(&http, eb, &format!("bench-b{p}")).await?;
        let sa = ChatSocket::connect(addr(ea)?, Some(&a.token), false).await?;
        let sb = ChatSocket::connect(addr(eb)?, Some(&b.token), false).await?;
        sockets.push((sa, a, sb, b));
    }
    let origin = Instant::now();
    let from = origin + args.warmup;
    let end = from + args.duration;
    let (window, opened) = ServerWindow::open(&http, &endpoints);
    let mut tasks = Vec::new();
    for (sa, a, sb, b) in sockets {
        tasks.push(tokio::spawn(side(sa, a.clone(), b.clone(), origin, (from, end))));
        tasks.push(tokio::spawn(side(sb, b, a, origin, (from, end))));
    }
    tokio::time::sleep_until(from.into()).await;
    let _ = opened.send(());
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut sent, mut errors) = (0, 0);
    for t in tasks {
        let s = t.await??;
        all.add(&s.hist)?;
        sent += s.sent;
        errors += s.errors;
    }
    let secs = args.duration.as_secs_f64();
    let ms = |v: u64| v as f64 / 1000.0;
    let mut report = Report {
        workload: "chat".into(),
        clients: 2 * pairs,
        rate_per_s: None,
        duration_s: secs,
        requests: all.len(),
        errors,
        throughput_per_s: all.len() as f64 / secs,
        latency_ms: (!all.is_empty()).then(|| Latency {
            p50: ms(all.value_at_quantile(0.50)),
            p99: ms(all.value_at_quantile(0.99)),
            p999: ms(all.value_at_quantile(0.999)),
            max: ms(all.max()),
            mean: all.mean() / 1000.0,
        }),
        extra: serde_json::Map::new(),
    };
    report.extra.insert("pairs".into(), json!(pairs));
    report.extra.insert("sent_per_s".into(), json!((sent as f64 / secs).round()));
    window.close(&mut report).await?;
    Ok(report)
}

/// Idle sessions, each served by its own task from the moment it connected.
pub type Idle = Vec<tokio::task::JoinHandle<Result<()>>>;

/// Connects `n` sessions spread over `endpoints` (users signed up through the first node);
/// each pings every `every` (spread evenly) and reads every frame (so the server's pings get
/// their pongs) until `stop` turns true, then closes.
pub async fn idle_sessions(
    http: &reqwest::Client,
    endpoints: &[String],
    n: usize,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Idle> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let e = &endpoints[i % endpoints.len()];
        let user = sign_up(http, &endpoints[0], &format!("idle-{i}")).await?;
        let mut socket = ChatSocket::connect(addr(e)?, Some(&user.token), false).await?;
        let offset = every.mul_f64(i as f64 / n.max(1) as f64);
        let stop = stop.clone();
        out.push(tokio::spawn(async move {
            let mut next_ping = tokio::time::Instant::now() + offset;
            while !*stop.borrow() {
                let now = tokio::time::Instant::now();
                if now >= next_ping {
                    socket.send_json(&json!({"type": "ping"})).await?;
                    next_ping = now + every;
                }
                let wait = next_ping.saturating_duration_since(now).min(Duration::from_millis(500));
                // A read that times out is just a quiet moment.
                if let Ok(Incoming::Closed(code)) = socket.next(wait.max(Duration::from_millis(1))).await {
                    bail!("a session was closed (code {code:?})");
                }
            }
            socket.close().await;
            Ok(())
        }));
    }
    Ok(out)
}

/// `chat-idle`: `--clients` sessions spread over a local 3-node cluster, each pinging every
/// `--heartbeat`; reports the nodes' CPU (percent of one core, summed) over `--duration` after
/// `--warmup`, their resident memory at the end and its growth since before the sessions
/// connected.
pub async fn chat_idle(args: &Args) -> Result<Report> {
    let (cluster, endpoints) = target_cluster_with(args, &[]).await?;
    let cluster = cluster.ok_or_else(|| anyhow!("chat-idle measures the processes it starts: drop --endpoints"))?;
    let http = http_client(args)?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let pids: Vec<u32> = ids
        .iter()
        .map(|id| cluster.node(*id).pid().ok_or_else(|| anyhow!("node {id} not running")))
        .collect::<Result<_>>()?;
    let rss_before: Vec<f64> = pids.iter().map(|p| super::workloads::vm_rss_mb(*p).unwrap_or(0.0)).collect();
    let connected = Instant::now();
    let every = args.heartbeat;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let alive = idle_sessions(&http, &endpoints, args.clients, every, stopped).await?;
    let connect_s = connected.elapsed().as_secs_f64();
    tokio::time::sleep(args.warmup).await;
    let mut sessions = Vec::new();
    for id in &ids {
        sessions.push(cluster.metric(*id, "shoal_chat_sessions").await);
    }
    let before: Vec<u64> = pids.iter().map(|p| super::workloads::cpu_ticks(*p).unwrap_or(0)).collect();
    let start = Instant::now();
    tokio::time::sleep(args.duration).await;
    let elapsed = start.elapsed().as_secs_f64();
    let ticks_per_s = super::workloads::clock_ticks_per_s();
    let mut cpu = 0.0;
    let mut rss = 0.0;
    let mut growth = 0.0;
    let mut nodes = Vec::new();
    for (i, ((id, pid), b)) in ids.iter().zip(&pids).zip(before).enumerate() {
        let after = super::workloads::cpu_ticks(*pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/stat"))?;
        let percent = (after - b) as f64 / ticks_per_s / elapsed * 100.0;
        let mb = super::workloads::vm_rss_mb(*pid).unwrap_or(0.0);
        cpu += percent;
        rss += mb;
        growth += mb - rss_before[i];
        nodes.push(json!({ "id": id, "cpu_percent": (percent * 100.0).round() / 100.0,
                            "rss_mb": (mb * 10.0).round() / 10.0,
                            "rss_growth_mb": ((mb - rss_before[i]) * 10.0).round() / 10.0,
                            "sessions": sessions[i] }));
    }
    // Every session lived through the run (a closed one fails it).
    stop.send_replace(true);
    for session in alive {
        session.await??;
    }
    Ok(Report {
        workload: "chat-idle".into(),
        clients: args.clients,
        rate_per_s: None,
        duration_s: elapsed,
        requests: 0,
        errors: 0,
        throughput_per_s: 0.0,
        latency_ms: None,
        extra: serde_json::Map::from_iter([
            ("sessions".to_string(), json!(args.clients)),
            ("heartbeat_s".to_string(), json!(every.as_secs_f64())),
            ("connect_s".to_string(), json!((connect_s * 10.0).round() / 10.0)),
            ("nodes".to_string(), json!(nodes)),
            ("total_cpu_percent".to_string(), json!((cpu * 100.0).round() / 100.0)),
            ("total_rss_mb".to_string(), json!((rss * 10.0).round() / 10.0)),
            ("total_rss_growth_mb".to_string(), json!((growth * 10.0).round() / 10.0)),
        ]),
    })
}
