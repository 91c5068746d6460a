//! The load driver (closed loop, or open loop at a fixed rate) and the report it produces.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub clients: usize,
    /// The open-loop rate asked for (requests per second), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub throughput_per_s: f64,
    pub latency_ms: Option<Latency>,
    /// Workload-specific figures, merged into the top level of the JSON.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// How a run drives its clients.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent clients.
    pub clients: usize,
    /// Load before the measured window, not counted.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// `None`: closed loop, each client sends its next request when the previous one answered.
    /// `Some(r)`: open loop, `r` requests per second over all clients, each client on a fixed
    /// schedule. A request that fell due while its client still waited on the one before is
    /// timed from when it was due, so a stalled server shows as latency, not as fewer samples;
    /// one that fell due to an idle client is timed from when it was sent, so the timer's
    /// 1 ms granularity (a request goes out at the first tick after it is due) is not counted.
    pub rate: Option<f64>,
}

/// Runs `load.clients` loops of `op` for `warmup + duration`; only operations that start after
/// the warmup and finish before the end are counted. `window_opened`, if given, is told when the
/// measured window opens (for readings of the servers over the same window).
pub async fn run_load<F, Fut>(
    workload: &str,
    load: Load,
    window_opened: Option<tokio::sync::oneshot::Sender<()>>,
    op: F,
) -> Result<Report>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let Load { clients, warmup, duration, rate } = load;
    anyhow::ensure!(clients > 0, "--clients must be at least 1");
    let interval = match rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(Duration::from_secs_f64(clients as f64 / r)),
        Some(r) => anyhow::bail!("--rate must be a positive number of requests per second, not {r}"),
        None => None,
    };
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            // Open loop: client c's k-th request is due at start + (k + c/clients)·interval.
            let mut due = interval.map(|i| start + i.mul_f64(client as f64 / clients as f64));
            let mut idle_since = start;
            loop {
                // When the request is due, and when its latency starts.
                let (t0, from) = match (due, interval) {
                    (Some(at), Some(i)) => {
                        tokio::time::sleep_until(at.into()).await;
                        due = Some(at + i);
                        (at, if idle_since <= at { Instant::now() } else { at })
                    }
                    _ => {
                        let now = Instant::now();
                        (now, now)
                    }
                };
                if t0 >= end {
                    break;
                }
                let result = op(client).await;
                let t1 = Instant::now();
                idle_since = t1;
                if t0 < measure_from || t1 > end {
                    continue;
                }
                match result {
                    Ok(()) => hist.saturating_record(t1.duration_since(from).as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            anyhow::Ok((hist, errors))
        }));
    }
    if let Some(opened) = window_opened {
        // The window is defined by this clock: the clients count from `measure_from` too.
        tokio::time::sleep_until(measure_from.into()).await;
        let _ = opened.send(());
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        all.add(h)?;
        errors += e;
    }
    let secs = duration.as_secs_f64();
    let ms = |v: u64| v as f64 / 1000.0;
    Ok(Report {
        workload: workload.to_string(),
        clients,
        rate_per_s: rate,
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
    })
}

/// Human-readable report.
pub fn render(r: &Report) -> String {
    let mut out = format!("workload: {}\n", r.workload);
    if r.requests > 0 || r.errors > 0 {
        out.push_str(&format!(
            "clients: {}   duration: {:.1} s   requests: {}   errors: {}\nthroughput: {:.0} req/s{}\n",
            r.clients,
            r.duration_s,
            r.requests,
            r.errors,
            r.throughput_per_s,
            r.rate_per_s.map(|rate| format!(" (open loop at {rate:.0} req/s)")).unwrap_or_default()
        ));
    }
    if let Some(l) = &r.latency_ms {
        out.push_str(&format!(
            "latency ms: p50 {:.3}   p99 {:.3}   p999 {:.3}   max {:.3}   mean {:.3}\n",
            l.p50, l.p99, l.p999, l.max, l.mean
        ));
    }
    for (k, v) in &r.extra {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}
