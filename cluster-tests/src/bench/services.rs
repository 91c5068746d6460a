//! Service workloads: the URL shortener (`shorten`, `redirect`) and the rate limiter
//! (`ratelimited`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use super::Args;
use super::driver::{Report, run_load};
use super::workloads::{ServerWindow, http_client, sign_up, target_cluster_with};

/// `POST /v1/urls` from `--clients` clients, client `i` talking to node `i mod n`.
pub async fn shorten(args: &Args) -> Result<Report> {
    let (_cluster, endpoints) = target_cluster_with(args, &[]).await?;
    let http = http_client(args)?;
    let token = sign_up(&http, &endpoints[0]).await?;
    let endpoints = Arc::new(endpoints);
    let n = Arc::new(AtomicUsize::new(0));
    let (window, opened) = ServerWindow::open(&http, &endpoints);
    let mut report = run_load("shorten", args.load(), Some(opened), move |client| {
        let http = http.clone();
        let token = token.clone();
        let url = format!("{}/v1/urls", endpoints[client % endpoints.len()]);
        let body = json!({ "url": format!("https://example.com/article/{}", n.fetch_add(1, Ordering::Relaxed)) });
        async move {
            let r = http.post(url).bearer_auth(token).json(&body).send().await?;
            anyhow::ensure!(r.status().as_u16() == 201, "status {}", r.status());
            Ok(())
        }
    })
    .await?;
    window.close(&mut report).await?;
    Ok(report)
}

/// The sum of `series` (exact name and labels) over every endpoint's `/metrics`.
async fn metric_sum(http: &reqwest::Client, endpoints: &[String], series: &str) -> Result<f64> {
    let mut sum = 0.0;
    for e in endpoints {
        let text = http.get(format!("{e}/metrics")).send().await?.text().await?;
        sum += cluster_tests::harness::sample(&text, series).unwrap_or(0.0);
    }
    Ok(sum)
}

/// `GET /{code}` over `--keys` links (at most 1,000) from `--clients` clients spread over the
/// nodes, once every node has every link cached: the cache-hit path.
pub async fn redirect(args: &Args) -> Result<Report> {
    let (_cluster, endpoints) = target_cluster_with(args, &[]).await?;
    let http = http_client(args)?;
    let token = sign_up(&http, &endpoints[0]).await?;
    let links = args.keys.clamp(1, 1000);
    let mut codes = Vec::with_capacity(links);
    for i in 0..links {
        let r = http
            .post(format!("{}/v1/urls", endpoints[i % endpoints.len()]))
            .bearer_auth(&token)
            .json(&json!({ "url": format!("https://example.com/r/{i}") }))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "shorten failed: {}", r.status());
        let v: Value = r.json().await?;
        codes.push(v["code"].as_str().ok_or_else(|| anyhow!("no code in {v}"))?.to_string());
    }
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    // Every node caches every link before the clock starts.
    for e in &endpoints {
        for code in &codes {
            let r = client.get(format!("{e}/{code}")).send().await?;
            anyhow::ensure!(r.status().as_u16() == 302, "warm-up redirect answered {}", r.status());
        }
    }
    // One keep-alive connection per client, spoken by a minimal HTTP/1.1 client: reqwest costs
    // as much CPU per request as the server, and this machine runs both.
    let conns: Arc<Vec<tokio::sync::Mutex<Option<RawConn>>>> =
        Arc::new((0..args.clients).map(|_| tokio::sync::Mutex::new(None)).collect());
    let addrs: Arc<Vec<String>> =
        Arc::new(endpoints.iter().map(|e| e.trim_start_matches("http://").to_string()).collect());
    let hits = "shoal_urls_cache_requests_total{result=\"hit\"}";
    let misses = "shoal_urls_cache_requests_total{result=\"miss\"}";
    let hits_before = metric_sum(&http, &endpoints, hits).await?;
    let misses_before = metric_sum(&http, &endpoints, misses).await?;
    let codes = Arc::new(codes);
    let n = Arc::new(AtomicUsize::new(0));
    let (window, opened) = ServerWindow::open(&http, &endpoints);
    let mut report = run_load("redirect", args.load(), Some(opened), move |c| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let path = format!("/{}", codes[i % codes.len()]);
        let (conns, addrs) = (Arc::clone(&conns), Arc::clone(&addrs));
        async move {
            let addr = &addrs[c % addrs.len()];
            let mut slot = conns[c].lock().await;
            if slot.is_none() {
                *slot = Some(RawConn::connect(addr).await?);
            }
            let conn = slot.as_mut().ok_or_else(|| anyhow!("no connection"))?;
            match conn.get(addr, &path).await {
                Ok(302) => Ok(()),
                Ok(status) => Err(anyhow!("status {status}")),
                Err(e) => {
                    // A broken connection is replaced on the next request.
                    *slot = None;
                    Err(e)
                }
            }
        }
    })
    .await?;
    window.close(&mut report).await?;
    let hit = metric_sum(&http, &endpoints, hits).await? - hits_before;
    let miss = metric_sum(&http, &endpoints, misses).await? - misses_before;
    report.extra.insert("links".into(), json!(links));
    if hit + miss > 0.0 {
        report.extra.insert("cache_hit_ratio".into(), json!(((hit / (hit + miss)) * 1000.0).round() / 1000.0));
    }
    Ok(report)
}

/// A keep-alive HTTP/1.1 connection that sends GETs and reads `Content-Length` responses.
struct RawConn {
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
}

