//! The deployment files under `deploy/`, run for real: Prometheus (Debian's package) scraping a
//! cluster of node processes with Shoal's alert rules, and the container image plus the compose
//! cluster on Docker. Each test skips with a printed reason when its tool is absent, and fails
//! instead under `CI=true` (`.ci/run` installs the tools). The compose test builds container
//! images, so it runs only when asked (`SHOAL_TEST_DOCKER=1` or `CI=true`; `cluster_tests::skip`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use cluster_tests::harness::{
    Cluster, ClusterSpec, FORM, applied_indexes, free_port, plain_client, tool, wait_for, wait_for_result,
};
use serde_json::{Value, json};

use crate::{bin, repo};

/// A child process killed (and reaped) when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = http.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Prometheus's `/api/v1/query` result for an instant query.
async fn prom_query(http: &reqwest::Client, base: &str, query: &str) -> Option<Vec<Value>> {
    let resp = http.get(format!("{base}/api/v1/query")).query(&[("query", query)]).send().await.ok()?;
    let v: Value = resp.json().await.ok()?;
    (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// `up` per scraped instance.
async fn prom_up(http: &reqwest::Client, base: &str) -> Option<BTreeMap<String, f64>> {
    let result = prom_query(http, base, "up{job=\"shoal\"}").await?;
    result
        .iter()
        .map(|r| {
            let instance = r["metric"]["instance"].as_str()?.to_string();
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((instance, value))
        })
        .collect()
}

/// State of the `ShoalNodeDown` alert per instance (`pending` or `firing`).
async fn node_down_alerts(http: &reqwest::Client, base: &str) -> Option<BTreeMap<String, String>> {
    let v = get_json(http, &format!("{base}/api/v1/alerts")).await?;
    let alerts = v["data"]["alerts"].as_array()?;
    Some(
        alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == "ShoalNodeDown")
            .filter_map(|a| Some((a["labels"]["instance"].as_str()?.to_string(), a["state"].as_str()?.to_string())))
            .collect(),
    )
}

/// `deploy/prometheus` with a real Prometheus: the shipped scrape config (with this cluster's
/// targets and 1 s intervals) and the shipped alert rules. Every node is `up`; a SIGKILLed node
/// turns `up` to 0 and its `ShoalNodeDown` alert goes pending, then firing (the rule's `for` is
/// 15 s); started again, the node is `up` and the alert is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_node_down_for_a_sigkilled_node_and_clears_it_after_restart() -> Result<()> {
    let Some(prometheus) = tool("prometheus", "Debian package `prometheus`") else {
        return Ok(());
    };
    let mut c = Cluster::start(bin(), &ClusterSpec::new(3))?;
    let ids = [1, 2, 3];
    c.wait_ready(&ids, FORM).await.context("cluster did not become ready")?;

    let shipped = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml"))?;
    let dev_targets = r#"["127.0.0.1:7000", "127.0.0.1:7010", "127.0.0.1:7020"]"#;
    ensure!(shipped.contains(dev_targets), "prometheus.yml no longer lists the dev targets {dev_targets}");
    ensure!(shipped.matches(": 5s").count() == 2, "prometheus.yml intervals changed; adjust this test");
    let targets: Vec<String> = ids.iter().map(|id| format!("\"{}\"", c.node(*id).http)).collect();
    let config = shipped.replace(dev_targets, &format!("[{}]", targets.join(", "))).replace(": 5s", ": 1s");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("prometheus.yml"), config)?;
    std::fs::copy(repo().join("deploy/prometheus/alerts.yml"), dir.path().join("alerts.yml"))?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
    let _prom = Reaped(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = plain_client()?;
    let instances: BTreeMap<u64, String> = ids.iter().map(|id| (*id, c.node(*id).http.to_string())).collect();
    let prom_log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    let all_up = wait_for("Prometheus to see all three nodes up", Duration::from_secs(60), || async {
        let up = prom_up(&http, &base).await?;
        (up.len() == 3 && up.values().all(|v| *v == 1.0)).then_some(up)
    })
    .await
    .with_context(prom_log)?;
    for id in ids {
        assert_eq!(all_up.get(&instances[&id]), Some(&1.0), "node {id} up: {all_up:?}");
    }

    c.kill(2)?;
    let down = instances[&2].clone();
    wait_for("up of the killed node to turn 0", Duration::from_secs(30), || async {
        prom_up(&http, &base).await.filter(|up| up.get(&down) == Some(&0.0))
    })
    .await?;
    let pending = wait_for("ShoalNodeDown pending or firing", Duration::from_secs(30), || async {
        node_down_alerts(&http, &base).await.filter(|a| a.contains_key(&down))
    })
    .await?;
    assert_eq!(pending.len(), 1, "only the killed node is down: {pending:?}");
    wait_for("ShoalNodeDown firing (for: 15s)", Duration::from_secs(60), || async {
        node_down_alerts(&http, &base).await.filter(|a| a.get(&down).map(String::as_str) == Some("firing"))
    })
    .await?;

    c.start_node(2)?;
    wait_for("the restarted node up again and its alert gone", Duration::from_secs(60), || async {
        let up = prom_up(&http, &base).await?;
        let alerts = node_down_alerts(&http, &base).await?;
        (up.get(&down) == Some(&1.0) && alerts.is_empty()).then_some(())
    })
    .await?;
    Ok(())
}

