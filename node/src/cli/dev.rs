//! `shoal dev up | kill | start`: a local cluster of real node processes for development.
//!
//! `DIR` holds `certs/`, `node-N.toml`, `data/node-N/`, `logs/node-N.log` and `nodes.json`
//! (`[{"id", "http_addr", "peer_addr", "s3_addr", "pid", "log"}]`), which `kill` and `start` keep current.
//! Nodes run in their own process group, so Ctrl-C reaches `dev up`, which then stops them in
//! order with SIGTERM.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill as send_signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::CliError;
use crate::config::{self, Config, MemberAddr};

/// Default dev directory.
pub const DEFAULT_DIR: &str = ".shoal/dev";
/// Default first port.
pub const DEFAULT_BASE_PORT: u16 = 7000;

/// Options of `dev up`.
#[derive(Debug)]
pub struct UpOptions {
    /// Number of nodes.
    pub nodes: u64,
    /// The dev directory.
    pub dir: PathBuf,
    /// First port.
    pub base_port: u16,
    /// `--set` overrides for every node.
    pub set: Vec<String>,
    /// Start the sandbox payment gateway and point the nodes at it.
    pub sandbox: bool,
}

/// The sandbox gateway's port: `base + 9`, beside node 1's ports (`base`, `base + 1`) and below
/// node 2's (`base + 10`).
pub fn sandbox_port(base: u16) -> Result<u16, CliError> {
    base.checked_add(9).ok_or_else(|| CliError::Usage { message: format!("--base-port {base} is too high") })
}

/// Starts `shoal gateway-sandbox` for the dev cluster (webhooks to node 1), logging to
/// `logs/sandbox.log`, and writes `DIR/sandbox.json`.
fn spawn_sandbox(dir: &Path, port: u16, node1_http: &str) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::failed(format!("cannot find the shoal binary: {e}")))?;
    let log = dir.join("logs").join("sandbox.log");
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| CliError::failed(e.to_string()))?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", log.display())))?;
    let err = file.try_clone().map_err(|e| CliError::failed(e.to_string()))?;
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .args(["gateway-sandbox", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--webhook-url", &format!("http://{node1_http}/v1/payments/webhooks/gateway")])
        .args(["--webhook-secret", crate::config::DEFAULT_WEBHOOK_SECRET])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the sandbox gateway: {e}")))?;
    let json = serde_json::json!({ "gateway_url": format!("http://127.0.0.1:{port}") });
    let path = dir.join("sandbox.json");
    std::fs::write(&path, format!("{json}\n"))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(child)
}

/// One line of `nodes.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeEntry {
    /// Node id.
    pub id: u64,
    /// HTTP address.
    pub http_addr: String,
    /// QUIC address.
    pub peer_addr: String,
    /// S3 endpoint (HTTP port + 2).
    #[serde(default)]
    pub s3_addr: String,
    /// Process id while running, `null` when stopped.
    pub pid: Option<u32>,
    /// Log file.
    pub log: PathBuf,
}

/// S3 port of node `id`: its HTTP port + 2.
pub fn s3_port(base: u16, id: u64) -> Result<u16, CliError> {
    let (http, _) = ports(base, id)?;
    http.checked_add(2)
        .ok_or_else(|| CliError::Usage { message: format!("--base-port {base} leaves no room for node {id}") })
}

/// HTTP and peer ports of node `id`.
pub fn ports(base: u16, id: u64) -> Result<(u16, u16), CliError> {
    let http = u64::from(base) + 10 * (id - 1);
    if http + 1 > u64::from(u16::MAX) {
        return Err(CliError::Usage { message: format!("--base-port {base} leaves no room for node {id}") });
    }
    Ok((http as u16, http as u16 + 1))
}

fn nodes_file(dir: &Path) -> PathBuf {
    dir.join("nodes.json")
}

/// Reads `DIR/nodes.json`.
pub fn read_nodes(dir: &Path) -> Result<Vec<NodeEntry>, CliError> {
    let path = nodes_file(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::failed(format!("cannot read {}: {e} (start a cluster with `shoal dev up` first)", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| CliError::failed(format!("{} is corrupt: {e}", path.display())))
}

fn write_nodes(dir: &Path, nodes: &[NodeEntry]) -> Result<(), CliError> {
    let path = nodes_file(dir);
    let tmp = dir.join("nodes.json.tmp");
    let text = serde_json::to_string_pretty(nodes).map_err(|e| CliError::failed(e.to_string()))?;
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))
}

