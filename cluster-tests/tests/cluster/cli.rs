//! The `shoal` command line: exit codes and one-sentence errors for bad configs and usage, and
//! the newcomer's `dev up` tour.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use cluster_tests::harness::wait_for;
use nix::sys::signal::Signal;

use crate::BIN;

fn shoal_cmd(args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(BIN).args(args).output()?)
}

#[test]
fn cli_reports_bad_config_and_usage_with_exit_code_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[node]\nid = 0\ndata_dir = \"d\"\n[tls]\nca_cert=\"a\"\ncert=\"b\"\nkey=\"c\"\n[cluster]\njoin=[\"127.0.0.1:1\"]\n",
    )?;
    let out = shoal_cmd(&["config", "check", bad.to_str().ok_or_else(|| anyhow!("path"))?])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.id"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");

    let out = shoal_cmd(&["config", "check", "/nonexistent.toml"])?;
    assert_eq!(out.status.code(), Some(2));
    let out = shoal_cmd(&["certs", "init", "--dir", dir.path().to_str().unwrap_or("."), "--nodes", "0"])?;
    assert_eq!(out.status.code(), Some(2));
    let out = shoal_cmd(&["no-such-command"])?;
    assert_eq!(out.status.code(), Some(2));

    let certs = dir.path().join("certs");
    let out = shoal_cmd(&["certs", "init", "--dir", certs.to_str().unwrap_or("."), "--nodes", "2"])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(certs.join("node-2.key").exists());
    for example in ["../config/shoal.example.toml", "../config/cluster-3/node-1.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(example);
        let out = shoal_cmd(&["config", "check", path.to_str().unwrap_or(".")])?;
        assert_eq!(out.status.code(), Some(0), "{example}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The newcomer's tour: `dev up`, `status`, `dev kill`, `dev start`, Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_up_kill_start_status_and_ctrl_c() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dev_dir = dir.path().join("dev");
    let dev = dev_dir.to_str().ok_or_else(|| anyhow!("path"))?.to_string();
    let base = dev_base_port()?;
    let stdout_path = dir.path().join("dev-up.out");
    let mut up = std::process::Command::new(BIN)
        .args(["dev", "up", "--dir", &dev, "--base-port", &base.to_string()])
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let guard = KillOnDrop(up.id(), Some(dev_dir.join("nodes.json")));
    let http: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", base + 10 * i)).collect();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    wait_for("dev up to print its summary", Duration::from_secs(60), || async {
        std::fs::read_to_string(&stdout_path).ok().filter(|s| s.contains("Ctrl-C stops every node")).map(|_| ())
    })
    .await?;
    let summary = std::fs::read_to_string(&stdout_path)?;
    for h in &http {
        assert!(summary.contains(h.trim_start_matches("http://")), "summary lacks {h}:\n{summary}");
        assert_eq!(client.get(format!("{h}/readyz")).send().await?.status().as_u16(), 200);
    }
    let nodes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dev_dir.join("nodes.json"))?)?;
    let pid2 = nodes[1]["pid"].as_u64().ok_or_else(|| anyhow!("pid of node 2: {nodes}"))?;
    for key in ["id", "http_addr", "peer_addr", "s3_addr", "pid", "log"] {
        assert!(!nodes[0][key].is_null(), "nodes.json lacks {key}");
    }
    assert_eq!(nodes[1]["s3_addr"], format!("127.0.0.1:{}", base + 12), "the S3 port is the HTTP port + 2");

    let out = shoal_cmd(&["dev", "kill", "2", "--dir", &dev])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!Path::new(&format!("/proc/{pid2}")).exists() || proc_is_zombie(pid2), "node 2 still runs");
    let nodes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dev_dir.join("nodes.json"))?)?;
    assert!(nodes[1]["pid"].is_null(), "kill keeps nodes.json current");
    let dev_up_says = |what: &'static str| {
        let path = stdout_path.clone();
        move || {
            let said = std::fs::read_to_string(&path).ok().filter(|s| s.contains(what)).map(|_| ());
            async move { said }
        }
    };
    wait_for("dev up to report node 2's exit", Duration::from_secs(10), dev_up_says("node 2 exited")).await?;
    wait_for("status to show node 2 down", Duration::from_secs(15), || async {
        let out = shoal_cmd(&["status", "--endpoint", &http[0]]).ok()?;
        String::from_utf8_lossy(&out.stdout).contains("1 of 3 members DOWN").then_some(())
    })
    .await?;
    let out = shoal_cmd(&["status", "--endpoint", &http[0], "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["members"][1]["state"], "down");

    let out = shoal_cmd(&["dev", "start", "2", "--dir", &dev])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("dev up to report node 2 back", Duration::from_secs(10), dev_up_says("node 2 is back")).await?;
    wait_for("status to show all up", Duration::from_secs(15), || async {
        let out = shoal_cmd(&["status", "--endpoint", &http[0]]).ok()?;
        String::from_utf8_lossy(&out.stdout).contains("all 3 members up").then_some(())
    })
    .await?;
    let nodes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dev_dir.join("nodes.json"))?)?;
    let pids: Vec<u64> = (0..3).filter_map(|i| nodes[i]["pid"].as_u64()).collect();
    assert_eq!(pids.len(), 3, "{nodes}");

    // Ctrl-C: every node stops, including the one `dev start` launched.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), Signal::SIGINT)?;
    let status = wait_for("dev up to exit", Duration::from_secs(40), || {
        let s = up.try_wait().ok().flatten();
        async move { s }
    })
    .await?;
    drop(guard);
    assert!(status.success(), "dev up exited with {status}");
    // Told once each, though dev up polled many times while node 2 was down and after.
    let said = std::fs::read_to_string(&stdout_path)?;
    let exit_line = "node 2 exited (signal: 9 (SIGKILL)); `shoal dev start 2` starts it again\n";
    assert_eq!(said.matches(exit_line).count(), 1, "{said}");
    assert_eq!(said.matches(" exited").count(), 1, "{said}");
    assert_eq!(said.matches("node 2 is back (pid ").count(), 1, "{said}");
    // Node logs are files, so plain text.
    for id in 1..=3 {
        let log = std::fs::read_to_string(dev_dir.join(format!("logs/node-{id}.log")))?;
        assert!(log.contains("node started"), "node {id}'s log: {log}");
        assert!(!log.contains('\x1b'), "colour codes in node {id}'s log: {log}");
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid as u32 as u64),
            "node pid {pid} survived"
        );
    }
    Ok(())
}