/// How long one `docker` or `docker-compose` command may take.
const DOCKER_COMMAND_LIMIT: Duration = Duration::from_secs(180);
/// How long building the images may take (the first time, on 2 cores: about 10 minutes).
const IMAGE_BUILD_LIMIT: Duration = Duration::from_secs(45 * 60);

/// Runs a command that must finish within [`DOCKER_COMMAND_LIMIT`].
fn run(cmd: &mut Command) -> Result<String> {
    run_within(DOCKER_COMMAND_LIMIT, cmd)
}

/// Runs a command under coreutils' `timeout`, so a hung Docker daemon fails the test instead
/// of hanging it; its stdout on success, else an error with its stderr.
fn run_within(limit: Duration, cmd: &mut Command) -> Result<String> {
    let mut timed = Command::new("timeout");
    timed.arg("--kill-after=10s").arg(format!("{}s", limit.as_secs())).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => timed.env(key, v),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = timed.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    // 124: timed out; 137: killed after ignoring the TERM.
    if matches!(out.status.code(), Some(124 | 137)) {
        bail!("{cmd:?} did not finish within {limit:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A step of a long test, on stderr (shown with --nocapture and on failure).
fn progress(step: &str) {
    eprintln!("[{}] {step}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()));
}

/// One compose project of `deploy/compose`, brought down with its volumes when dropped.
struct Compose {
    project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl Compose {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f").arg(&self.file).arg("-p").arg(&self.project);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn container(&self, service: &str) -> Result<String> {
        let id = run(self.cmd().args(["ps", "-q", service]))?;
        ensure!(!id.is_empty(), "no container for {service}");
        Ok(id)
    }

    fn logs(&self) -> String {
        run(self.cmd().args(["logs", "--no-color", "--tail", "40"])).unwrap_or_else(|e| e.to_string())
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if let Err(e) = run(self.cmd().args(["down", "-v", "--remove-orphans", "-t", "5"])) {
            eprintln!("compose down: {e}");
        }
    }
}

/// A node of the compose cluster as seen from the host (its published HTTP port).
struct Published {
    http: reqwest::Client,
    ports: BTreeMap<u64, u16>,
}

impl Published {
    fn url(&self, id: u64, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[&id])
    }

    async fn status(&self, id: u64, path: &str) -> Option<u16> {
        Some(self.http.get(self.url(id, path)).send().await.ok()?.status().as_u16())
    }

    async fn sign_up(&self, name: &str) -> Result<String> {
        let resp = self.http.post(self.url(1, "/v1/users")).json(&json!({ "name": name })).send().await?;
        ensure!(resp.status() == 201, "sign-up answered {}", resp.status());
        let v: Value = resp.json().await?;
        v["token"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no token in {v}"))
    }

    /// One increment through node `id`: the status, on success the new value, and whether the
    /// answer carries `Retry-After`.
    async fn increment(&self, id: u64, token: &str, counter: &str) -> Result<(u16, Option<i64>, bool)> {
        let resp = self
            .http
            .post(self.url(id, &format!("/v1/counters/{counter}/increment")))
            .bearer_auth(token)
            .json(&json!({ "by": 1 }))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v["value"].as_i64(), retry_after))
    }

    async fn read(&self, id: u64, token: &str, counter: &str) -> Result<i64> {
        let resp = self.http.get(self.url(id, &format!("/v1/counters/{counter}"))).bearer_auth(token).send().await?;
        ensure!(resp.status() == 200, "reading {counter} through node {id}: {}", resp.status());
        let v: Value = resp.json().await?;
        v["value"].as_i64().ok_or_else(|| anyhow!("no value in {v}"))
    }

    /// Every group's applied index on node `id` (from /metrics, which no rate limit covers).
    async fn applied(&self, id: u64) -> Option<BTreeMap<String, u64>> {
        let text = self.http.get(self.url(id, "/metrics")).send().await.ok()?.text().await.ok()?;
        let applied = applied_indexes(&text);
        (!applied.is_empty()).then_some(applied)
    }

    /// Groups that one of `ids` leads (from /metrics).
    async fn led_by(&self, ids: &[u64]) -> Option<Vec<String>> {
        let mut led = Vec::new();
        for id in ids {
            let text = self.http.get(self.url(*id, "/metrics")).send().await.ok()?.text().await.ok()?;
            led.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix("shoal_raft_leader{group=\""))
                    .filter_map(|rest| rest.strip_suffix("\"} 1").map(str::to_string)),
            );
        }
        led.sort();
        Some(led)
    }

    /// Waits until `ids` lead every group between them (one leader each).
    async fn led_among(&self, ids: &[u64], what: &str) -> Result<()> {
        let groups: Vec<String> =
            self.applied(ids[0]).await.ok_or_else(|| anyhow!("no metrics"))?.into_keys().collect();
        wait_for(what, Duration::from_secs(60), || async {
            let led = self.led_by(ids).await?;
            (led == groups).then_some(())
        })
        .await
    }

    /// Waits until every node has applied the same index in every group.
    async fn converged(&self, what: &str) -> Result<()> {
        wait_for(what, Duration::from_secs(60), || async {
            let mut views = Vec::new();
            for id in self.ports.keys() {
                views.push(self.applied(*id).await?);
            }
            views.windows(2).all(|w| w[0] == w[1]).then_some(())
        })
        .await
    }
}