/// True if `pid` is a live `shoal` process (guards against recycled pids).
fn is_shoal_process(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A zombie (state Z) has exited; it only waits to be reaped.
    let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains("start\0--config")
}

/// The process is gone, or a zombie (exited, waiting to be reaped by `dev up`).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| {
            let state = rest.trim_start();
            state.starts_with('Z') || state.starts_with('X')
        }),
        Err(_) => true,
    }
}

fn node_config(opts: &UpOptions, id: u64, members: &[MemberAddr]) -> Result<String, CliError> {
    let (http, peer) = ports(opts.base_port, id)?;
    let s3 = s3_port(opts.base_port, id)?;
    let workers = crate::config::NodeSection::shared_machine_workers(members.len());
    let text = format!(
        r#"# Generated by `shoal dev up`; regenerated on every run.
[node]
id = {id}
data_dir = "data/node-{id}"
# The nodes share this machine: each gets its share of the cores.
worker_threads = {workers}

[http]
listen = "127.0.0.1:{http}"

[peer]
listen = "127.0.0.1:{peer}"

[s3]
listen = "127.0.0.1:{s3}"

[tls]
ca_cert = "certs/ca.pem"
cert = "certs/node-{id}.pem"
key = "certs/node-{id}.key"

[cluster]
initial_members = [
{members}]
"#,
        members = members
            .iter()
            .map(|m| format!(
                "  {{ id = {}, peer_addr = \"{}\", http_addr = \"{}\" }},\n",
                m.id, m.peer_addr, m.http_addr
            ))
            .collect::<String>()
    );
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| CliError::failed(e.to_string()))?;
    if opts.sandbox {
        let url = format!("http://127.0.0.1:{}", sandbox_port(opts.base_port)?);
        config::apply_override(&mut table, &format!("payments.gateway_url={url}"))?;
    }
    for s in &opts.set {
        config::apply_override(&mut table, s)?;
    }
    let out = toml::to_string(&table).map_err(|e| CliError::failed(e.to_string()))?;
    // Validate now, so a bad --set is reported once instead of by every node.
    Config::from_toml(&out)?;
    Ok(out)
}

fn spawn_node(dir: &Path, id: u64) -> Result<(Child, PathBuf), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::failed(format!("cannot find the shoal binary: {e}")))?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| CliError::failed(format!("cannot create {}: {e}", logs.display())))?;
    let log = logs.join(format!("node-{id}.log"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", log.display())))?;
    let err = file.try_clone().map_err(|e| CliError::failed(e.to_string()))?;
    let config = dir.join(format!("node-{id}.toml"));
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .arg("start")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start node {id}: {e}")))?;
    Ok((child, log))
}

fn absolute(dir: &Path) -> Result<PathBuf, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.display())))?;
    dir.canonicalize().map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))
}

/// `shoal dev up`.
pub async fn up(opts: UpOptions) -> Result<(), CliError> {
    if opts.nodes == 0 {
        return Err(CliError::Usage { message: "--nodes must be at least 1".into() });
    }
    let dir = absolute(&opts.dir)?;
    if let Ok(existing) = read_nodes(&dir) {
        let running: Vec<String> = existing
            .iter()
            .filter_map(|n| n.pid.filter(|p| is_shoal_process(*p)).map(|p| format!("node {} (pid {p})", n.id)))
            .collect();
        if !running.is_empty() {
            return Err(CliError::failed(format!(
                "a dev cluster is already running in {}: {}; stop it first",
                dir.display(),
                running.join(", ")
            )));
        }
    }
    crate::certs::init(&dir.join("certs"), opts.nodes).map_err(|e| CliError::failed(e.to_string()))?;
    let mut members = Vec::new();
    for id in 1..=opts.nodes {
        let (http, peer) = ports(opts.base_port, id)?;
        members.push(MemberAddr { id, peer_addr: format!("127.0.0.1:{peer}"), http_addr: format!("127.0.0.1:{http}") });
    }
    for m in &members {
        let text = node_config(&opts, m.id, &members)?;
        let path = dir.join(format!("node-{}.toml", m.id));
        std::fs::write(&path, text).map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    }
    let mut sandbox = match (opts.sandbox, members.first()) {
        (true, Some(first)) => Some(spawn_sandbox(&dir, sandbox_port(opts.base_port)?, &first.http_addr)?),
        _ => None,
    };
    let mut children = Vec::new();
    let mut entries = Vec::new();
    for m in &members {
        let (child, log) = spawn_node(&dir, m.id)?;
        entries.push(NodeEntry {
            id: m.id,
            http_addr: m.http_addr.clone(),
            peer_addr: m.peer_addr.clone(),
            s3_addr: format!("127.0.0.1:{}", s3_port(opts.base_port, m.id)?),
            pid: Some(child.id()),
            log,
        });
        children.push((m.id, child));
    }
    write_nodes(&dir, &entries)?;
    println!("Starting {} shoal nodes in {} ...", opts.nodes, dir.display());
    let ready = wait_ready(&entries, &mut children, Duration::from_secs(60)).await;
    if let Err(e) = ready {
        stop_all(&dir, &mut children).await;
        stop_sandbox(&mut sandbox);
        return Err(e);
    }
    print_summary(&dir, &entries);
    if sandbox.is_some() {
        println!("Sandbox payment gateway: http://127.0.0.1:{} (DIR/sandbox.json)", sandbox_port(opts.base_port)?);
    }
    let code = supervise(&dir, &entries, &mut children).await;
    stop_all(&dir, &mut children).await;
    stop_sandbox(&mut sandbox);
    println!("All nodes stopped. Run `shoal dev up` again to restart the same cluster with its data.");
    code
}

