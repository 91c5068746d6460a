//! A local cluster of real `shoal` processes for tests and benchmarks.
//!
//! Each [`Cluster`] has its own temporary directory (certificates, configs, data, logs) and its
//! own free loopback ports, so tests run independently. Nodes are killed when the cluster is
//! dropped. Waiting is always on a condition with a deadline ([`wait_for`]), never a bare sleep.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::skip::{self, ToolCheck};

/// The admin token of test clusters; [`Cluster::http`] sends it on every request.
pub const ADMIN_TOKEN: &str = "shoal-test-admin-token";

/// Generous deadline for a cluster to form on a loaded 2-core machine.
pub const FORM: Duration = Duration::from_secs(20);

/// Starts a cluster of `spec` with the node binary `bin` and waits (up to [`FORM`]) until every
/// node sees every other up and is ready.
pub async fn formed(bin: &Path, spec: &ClusterSpec) -> Result<Cluster> {
    let cluster = Cluster::start(bin, spec)?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.wait_all_see_up(&ids, &ids, FORM).await.context("cluster did not form")?;
    cluster.wait_ready(&ids, FORM).await.context("cluster did not become ready")?;
    Ok(cluster)
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for_result(what, deadline, || {
        let fut = check();
        async move { Ok(fut.await) }
    })
    .await
}