/// `deploy/docker` and `deploy/compose` on Docker: the image builds, the compose cluster (three
/// nodes and Prometheus) comes up; writes go on while one node is `docker kill`ed, and it
/// catches up when started; a node cut off the peer network refuses writes with 503 while the
/// other two accept them, and converges once reconnected; Prometheus scrapes all three. Then
/// everything comes down with its volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(shoal_test_docker),
    ignore = "builds ~3.5 GB of container images (~7 min; may apt-get install debootstrap): SHOAL_TEST_DOCKER=1 runs it"
)]
async fn compose_cluster_keeps_writing_through_a_killed_node_and_a_partitioned_one() -> Result<()> {
    let (Some(_docker), Some(_compose)) =
        (tool("docker", "Docker Engine"), tool("docker-compose", "Debian package `docker-compose`"))
    else {
        return Ok(());
    };
    // The images (and their local bases where no registry is reachable); cached when .ci/run
    // has built them already. SHOAL_TEST_IMAGE names an image built beforehand instead.
    let image = match std::env::var("SHOAL_TEST_IMAGE") {
        Ok(image) => image,
        Err(_) => {
            run_within(IMAGE_BUILD_LIMIT, Command::new(repo().join("deploy/docker/build.sh")).arg("shoal:latest"))
                .context("building the images")?;
            "shoal:latest".to_string()
        }
    };

    let ports: BTreeMap<u64, u16> = [(1, free_port()?), (2, free_port()?), (3, free_port()?)].into();
    let prom_port = free_port()?;
    let mut env: Vec<(String, String)> =
        ports.iter().map(|(id, p)| (format!("SHOAL_NODE{id}_PORT"), p.to_string())).collect();
    env.push(("SHOAL_PROMETHEUS_PORT".into(), prom_port.to_string()));
    env.push(("SHOAL_IMAGE".into(), image));
    let compose = Compose {
        project: format!("shoaltest{}", std::process::id()),
        file: repo().join("deploy/compose/docker-compose.yml"),
        env,
    };
    run(compose.cmd().args(["up", "-d", "--no-build"])).context("compose up")?;
    progress("compose up");
    let nodes = Published { http: plain_client()?, ports };

    for id in 1..=3 {
        wait_for(&format!("node {id} ready"), Duration::from_secs(120), || async {
            (nodes.status(id, "/readyz").await == Some(200)).then_some(())
        })
        .await
        .with_context(|| compose.logs())?;
    }
    // Docker's health checks (`shoal probe …/readyz` in the container) agree.
    for service in ["node1", "node2", "node3"] {
        let id = compose.container(service)?;
        wait_for(&format!("{service} healthy"), Duration::from_secs(60), || async {
            let health = run(Command::new("docker").args(["inspect", "--format", "{{.State.Health.Status}}", &id]));
            (health.ok()? == "healthy").then_some(())
        })
        .await?;
    }
    // Ready means the meta group has a leader; writes also need every partition's.
    nodes.led_among(&[1, 2, 3], "every group to have a leader").await?;
    progress("cluster ready; writing");
    // Each phase writes as its own user: the compose cluster keeps the default rate limits.
    let writer = nodes.sign_up("compose-writer").await?;
    let mut acked = 0;
    for round in 0..3 {
        for id in 1..=3 {
            let (status, value, _) = nodes.increment(id, &writer, "docker").await?;
            assert_eq!(status, 200, "write {round} through node {id}");
            acked += 1;
            assert_eq!(value, Some(acked));
        }
    }

    // docker kill: the other two keep accepting writes.
    progress("docker kill node3");
    let node3 = compose.container("node3")?;
    run(Command::new("docker").args(["kill", &node3]))?;
    let during_kill = nodes.sign_up("compose-kill").await?;
    // Partitions node 3 led elect new leaders first.
    nodes.led_among(&[1, 2], "nodes 1 and 2 to lead every group after the kill").await?;
    for i in 0..6 {
        let id = 1 + i % 2;
        let (status, value, _) = nodes.increment(id, &during_kill, "docker").await?;
        assert_eq!(status, 200, "write {i} through node {id} with node 3 killed");
        acked += 1;
        assert_eq!(value, Some(acked));
    }
    run(Command::new("docker").args(["start", &node3]))?;
    progress("docker start node3");
    wait_for("node 3 ready after its restart", Duration::from_secs(90), || async {
        (nodes.status(3, "/readyz").await == Some(200)).then_some(())
    })
    .await
    .with_context(|| compose.logs())?;
    nodes.converged("node 3 to catch up after its restart").await?;
    let reader = nodes.sign_up("compose-reader").await?;
    assert_eq!(nodes.read(3, &reader, "docker").await?, acked);

    progress("cutting node3 off the peer network");
    // Cut node 3 off the peer network: it refuses writes, the majority goes on.
    let peers = format!("{}_peers", compose.project);
    run(Command::new("docker").args(["network", "disconnect", &peers, &node3]))?;
    let partition = nodes.sign_up("compose-partition").await?;
    let refused = wait_for_result("node 3 to refuse writes with 503", Duration::from_secs(60), || async {
        let (status, _, retry_after) = nodes.increment(3, &partition, "minority").await?;
        Ok((status == 503).then_some((status, retry_after)))
    })
    .await?;
    assert_eq!(refused, (503, true), "503 with Retry-After");
    nodes.led_among(&[1, 2], "nodes 1 and 2 to lead every group while node 3 is cut off").await?;
    for i in 0..4 {
        let (status, _, retry_after) = nodes.increment(3, &partition, "minority").await?;
        assert_eq!((status, retry_after), (503, true), "write {i} through the cut-off node 3: 503 with Retry-After");
        let id = 1 + i % 2;
        let (status, value, _) = nodes.increment(id, &partition, "docker").await?;
        assert_eq!(status, 200, "write {i} through node {id} while node 3 is cut off");
        acked += 1;
        assert_eq!(value, Some(acked));
    }

    progress("healing");
    // Heal: node 3 rejoins under its peer alias and converges.
    run(Command::new("docker").args(["network", "connect", "--alias", "node3-peer", &peers, &node3]))?;
    wait_for("node 3 ready after healing", Duration::from_secs(90), || async {
        (nodes.status(3, "/readyz").await == Some(200)).then_some(())
    })
    .await?;
    nodes.converged("node 3 to converge after healing").await?;
    let after = nodes.sign_up("compose-after").await?;
    for id in 1..=3 {
        assert_eq!(nodes.read(id, &after, "docker").await?, acked, "counter through node {id}");
    }

    progress("checking prometheus");
    // The compose Prometheus scrapes all three nodes.
    let base = format!("http://127.0.0.1:{prom_port}");
    let up = wait_for("Prometheus to see the three nodes up", Duration::from_secs(60), || async {
        prom_up(&nodes.http, &base).await.filter(|up| up.len() == 3 && up.values().all(|v| *v == 1.0))
    })
    .await
    .with_context(|| compose.logs())?;
    for id in 1..=3 {
        assert_eq!(up.get(&format!("node{id}:7000")), Some(&1.0), "{up:?}");
    }
    Ok(())
}

