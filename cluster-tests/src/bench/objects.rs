//! `shoal-bench objects-put` / `objects-get`: S3 requests against a local 3-node cluster,
//! signed with SigV4 here ([`sigv4`]: header auth over `UNSIGNED-PAYLOAD`, so the client hashes
//! nothing and measures the cluster, not itself).
//!
//! - `--size` up to 1 MiB (default 4 KiB): many small objects from `--clients` closed-loop
//!   clients spread over the nodes; ops/s and latency percentiles. `objects-get` first PUTs
//!   `--keys` objects (at most 1,000) and then GETs them at random.
//! - `--size` over 1 MiB (e.g. `256MiB`): one object at a time, `--rounds` times: PUT through
//!   node 1 then GET through node 2, MB/s for each, and their medians.
//!
//! Beside the figures: the machine's ceiling, measured in the same run with `dd
//! conv=fdatasync` writing the same bytes three times (the three replicas share one disk here)
//! and reading them back with `iflag=direct`.

mod sigv4;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use rand::RngCore;
use serde_json::{Value, json};

use super::Args;
use super::driver::{Report, run_load};
use super::workloads::{http_client, sign_up, target_cluster};

/// Objects `objects-get` reads at random in the small mode, at most.
const MAX_GET_KEYS: usize = 1000;

/// Larger bodies than this are the one-large-object mode.
const SMALL_MAX: u64 = 1024 * 1024;

/// Parses `4096`, `4KiB`, `256MiB`, `1GiB` (binary units; `K`, `M`, `G` alone too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().map_err(|_| format!("`{s}` is not a size like 4KiB or 256MiB"))?;
    let unit = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(unit).ok_or_else(|| format!("`{s}` is too large"))
}

/// An S3 endpoint of the cluster and a key to sign with.
#[derive(Clone)]
struct S3 {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    key: Arc<sigv4::Key>,
}

impl S3 {
    /// A signed request `method` of `/{path}` to endpoint `node % n`.
    fn request(&self, node: usize, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let host = &self.endpoints[node % self.endpoints.len()];
        let headers = sigv4::sign(&self.key, method.as_str(), host, path, std::time::SystemTime::now());
        let mut req = self.http.request(method, format!("http://{host}{path}"));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req
    }