fn proc_is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// A base port whose six dev ports (P, P+1, P+10, P+11, P+20, P+21) are free.
fn dev_base_port() -> Result<u16> {
    for _ in 0..200 {
        let p = cluster_tests::harness::free_port()?;
        if p > 65000 {
            continue;
        }
        let free = [0u16, 1, 10, 11, 20, 21].iter().all(|o| {
            std::net::TcpListener::bind(("127.0.0.1", p + o)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p + o)).is_ok()
        });
        if free {
            return Ok(p);
        }
    }
    bail!("no free port range for dev up")
}

/// SIGKILLs a process when dropped (a failing test included) and, for `dev up`, the nodes listed
/// in its `nodes.json`, which run in process groups of their own and would outlive it.
struct KillOnDrop(u32, Option<std::path::PathBuf>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        let nodes = self.1.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
        let nodes: Vec<serde_json::Value> = nodes.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let dir = self.1.as_ref().and_then(|p| p.parent()).map(|d| d.to_string_lossy().into_owned());
        for pid in nodes.iter().filter_map(|n| n["pid"].as_u64()) {
            // Only this cluster's nodes (their command line names its directory): a stale pid may
            // have been reused.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if dir.as_ref().is_some_and(|d| String::from_utf8_lossy(&cmdline).contains(d.as_str())) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}