/// The deploy test's commands are bounded: one that outlives its limit is killed and reported,
/// one that finishes passes its output (and the environment it was given) through.
#[test]
fn a_command_that_outlives_its_limit_is_killed_and_reported() -> Result<()> {
    let started = std::time::Instant::now();
    let err = run_within(Duration::from_secs(1), Command::new("sleep").arg("60")).expect_err("sleep 60 must time out");
    assert!(err.to_string().contains("did not finish within 1s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "killed late: {:?}", started.elapsed());
    let out = run_within(
        Duration::from_secs(30),
        Command::new("sh").args(["-c", "echo \"$GREETING\""]).env("GREETING", "hi"),
    )?;
    assert_eq!(out, "hi");
    let err = run_within(Duration::from_secs(30), Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
        .expect_err("exit 3 must fail");
    assert!(err.to_string().contains("oops"), "{err}");
    Ok(())
}

/// CI packs a prebuilt binary into the runtime stage (`build.sh --binary`) and so never runs the
/// Dockerfile's build stage: this checks, without Docker, that the build stage still copies
/// what `cargo build --locked` reads (the workspace manifest, the lock file and every member)
/// and that the runtime stage still takes the binary from it where build.sh expects.
#[test]
fn the_dockerfile_build_stage_copies_the_whole_workspace() -> Result<()> {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/docker/Dockerfile"))?;
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml"))?;
    let members_line = manifest.lines().find(|l| l.starts_with("members = [")).context("workspace members")?;
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    ensure!(!members.is_empty(), "no members in {members_line}");
    let copies: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("COPY ")).collect();
    ensure!(copies.iter().any(|l| l.contains("Cargo.toml") && l.contains("Cargo.lock")), "{copies:?}");
    for member in members {
        ensure!(
            copies.iter().any(|l| l.split_whitespace().nth(1) == Some(member)),
            "the Dockerfile does not COPY workspace member {member}: {copies:?}"
        );
    }
    ensure!(
        copies.contains(&"COPY --from=build /out/shoal /usr/local/bin/shoal"),
        "build.sh --binary replaces this line of the runtime stage: {copies:?}"
    );
    Ok(())
}