/// Like [`wait_for`], but `check` may fail, which ends the wait with its error.
pub async fn wait_for_result<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port free for both TCP and UDP right now, and never handed out before by this
/// process (the OS may offer a just-released port again; two nodes, or two tests running in
/// parallel, must not get the same one).
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner()).insert(port)
        {
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

/// Finds an external tool on PATH. When it is absent the test skips: it gets `None`, and a
/// `SKIPPED` line naming the test and the tool shows in `cargo test`'s output. Under `CI=true`
/// a missing tool is a failure instead: `.ci/run` installs every tool. See [`crate::skip`].
pub fn tool(name: &str, provided_by: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    match skip::tool_check(found.is_some(), std::env::var(skip::CI).ok().as_deref()) {
        ToolCheck::Run => {}
        ToolCheck::Fail => panic!("{name} is required under CI=true ({provided_by}; .ci/run installs it)"),
        ToolCheck::Skip => skip::announce(&format!("{name} is not installed ({provided_by}; .ci/run installs it)")),
    }
    found
}

/// One node of a test cluster.
pub struct Node {
    /// Node id.
    pub id: u64,
    /// HTTP address.
    pub http: SocketAddr,
    /// QUIC address.
    pub peer: SocketAddr,
    /// S3 endpoint address.
    pub s3: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (appended across restarts).
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Base URL of its HTTP API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of nodes.
    pub nodes: u64,
    /// Extra `KEY = VALUE` TOML lines per section, e.g. `("membership", "down_after_missed = 3")`.
    pub settings: Vec<(&'static str, String)>,
}

impl ClusterSpec {
    /// `nodes` nodes with fast heartbeats suitable for tests.
    pub fn new(nodes: u64) -> Self {
        Self {
            nodes,
            settings: vec![
                ("membership", "heartbeat_interval = \"200ms\"".into()),
                ("membership", "down_after_missed = 5".into()),
                ("shutdown", "drain_timeout = \"5s\"".into()),
                ("auth", format!("admin_token = \"{ADMIN_TOKEN}\"")),
                // Tests and benchmarks send far more than 100 requests a minute as one user; the
                // rate-limit tests switch it on.
                ("ratelimit", "enabled = false".into()),
                // Fewer groups than the default keep a debug-build cluster light on 2 cores, and
                // longer election timeouts keep two test clusters on 2 cores from electing
                // needlessly.
                ("raft", "partitions = 4".into()),
                ("raft", "heartbeat_interval = \"150ms\"".into()),
                ("raft", "election_timeout_min = \"1s\"".into()),
                ("raft", "election_timeout_max = \"2s\"".into()),
            ],
        }
    }

    /// Adds (or replaces) a setting.
    pub fn set(mut self, section: &'static str, line: &str) -> Self {
        let key = line.split('=').next().unwrap_or_default().trim().to_string();
        self.settings.retain(|(s, l)| !(*s == section && l.split('=').next().unwrap_or_default().trim() == key));
        self.settings.push((section, line.to_string()));
        self
    }
}

/// A local cluster of real node processes.
pub struct Cluster {
    /// The temporary directory (kept on failure for inspection if `SHOAL_KEEP_TEST_DIRS` is set).
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    bin: PathBuf,
    settings: Vec<(&'static str, String)>,
    /// The nodes by id.
    pub nodes: BTreeMap<u64, Node>,
    /// HTTP client with a short timeout.
    pub http: reqwest::Client,
}

impl Cluster {
    /// Writes certificates and configs and starts every node.
    pub fn start(bin: &Path, spec: &ClusterSpec) -> Result<Self> {
        let mut cluster = Self::prepare(bin, spec)?;
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// Writes certificates and configs without starting anything.
    pub fn prepare(bin: &Path, spec: &ClusterSpec) -> Result<Self> {
        let temp = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
        let dir = temp.path().to_path_buf();
        let keep = std::env::var_os("SHOAL_KEEP_TEST_DIRS").is_some();
        shoal::certs::init(&dir.join("certs"), spec.nodes)?;
        let mut nodes = BTreeMap::new();
        for id in 1..=spec.nodes {
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let peer: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let s3: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            nodes.insert(
                id,
                Node {
                    id,
                    http,
                    peer,
                    s3,
                    config: dir.join(format!("node-{id}.toml")),
                    log: dir.join(format!("logs/node-{id}.log")),
                    child: None,
                },
            );
        }
        std::fs::create_dir_all(dir.join("logs"))?;
        let members: String = nodes
            .values()
            .map(|n| format!("  {{ id = {}, peer_addr = \"{}\", http_addr = \"{}\" }},\n", n.id, n.peer, n.http))
            .collect();
        let cluster_lines = vec![format!("initial_members = [\n{members}]")];
        for n in nodes.values() {
            write_config(n, &cluster_lines, &spec.settings)?;
        }
        let (temp, dir) = if keep { (None, temp.keep()) } else { (Some(temp), dir) };
        Ok(Self {
            dir,
            _temp: temp,
            bin: bin.to_path_buf(),
            settings: spec.settings.clone(),
            nodes,
            http: admin_client()?,
        })
    }

    /// Adds a node that is not a founder and joins through node `through`; returns its id.
    pub fn add_joining_node(&mut self, through: u64) -> Result<u64> {
        let id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        shoal::certs::init(&self.dir.join("certs"), id)?;
        let node = Node {
            id,
            http: format!("127.0.0.1:{}", free_port()?).parse()?,
            peer: format!("127.0.0.1:{}", free_port()?).parse()?,
            s3: format!("127.0.0.1:{}", free_port()?).parse()?,
            config: self.dir.join(format!("node-{id}.toml")),
            log: self.dir.join(format!("logs/node-{id}.log")),
            child: None,
        };
        let join = vec![format!("join = [\"{}\"]", self.node(through).peer)];
        write_config(&node, &join, &self.settings)?;
        self.nodes.insert(id, node);
        Ok(id)
    }

    /// A handle on the same nodes for HTTP clients: it owns no process and no directory, so
    /// dropping it stops nothing.
    pub fn client_view(&self) -> Cluster {
        let nodes = self
            .nodes
            .iter()
            .map(|(id, n)| {
                let node = Node {
                    id: n.id,
                    http: n.http,
                    peer: n.peer,
                    s3: n.s3,
                    config: n.config.clone(),
                    log: n.log.clone(),
                    child: None,
                };
                (*id, node)
            })
            .collect();
        Cluster {
            dir: self.dir.clone(),
            _temp: None,
            bin: self.bin.clone(),
            settings: self.settings.clone(),
            nodes,
            http: self.http.clone(),
        }
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// Starts (or restarts) a node with its data; returns immediately.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let bin = self.bin.clone();
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let log = OpenOptions::new().create(true).append(true).open(&node.log)?;
        let child = Command::new(bin)
            .arg("start")
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {id}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// Sends `signal` to a running node without waiting.
    pub fn signal(&self, id: u64, signal: Signal) -> Result<()> {
        let pid = self.node(id).pid().ok_or_else(|| anyhow!("node {id} is not running"))?;
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// SIGKILLs a node and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<ExitStatus> {
        self.signal(id, Signal::SIGKILL)?;
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let mut child = node.child.take().ok_or_else(|| anyhow!("node {id} is not running"))?;
        Ok(child.wait()?)
    }

    /// Waits (with a deadline) for a node to exit by itself, e.g. after SIGTERM.
    pub async fn wait_exit(&mut self, id: u64, deadline: Duration) -> Result<ExitStatus> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let child = node.child.as_mut().ok_or_else(|| anyhow!("node {id} is not running"))?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                node.child = None;
                return Ok(status);
            }
            if start.elapsed() > deadline {
                bail!("node {id} did not exit within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True while the node's process is running.
    pub fn is_running(&mut self, id: u64) -> bool {
        match self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// GET a JSON document; `None` on any failure.
    pub async fn get_json(&self, id: u64, path: &str) -> Option<Value> {
        let r = self.http.get(self.node(id).url(path)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// HTTP status of a GET, `None` if unreachable.
    pub async fn status_of(&self, id: u64, path: &str) -> Option<u16> {
        self.http.get(self.node(id).url(path)).send().await.ok().map(|r| r.status().as_u16())
    }

    /// The state (`up`/`down`) node `observer` reports for `peer`.
    pub async fn peer_state(&self, observer: u64, peer: u64) -> Option<String> {
        let v = self.get_json(observer, "/v1/cluster").await?;
        v["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"].as_u64() == Some(peer))
            .and_then(|m| m["state"].as_str().map(str::to_string))
    }

    /// Waits until every running node reports every node in `expect_up` as up.
    pub async fn wait_all_see_up(&self, observers: &[u64], expect_up: &[u64], deadline: Duration) -> Result<()> {
        wait_for("every observer to report the peers up", deadline, || async {
            for o in observers {
                for p in expect_up {
                    if self.peer_state(*o, *p).await.as_deref() != Some("up") {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await
    }

    /// Waits until every node in `ids` answers `/readyz` with 200 (joined, meta leader known).
    pub async fn wait_ready(&self, ids: &[u64], deadline: Duration) -> Result<()> {
        wait_for("nodes to be ready", deadline, || async {
            for id in ids {
                if self.status_of(*id, "/readyz").await != Some(200) {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self, id: u64) -> Option<String> {
        let r = self.http.get(self.node(id).url("/metrics")).send().await.ok()?;
        r.text().await.ok()
    }

    /// The value of one sample in `/metrics` (exact series match, e.g.
    /// `shoal_actor_restarts_total{actor="membership"}`), 0 if absent.
    pub async fn metric(&self, id: u64, series: &str) -> Option<f64> {
        let text = self.metrics(id).await?;
        Some(sample(&text, series).unwrap_or(0.0))
    }

    /// Every sample of the per-group metric `name` on node `id` (see [`group_samples`]);
    /// `None` when the node did not answer or exposes none.
    pub async fn group_metric(&self, id: u64, name: &str) -> Option<BTreeMap<String, u64>> {
        let samples = group_samples(&self.metrics(id).await?, name);
        (!samples.is_empty()).then_some(samples)
    }

    /// Every Raft group's applied index on node `id`, from `/metrics`.
    pub async fn applied(&self, id: u64) -> Option<BTreeMap<String, u64>> {
        self.group_metric(id, "shoal_raft_applied_index").await
    }

    /// Waits until every node in `ids` is ready and has applied the same index in every Raft
    /// group (replication has caught up everywhere).
    pub async fn wait_converged(&self, ids: &[u64], deadline: Duration) -> Result<BTreeMap<String, u64>> {
        self.wait_ready(ids, deadline).await?;
        wait_for("every node to apply the same index in every group", deadline, || async {
            let mut views = Vec::new();
            for id in ids {
                views.push(self.applied(*id).await?);
            }
            views.windows(2).all(|w| w[0] == w[1]).then(|| views.swap_remove(0))
        })
        .await
    }

    /// The contents of a node's log.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }
}

/// An HTTP client that authenticates as the test admin on every request.
pub fn admin_client() -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}").parse()?);
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(2)).default_headers(headers).build()?)
}

/// A client without a token that does not follow redirects (a 302 is seen as one, and nothing
/// leaves loopback), with a 15 s timeout.
pub fn plain_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Writes a node's config file from its addresses, `[cluster]` lines and extra settings.
fn write_config(n: &Node, cluster: &[String], settings: &[(&'static str, String)]) -> Result<()> {
    let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    sections
        .entry("node")
        .or_default()
        .extend([format!("id = {}", n.id), format!("data_dir = \"data/node-{}\"", n.id)]);
    sections.entry("http").or_default().push(format!("listen = \"{}\"", n.http));
    sections.entry("peer").or_default().push(format!("listen = \"{}\"", n.peer));
    sections.entry("s3").or_default().push(format!("listen = \"{}\"", n.s3));
    sections.entry("tls").or_default().extend([
        "ca_cert = \"certs/ca.pem\"".to_string(),
        format!("cert = \"certs/node-{}.pem\"", n.id),
        format!("key = \"certs/node-{}.key\"", n.id),
    ]);
    sections.entry("cluster").or_default().extend(cluster.iter().cloned());
    if !settings.iter().any(|(s, l)| *s == "log" && l.trim_start().starts_with("filter")) {
        sections.entry("log").or_default().push("filter = \"info,shoal=debug,openraft=error\"".into());
    }
    for (section, line) in settings {
        sections.entry(section).or_default().push(line.clone());
    }
    let text: String = sections.iter().map(|(s, lines)| format!("[{s}]\n{}\n\n", lines.join("\n"))).collect();
    std::fs::write(&n.config, text)?;
    shoal::config::Config::load(&n.config).map_err(|e| anyhow!("test config invalid: {e}"))?;
    Ok(())
}

/// The value of `series` (name plus labels exactly as exposed) in a text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Every `shoal_raft_applied_index{group="…"}` sample in a text exposition, by group.
pub fn applied_indexes(text: &str) -> BTreeMap<String, u64> {
    group_samples(text, "shoal_raft_applied_index")
}

/// Every sample of a per-group metric `name` (labelled only by `group`), by group.
pub fn group_samples(text: &str, name: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{name}{{group=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (group, value) = rest.split_once("\"} ")?;
            Some((group.to_string(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