async fn wait_ready(entries: &[NodeEntry], children: &mut [(u64, Child)], deadline: Duration) -> Result<(), CliError> {
    let client = http_client()?;
    let start = Instant::now();
    loop {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = entries.iter().find(|e| e.id == *id).map(|e| e.log.display().to_string());
                return Err(CliError::failed(format!(
                    "node {id} exited during startup ({status}); see {}",
                    log.unwrap_or_default()
                )));
            }
        }
        let mut ready = 0;
        for e in entries {
            let url = format!("http://{}/readyz", e.http_addr);
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                ready += 1;
            }
        }
        if ready == entries.len() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(CliError::failed(format!(
                "only {ready} of {} nodes became ready within {deadline:?}; see the logs",
                entries.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_summary(dir: &Path, entries: &[NodeEntry]) {
    println!("\nShoal dev cluster is up: {} nodes, all ready.\n", entries.len());
    println!("  {:<5} {:<22} {:<22} {:<8} LOG", "NODE", "HTTP", "PEER (QUIC)", "PID");
    for e in entries {
        let pid = e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!("  {:<5} http://{:<15} {:<22} {:<8} {}", e.id, e.http_addr, e.peer_addr, pid, e.log.display());
    }
    let first = entries.first().map(|e| e.http_addr.clone()).unwrap_or_default();
    let dir_arg = if dir.ends_with(DEFAULT_DIR) { String::new() } else { format!(" --dir {}", dir.display()) };
    println!("\nTry, in another terminal:");
    print!(
        "{}",
        try_block(&[
            ("shoal status --watch".to_string(), "cluster health, redrawn every second"),
            (format!("shoal dev kill 2{dir_arg}"), "SIGKILL node 2 and watch it go down"),
            (format!("shoal dev start 2{dir_arg}"), "start it again with its data"),
            (format!("curl -s http://{first}/v1/cluster"), "the cluster as node 1 sees it"),
            (format!("curl -s http://{first}/metrics"), "Prometheus metrics"),
            (format!("curl -s http://{first}/v1/openapi.json"), "the HTTP API, described"),
        ])
    );
    println!("\n(`shoal` is `cargo run --release --` from the repository.) Ctrl-C stops every node.");
}

/// Commands with their comments, the comments lined up one column after the longest command.
fn try_block(lines: &[(String, &str)]) -> String {
    let width = lines.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    lines.iter().map(|(command, comment)| format!("  {command:<width$}  # {comment}\n")).collect()
}

/// Waits for Ctrl-C/SIGTERM, reporting once each node that exits and each that comes back
/// (`shoal dev start` runs it outside this process, so `nodes.json` is what tells).
async fn supervise(dir: &Path, entries: &[NodeEntry], children: &mut Vec<(u64, Child)>) -> Result<(), CliError> {
    let mut signal = std::pin::pin!(crate::node::shutdown_signal());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut liveness = Liveness::new(entries.iter().map(|e| (e.id, e.pid)));
    loop {
        tokio::select! {
            _ = &mut signal => {
                println!("\nStopping the cluster ...");
                return Ok(());
            }
            _ = tick.tick() => {
                let Ok(mut nodes) = read_nodes(dir) else { continue };
                // Reap the nodes this process started that exited; their status is told once.
                let mut exited = BTreeMap::new();
                children.retain_mut(|(_, child)| match child.try_wait() {
                    Ok(Some(status)) => {
                        exited.insert(child.id(), status);
                        false
                    }
                    _ => true,
                });
                let seen: Vec<(u64, Option<u32>)> =
                    nodes.iter().map(|n| (n.id, n.pid.filter(|p| is_shoal_process(*p)))).collect();
                for change in liveness.update(&seen) {
                    match change {
                        Change::Exited { id, pid } => {
                            let status = exited.get(&pid).map(|s| format!(" ({s})")).unwrap_or_default();
                            println!("node {id} exited{status}; `shoal dev start {id}` starts it again");
                        }
                        Change::Back { id, pid } => println!("node {id} is back (pid {pid})"),
                    }
                }
                // A node that died on its own still has its pid listed: clear it.
                let mut stale = false;
                for (n, (_, running)) in nodes.iter_mut().zip(&seen) {
                    if n.pid.is_some() && running.is_none() {
                        n.pid = None;
                        stale = true;
                    }
                }
                if stale {
                    let _ = write_nodes(dir, &nodes);
                }
            }
        }
    }
}

/// A change in which nodes run, as `dev up` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The process `dev up` last saw running for node `id` is gone.
    Exited { id: u64, pid: u32 },
    /// Node `id` runs again, as process `pid`.
    Back { id: u64, pid: u32 },
}

/// The process `dev up` last saw running for each node, so that each exit and each return is
/// reported once, not on every poll.
#[derive(Debug)]
struct Liveness {
    running: BTreeMap<u64, Option<u32>>,
}

impl Liveness {
    /// Starts from the nodes as `dev up` launched them.
    fn new(started: impl IntoIterator<Item = (u64, Option<u32>)>) -> Self {
        Self { running: started.into_iter().collect() }
    }

    /// Takes one poll (each node with its running process, if any) and returns what changed
    /// since the last one.
    fn update(&mut self, seen: &[(u64, Option<u32>)]) -> Vec<Change> {
        let mut changes = Vec::new();
        for &(id, now) in seen {
            let before = self.running.insert(id, now).flatten();
            match (before, now) {
                (Some(old), Some(new)) if old != new => {
                    changes.push(Change::Exited { id, pid: old });
                    changes.push(Change::Back { id, pid: new });
                }
                (Some(old), None) => changes.push(Change::Exited { id, pid: old }),
                (None, Some(new)) => changes.push(Change::Back { id, pid: new }),
                _ => {}
            }
        }
        changes
    }
}

/// SIGTERMs every running node of the cluster (also those started by `dev start`), waits for
/// them, and SIGKILLs any still running after 20 s.
async fn stop_all(dir: &Path, children: &mut [(u64, Child)]) {
    let Ok(mut nodes) = read_nodes(dir) else {
        return;
    };
    let pids: Vec<u32> = nodes.iter().filter_map(|n| n.pid).filter(|p| is_shoal_process(*p)).collect();
    for pid in &pids {
        let _ = send_signal(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let start = Instant::now();
    while pids.iter().any(|p| is_shoal_process(*p)) && start.elapsed() < Duration::from_secs(20) {
        for (_, child) in children.iter_mut() {
            let _ = child.try_wait();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in pids.iter().filter(|p| is_shoal_process(**p)) {
        let _ = send_signal(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    for (_, child) in children.iter_mut() {
        let _ = child.try_wait();
    }
    for n in nodes.iter_mut() {
        n.pid = None;
    }
    let _ = write_nodes(dir, &nodes);
}

/// Stops the sandbox gateway (it keeps nothing worth a graceful stop).
fn stop_sandbox(sandbox: &mut Option<Child>) {
    if let Some(child) = sandbox.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `shoal dev kill NODE`.
pub fn kill(dir: &Path, node: u64) -> Result<(), CliError> {
    let mut nodes = read_nodes(dir)?;
    let entry = nodes.iter_mut().find(|n| n.id == node).ok_or_else(|| CliError::Usage {
        message: format!("the dev cluster in {} has no node {node}", dir.display()),
    })?;
    let pid = entry
        .pid
        .filter(|p| is_shoal_process(*p))
        .ok_or_else(|| CliError::failed(format!("node {node} is not running")))?;
    send_signal(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .map_err(|e| CliError::failed(format!("cannot kill node {node} (pid {pid}): {e}")))?;
    // Report only once the process has really exited (SIGKILL is asynchronous; an exiting
    // process loses its command line before it becomes a zombie).
    let start = Instant::now();
    while !has_exited(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    entry.pid = None;
    write_nodes(dir, &nodes)?;
    println!("node {node} (pid {pid}) killed with SIGKILL; `shoal dev start {node}` brings it back");
    Ok(())
}

/// `shoal dev start NODE`.
pub async fn start(dir: &Path, node: u64) -> Result<(), CliError> {
    let dir = absolute(dir)?;
    let mut nodes = read_nodes(&dir)?;
    let entry = nodes.iter_mut().find(|n| n.id == node).ok_or_else(|| CliError::Usage {
        message: format!("the dev cluster in {} has no node {node}", dir.display()),
    })?;
    if let Some(pid) = entry.pid.filter(|p| is_shoal_process(*p)) {
        return Err(CliError::failed(format!("node {node} is already running (pid {pid})")));
    }
    let (mut child, log) = spawn_node(&dir, node)?;
    entry.pid = Some(child.id());
    entry.log = log.clone();
    let http = entry.http_addr.clone();
    write_nodes(&dir, &nodes)?;
    let client = http_client()?;
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::failed(format!("node {node} exited at startup ({status}); see {}", log.display())));
        }
        if client.get(format!("http://{http}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(CliError::failed(format!("node {node} did not answer within 30 s; see {}", log.display())));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("node {node} started (pid {}, http://{http}, log {})", child.id(), log.display());
    Ok(())
}

pub(crate) fn http_client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| CliError::failed(format!("cannot build an HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_try_block_lines_up_its_comments() {
        let text = super::try_block(&[("a".to_string(), "one"), ("longer command".to_string(), "two")]);
        let columns: Vec<usize> = text.lines().map(|l| l.find('#').expect("a comment")).collect();
        assert_eq!(columns, vec![18, 18], "{text}");
        assert!(text.starts_with("  a "), "{text}");
    }

    use super::*;

    #[test]
    fn ports_follow_the_documented_scheme() {
        assert_eq!(ports(7000, 1).ok(), Some((7000, 7001)));
        assert_eq!(ports(7000, 3).ok(), Some((7020, 7021)));
        assert!(ports(65530, 2).is_err());
    }

    #[test]
    fn each_exit_and_each_return_is_reported_once() {
        let mut l = Liveness::new([(1, Some(100)), (2, Some(200)), (3, Some(300))]);
        let all = [(1, Some(100)), (2, Some(200)), (3, Some(300))];
        assert_eq!(l.update(&all), vec![], "nothing changed since the start");
        let killed = [(1, Some(100)), (2, None), (3, Some(300))];
        assert_eq!(l.update(&killed), vec![Change::Exited { id: 2, pid: 200 }]);
        for _ in 0..3 {
            assert_eq!(l.update(&killed), vec![], "an exit is told once, however many polls see it");
        }
        let back = [(1, Some(100)), (2, Some(201)), (3, Some(300))];
        assert_eq!(l.update(&back), vec![Change::Back { id: 2, pid: 201 }]);
        assert_eq!(l.update(&back), vec![], "and so is a return");
        assert_eq!(l.update(&killed), vec![Change::Exited { id: 2, pid: 201 }], "the new process may exit too");
    }

    #[test]
    fn a_restart_between_two_polls_is_an_exit_and_a_return() {
        let mut l = Liveness::new([(1, Some(100))]);
        assert_eq!(
            l.update(&[(1, Some(101))]),
            vec![Change::Exited { id: 1, pid: 100 }, Change::Back { id: 1, pid: 101 }]
        );
        let mut l = Liveness::new([(1, None)]);
        assert_eq!(l.update(&[(1, None)]), vec![], "a node stopped from the start is not news");
    }

    #[test]
    fn generated_configs_are_valid_and_take_overrides() {
        let members: Vec<MemberAddr> = (1..=3)
            .map(|id| {
                let (h, p) = ports(7000, id).expect("ports");
                MemberAddr { id, peer_addr: format!("127.0.0.1:{p}"), http_addr: format!("127.0.0.1:{h}") }
            })
            .collect();
        let opts = UpOptions {
            nodes: 3,
            dir: "x".into(),
            base_port: 7000,
            set: vec!["log.filter=debug".into()],
            sandbox: true,
        };
        let text = node_config(&opts, 2, &members).expect("config");
        let c = Config::from_toml(&text).expect("valid");
        assert_eq!(c.node.id, 2);
        assert_eq!(c.log.filter, "debug");
        assert_eq!(c.payments.gateway_url, "http://127.0.0.1:7009");
        let bad = UpOptions { set: vec!["membership.down_after_missed=0".into()], ..opts };
        assert!(matches!(node_config(&bad, 1, &members), Err(CliError::Config(_))));
    }
}