    async fn put(&self, node: usize, path: &str, body: Vec<u8>) -> Result<()> {
        let r = self.request(node, reqwest::Method::PUT, path).body(body).send().await?;
        ensure!(r.status().is_success(), "PUT {path} answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        Ok(())
    }

    /// GETs `path`; answers the bytes received (streamed, not kept).
    async fn get(&self, node: usize, path: &str) -> Result<u64> {
        let mut r = self.request(node, reqwest::Method::GET, path).send().await?;
        ensure!(r.status().is_success(), "GET {path} answered {}", r.status());
        let mut n = 0u64;
        while let Some(chunk) = r.chunk().await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

/// A cluster with a user, an S3 key and bucket `bench`.
async fn setup(args: &Args) -> Result<(cluster_tests::harness::Cluster, S3)> {
    ensure!(args.endpoints.is_empty(), "objects-* start their own cluster; --endpoints is not supported");
    let (cluster, endpoints) = target_cluster(args).await?;
    let cluster = cluster.ok_or_else(|| anyhow!("no local cluster"))?;
    let http = http_client(args)?;
    let token = sign_up(&http, &endpoints[0]).await?;
    let r = http.post(format!("{}/v1/users/me/s3-keys", endpoints[0])).bearer_auth(&token).send().await?;
    ensure!(r.status().as_u16() == 201, "S3 key creation answered {}", r.status());
    let v: Value = r.json().await?;
    let field = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {k} in {v}"));
    let key =
        sigv4::Key { id: field("access_key_id")?, secret: field("secret_access_key")?, region: "us-east-1".into() };
    let s3_eps: Vec<String> = cluster.nodes.values().map(|n| n.s3.to_string()).collect();
    // Large bodies take longer than the driver's 10 s request timeout.
    let s3_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(args.clients.max(4))
        .build()?;
    let s3 = S3 { http: s3_http, endpoints: Arc::new(s3_eps), key: Arc::new(key) };
    s3.put(0, "/bench", Vec::new()).await.context("CreateBucket")?;
    Ok((cluster, s3))
}

fn random(size: usize) -> Vec<u8> {
    let mut body = vec![0u8; size];
    rand::rng().fill_bytes(&mut body);
    body
}

/// `objects-put`: see the module docs.
pub async fn objects_put(args: &Args) -> Result<Report> {
    let (cluster, s3) = setup(args).await?;
    if args.size > SMALL_MAX {
        return large(args, &cluster.dir, &s3, "objects-put").await;
    }
    let size = args.size as usize;
    let seq = Arc::new(AtomicU64::new(0));
    let mut report = run_load("objects-put", args.load(), None, move |client| {
        let (s3, n) = (s3.clone(), seq.fetch_add(1, Ordering::Relaxed));
        // Fresh bytes each: identical chunks would be stored once, not measured.
        let body = random(size);
        async move { s3.put(client, &format!("/bench/small-{n}"), body).await }
    })
    .await?;
    small_extras(&mut report, &cluster.dir, args.size).await?;
    Ok(report)
}

/// `objects-get`: see the module docs.
pub async fn objects_get(args: &Args) -> Result<Report> {
    let (cluster, s3) = setup(args).await?;
    if args.size > SMALL_MAX {
        return large(args, &cluster.dir, &s3, "objects-get").await;
    }
    let keys = args.keys.clamp(1, MAX_GET_KEYS);
    for n in 0..keys {
        s3.put(n, &format!("/bench/get-{n}"), random(args.size as usize)).await?;
    }
    let size = args.size;
    let mut report = run_load("objects-get", args.load(), None, move |client| {
        let s3 = s3.clone();
        let n = rand::random_range(0..keys);
        async move {
            let got = s3.get(client, &format!("/bench/get-{n}")).await?;
            ensure!(got == size, "GET answered {got} bytes, not {size}");
            Ok(())
        }
    })
    .await?;
    report.extra.insert("objects".into(), json!(keys));
    small_extras(&mut report, &cluster.dir, args.size).await?;
    Ok(report)
}

async fn small_extras(report: &mut Report, dir: &Path, size: u64) -> Result<()> {
    report.extra.insert("object_bytes".into(), json!(size));
    // The ceiling of one small write: three fdatasynced copies of it, one after the other.
    let rounds = 30;
    let src = dir.join("dd-small-src");
    std::fs::write(&src, random(size as usize))?;
    let started = Instant::now();
    for r in 0..rounds {
        for copy in 0..3 {
            dd_write(&src, &dir.join(format!("dd-small-{r}-{copy}")), size).await?;
        }
    }
    let each = started.elapsed().as_secs_f64() / rounds as f64;
    report.extra.insert("dd_ceiling_writes_per_s".into(), json!((1.0 / each).round()));
    report.extra.insert("dd_ceiling_note".into(), json!("3 dd conv=fdatasync runs per write, process start included"));
    Ok(())
}

/// Copies `size` bytes of `src` to `dst` with `dd conv=fdatasync`.
async fn dd_write(src: &Path, dst: &Path, size: u64) -> Result<()> {
    let (bs, count) = if size >= 1 << 20 && size % (1 << 20) == 0 { (1 << 20, size >> 20) } else { (size.max(1), 1) };
    let out = tokio::process::Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .arg(format!("bs={bs}"))
        .arg(format!("count={count}"))
        .arg("conv=fdatasync")
        .output()
        .await?;
    ensure!(out.status.success(), "dd failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Reads `src` with `dd iflag=direct` (past the page cache).
async fn dd_read(src: &Path) -> Result<()> {
    let out = tokio::process::Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg("of=/dev/null")
        .arg("bs=1M")
        .arg("iflag=direct")
        .output()
        .await?;
    ensure!(out.status.success(), "dd failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    (bytes as f64 / 1e6 / secs * 10.0).round() / 10.0
}

/// The one-large-object mode: `--rounds` PUTs through node 1, each read back through node 2.
async fn large(args: &Args, dir: &Path, s3: &S3, workload: &str) -> Result<Report> {
    let size = args.size;
    let rounds = args.rounds.max(1);
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let body = random(size as usize);
        let path = format!("/bench/large-{r}");
        let t = Instant::now();
        s3.put(0, &path, body).await?;
        puts.push(mb_s(size, t.elapsed().as_secs_f64()));
        let t = Instant::now();
        let got = s3.get(1, &path).await?;
        ensure!(got == size, "GET answered {got} bytes, not {size}");
        gets.push(mb_s(size, t.elapsed().as_secs_f64()));
    }
    // The ceiling: the same bytes written three times with fdatasync, then read back.
    let src = dir.join("dd-large-src");
    std::fs::write(&src, random(size as usize))?;
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let t = Instant::now();
        for copy in 0..3 {
            dd_write(&src, &dir.join(format!("dd-large-{copy}")), size).await?;
        }
        writes.push(mb_s(size, t.elapsed().as_secs_f64()));
        let t = Instant::now();
        dd_read(&dir.join(format!("dd-large-{}", r % 3))).await?;
        reads.push(mb_s(size, t.elapsed().as_secs_f64()));
    }
    for copy in 0..3 {
        let _ = std::fs::remove_file(dir.join(format!("dd-large-{copy}")));
    }
    let _ = std::fs::remove_file(&src);
    let mut extra = serde_json::Map::new();
    extra.insert("object_bytes".into(), json!(size));
    extra.insert("put_mb_s".into(), json!(median(&puts)));
    extra.insert("get_mb_s".into(), json!(median(&gets)));
    extra.insert("put_mb_s_each".into(), json!(puts));
    extra.insert("get_mb_s_each".into(), json!(gets));
    extra.insert("dd_ceiling_write_3_copies_mb_s".into(), json!(median(&writes)));
    extra.insert("dd_ceiling_read_mb_s".into(), json!(median(&reads)));
    extra.insert("dd_ceiling_write_3_copies_mb_s_each".into(), json!(writes));
    extra.insert("dd_ceiling_read_mb_s_each".into(), json!(reads));
    Ok(Report {
        workload: workload.to_string(),
        clients: 1,
        rate_per_s: None,
        duration_s: 0.0,
        requests: 0,
        errors: 0,
        throughput_per_s: 0.0,
        latency_ms: None,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("4XB").is_err());
    }
}