impl RawConn {
    async fn connect(addr: &str) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: tokio::io::BufStream::new(stream) })
    }

    /// GET `path`; answers the status (the body is read and dropped).
    async fn get(&mut self, host: &str, path: &str) -> Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await?;
        self.stream.flush().await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 =
            line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                anyhow::bail!("connection closed");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    anyhow::bail!("chunked responses are not supported here");
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// One histogram's bucket counts (`le` → cumulative count) summed over every endpoint.
async fn buckets(http: &reqwest::Client, endpoints: &[String], name: &str, label: &str) -> Result<Vec<(f64, f64)>> {
    let mut sums: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for e in endpoints {
        let text = http.get(format!("{e}/metrics")).send().await?.text().await?;
        for line in text.lines().filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains(label)) {
            let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
            let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *sums.entry(le.to_string()).or_default() += v;
        }
    }
    let mut out: Vec<(f64, f64)> = sums
        .into_iter()
        .map(|(le, v)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(0.0) }, v))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}

/// The upper bound of the bucket holding quantile `q` of the observations between two readings.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, v)| (*le, v - before.iter().find(|(l, _)| l == le).map(|(_, b)| *b).unwrap_or(0.0)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta.iter().find(|(_, v)| *v >= q * total).map(|(le, _)| *le)
}

/// `GET /v1/users/me` with the limiter on (one quota per client, far above what the run uses),
/// each client sending to a node that does not own its key, so every check either crosses the
/// mesh or spends a lease. `--set ratelimit.enabled=false` gives the baseline. Prints the
/// limiter's own check time for the checks that asked the owner (from the servers' histogram)
/// besides the end-to-end latency, and the share of checks admitted from leases
/// (`--set 'ratelimit.lease_ttl="0s"'` turns those off).
pub async fn ratelimited(args: &Args) -> Result<Report> {
    let policies = r#"policies = [{ name = "api", limit = 1000000000, window = "60s", algorithm = "token_bucket", routes = ["/v1/*"], key = "user" }]"#;
    let extra = [("ratelimit", "enabled = true"), ("ratelimit", policies)];
    let (_cluster, endpoints) = target_cluster_with(args, &extra).await?;
    let http = http_client(args)?;
    let view: Value = http.get(format!("{}/v1/cluster", endpoints[0])).send().await?.json().await?;
    let partitions = view["partitions"].as_array().ok_or_else(|| anyhow!("no partitions in {view}"))?;
    let count = partitions.len() as u64;
    let leader = |group: u64| partitions.iter().find(|p| p["id"].as_u64() == Some(group))?["leader"].as_u64();
    let http_of = |node: u64| {
        view["members"].as_array()?.iter().find(|m| m["id"].as_u64() == Some(node))?["http_addr"]
            .as_str()
            .map(str::to_string)
    };
    // One user per client, sent to a node other than its key's owner.
    let mut targets = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let r = http
            .post(format!("{}/v1/users", endpoints[0]))
            .json(&json!({ "name": format!("bench-{i}") }))
            .send()
            .await?;
        let v: Value = r.json().await?;
        let (id, token) = (v["id"].as_str().unwrap_or_default(), v["token"].as_str().unwrap_or_default());
        anyhow::ensure!(!token.is_empty(), "sign-up failed: {v}");
        let owner = leader(shoal::placement::partition_of(&format!("api/user:{id}"), count));
        let other = view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_u64())
            .filter(|n| Some(*n) != owner)
            .nth(i % 2)
            .and_then(http_of)
            .ok_or_else(|| anyhow!("no node other than the owner"))?;
        targets.push((format!("http://{other}/v1/users/me"), token.to_string()));
    }
    let name = "shoal_ratelimit_check_duration_seconds";
    let before = buckets(&http, &endpoints, name, "owner=\"remote\"").await?;
    let leased_before = buckets(&http, &endpoints, name, "owner=\"lease\"").await?;
    let targets = Arc::new(targets);
    let client = http.clone();
    let (window, opened) = ServerWindow::open(&http, &endpoints);
    let mut report = run_load("ratelimited", args.load(), Some(opened), move |c| {
        let (url, token) = targets[c % targets.len()].clone();
        let client = client.clone();
        async move {
            let r = client.get(url).bearer_auth(token).send().await?;
            anyhow::ensure!(r.status().is_success(), "status {}", r.status());
            Ok(())
        }
    })
    .await?;
    window.close(&mut report).await?;
    let after = buckets(&http, &endpoints, name, "owner=\"remote\"").await?;
    let leased_after = buckets(&http, &endpoints, name, "owner=\"lease\"").await?;
    let total = |b: &[(f64, f64)]| b.last().map(|(_, v)| *v).unwrap_or(0.0);
    let (remote, leased) = (total(&after) - total(&before), total(&leased_after) - total(&leased_before));
    if remote + leased > 0.0 {
        report
            .extra
            .insert("limiter_checks_from_leases_pct".into(), json!((leased * 1e4 / (remote + leased)).round() / 100.0));
    }
    for (label, q) in [("limiter_remote_check_p50_ms_at_most", 0.5), ("limiter_remote_check_p99_ms_at_most", 0.99)] {
        if let Some(le) = bucket_quantile(&before, &after, q) {
            report.extra.insert(label.into(), json!((le * 1e5).round() / 100.0));
        }
    }
    Ok(report)
}
