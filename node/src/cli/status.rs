//! `shoal status`: the cluster at a glance, from `GET /v1/cluster`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::CliError;
use super::dev::{self, http_client};

/// Options of `shoal status`.
#[derive(Debug)]
pub struct StatusOptions {
    /// Explicit endpoint; default: the dev cluster's nodes, first one that answers.
    pub endpoint: Option<String>,
    /// Redraw every second.
    pub watch: bool,
    /// Raw JSON.
    pub json: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct ClusterView {
    node_id: u64,
    members: Vec<Member>,
    meta: Meta,
    partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Deserialize)]
struct Member {
    id: u64,
    http_addr: String,
    peer_addr: String,
    state: String,
    last_seen_ms: Option<u64>,
    #[serde(default)]
    rtt_ms: Option<f64>,
    /// Declared dead by the placement driver.
    #[serde(default)]
    dead: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct Meta {
    leader: Option<u64>,
    term: u64,
    commit_index: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Partition {
    id: u64,
    replicas: Vec<u64>,
    leader: Option<u64>,
    term: u64,
    commit_index: u64,
    #[serde(default)]
    applied_index: u64,
    /// `leader`, `follower`, …, or `none` when the answering node does not host the group.
    #[serde(default)]
    role: String,
    /// Per-replica progress, reported by the group's leader only.
    #[serde(default)]
    replication: Option<Vec<Replica>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Replica {
    node: u64,
    lag: u64,
}

fn candidates(explicit: &Option<String>) -> Vec<String> {
    let normalise = |s: &str| {
        let s = s.trim_end_matches('/');
        if s.starts_with("http://") || s.starts_with("https://") { s.to_string() } else { format!("http://{s}") }
    };
    if let Some(e) = explicit {
        return vec![normalise(e)];
    }
    match dev::read_nodes(Path::new(dev::DEFAULT_DIR)) {
        Ok(nodes) if !nodes.is_empty() => nodes.iter().map(|n| normalise(&n.http_addr)).collect(),
        _ => vec![format!("http://127.0.0.1:{}", dev::DEFAULT_BASE_PORT)],
    }
}

async fn fetch(client: &reqwest::Client, endpoints: &[String]) -> Result<(String, String), CliError> {
    let mut last = String::new();
    for e in endpoints {
        match client.get(format!("{e}/v1/cluster")).send().await {
            Ok(r) if r.status().is_success() => {
                let body = r.text().await.map_err(|err| CliError::failed(format!("{e}: {err}")))?;
                return Ok((e.clone(), body));
            }
            Ok(r) => last = format!("{e} answered {}", r.status()),
            Err(err) => last = format!("cannot reach {e}: {err}"),
        }
    }
    Err(CliError::failed(if endpoints.len() > 1 {
        format!("no node of the dev cluster answered ({last}); is `shoal dev up` running?")
    } else {
        last
    }))
}

/// `shoal status`.
pub async fn run(opts: StatusOptions) -> Result<(), CliError> {
    let client = http_client()?;
    let color = std::io::stdout().is_terminal();
    if !opts.watch {
        let (endpoint, body) = fetch(&client, &candidates(&opts.endpoint)).await?;
        return print_once(&client, &endpoint, &body, opts.json, color).await;
    }
    let mut signal = std::pin::pin!(crate::node::shutdown_signal());
    let style = WatchStyle::for_output(std::io::stdout().is_terminal(), opts.json);
    let mut first = true;
    loop {
        print!("{}", style.header(first, SystemTime::now()));
        first = false;
        match fetch(&client, &candidates(&opts.endpoint)).await {
            Ok((endpoint, body)) => {
                if let Err(e) = print_once(&client, &endpoint, &body, opts.json, color).await {
                    println!("{e}");
                }
            }
            Err(e) => println!("{e}"),
        }
        print!("{}", style.footer());
        tokio::select! {
            _ = &mut signal => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// How `--watch` shows one snapshot after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchStyle {
    /// On a terminal: clear the screen and draw in place.
    Redraw,
    /// Into a file or a pipe: plain snapshots one after another, each under a timestamp.
    Append,
    /// `--json` into a file or a pipe: one JSON document per line, nothing between.
    JsonLines,
}

impl WatchStyle {
    fn for_output(terminal: bool, json: bool) -> Self {
        match (terminal, json) {
            (true, _) => Self::Redraw,
            (false, false) => Self::Append,
            (false, true) => Self::JsonLines,
        }
    }

    /// What goes before a snapshot taken at `at`.
    fn header(self, first: bool, at: SystemTime) -> String {
        match self {
            // Clear the screen and home the cursor.
            Self::Redraw => "\x1b[2J\x1b[H".to_string(),
            Self::Append => {
                let gap = if first { "" } else { "\n" };
                format!("{gap}=== {} ===\n", humantime::format_rfc3339_seconds(at))
            }
            Self::JsonLines => String::new(),
        }
    }

    /// What goes after a snapshot.
    fn footer(self) -> &'static str {
        match self {
            Self::Redraw => "\n(redrawn every second; Ctrl-C to quit)\n",
            Self::Append | Self::JsonLines => "",
        }
    }
}

async fn print_once(
    client: &reqwest::Client,
    endpoint: &str,
    body: &str,
    json: bool,
    color: bool,
) -> Result<(), CliError> {
    if json {
        println!("{body}");
        return Ok(());
    }
    let mut view: ClusterView = serde_json::from_str(body)
        .map_err(|e| CliError::failed(format!("{endpoint} sent an unexpected /v1/cluster answer: {e}")))?;
    // Each group's term, commit index and replica lag are best known by its leader: ask the
    // other live members too and take every group's row from its leader.
    let mut others = Vec::new();
    for m in view.members.iter().filter(|m| m.id != view.node_id && m.state == "up") {
        let url = format!("http://{}/v1/cluster", m.http_addr);
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(1)).send().await
            && let Ok(v) = r.json::<ClusterView>().await
        {
            others.push(v);
        }
    }
    merge_leader_rows(&mut view, &others);
    print!("{}", render(endpoint, &view, color));
    Ok(())
}

/// Replaces each partition row of `view` with the row its leader reported in `others`.
fn merge_leader_rows(view: &mut ClusterView, others: &[ClusterView]) {
    for p in view.partitions.iter_mut().filter(|p| p.role != "leader") {
        if let Some(row) = others.iter().flat_map(|o| o.partitions.iter()).find(|o| o.id == p.id && o.role == "leader")
        {
            *p = row.clone();
        }
    }
}

fn render(endpoint: &str, v: &ClusterView, color: bool) -> String {
    let (red, green, bold, reset) =
        if color { ("\x1b[1;31m", "\x1b[32m", "\x1b[1m", "\x1b[0m") } else { ("", "", "", "") };
    let mut out = String::new();
    let up = v.members.iter().filter(|m| m.state == "up").count();
    let total = v.members.len();
    let health = if up == total {
        format!("{green}all {total} members up{reset}")
    } else {
        format!("{red}{} of {total} members DOWN{reset}", total - up)
    };
    out.push_str(&format!("{bold}Shoal cluster{reset} as seen by node {} ({endpoint}): {health}\n", v.node_id));
    match v.meta.leader {
        Some(l) => {
            out.push_str(&format!("meta: leader node {l}, term {}, commit {}\n", v.meta.term, v.meta.commit_index))
        }
        None => out.push_str("meta: no leader (Raft groups not running yet)\n"),
    }
    out.push_str(&format!(
        "\n{bold}{:<6}{:<7}{:<23}{:<23}{:<12}RTT{reset}\n",
        "NODE", "STATE", "HTTP", "PEER", "LAST SEEN"
    ));
    for m in &v.members {
        let me = if m.id == v.node_id { "*" } else { "" };
        let state =
            if m.state == "up" { format!("{green}{:<7}{reset}", "up") } else { format!("{red}{:<7}{reset}", "DOWN") };
        let seen = match m.last_seen_ms {
            Some(ms) if ms < 1000 => "now".to_string(),
            Some(ms) => format!("{:.1}s ago", ms as f64 / 1000.0),
            None => "never".to_string(),
        };
        let rtt = m.rtt_ms.map(|r| format!("{r:.2} ms")).unwrap_or_else(|| "-".into());
        let id = format!("{}{me}", m.id);
        let dead = if m.dead { format!("  {red}dead: replicas moved away{reset}") } else { String::new() };
        out.push_str(&format!("{id:<6}{state}{:<23}{:<23}{seen:<12}{rtt}{dead}\n", m.http_addr, m.peer_addr));
    }
    if v.partitions.is_empty() {
        out.push_str("\npartitions: none yet\n");
    } else {
        out.push_str(&format!(
            "\n{bold}{:<11}{:<14}{:<8}{:<7}{:<9}{:<9}{:<22}STATUS{reset}\n",
            "PARTITION", "REPLICAS", "LEADER", "TERM", "COMMIT", "APPLIED", "LAG (node:entries)"
        ));
        let down = |id: &u64| v.members.iter().any(|m| m.id == *id && m.state != "up");
        for p in &v.partitions {
            let replicas = p.replicas.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let leader = match p.leader {
                Some(l) => l.to_string(),
                None => format!("{red}{:<8}{reset}", "NONE"),
            };
            let lag = match &p.replication {
                Some(r) => r
                    .iter()
                    .filter(|x| Some(x.node) != p.leader)
                    .map(|x| format!("{}:{}", x.node, x.lag))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => "-".into(),
            };
            let status = if p.leader.is_none() {
                format!("{red}UNAVAILABLE{reset}")
            } else if p.replicas.iter().any(down) {
                format!("{red}UNDER-REPLICATED{reset}")
            } else {
                format!("{green}ok{reset}")
            };
            out.push_str(&format!(
                "{:<11}{replicas:<14}{leader:<8}{:<7}{:<9}{:<9}{lag:<22}{status}\n",
                p.id, p.term, p.commit_index, p.applied_index
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_members_stand_out() {
        let body = r#"{"node_id":1,"members":[
            {"id":1,"http_addr":"127.0.0.1:7000","peer_addr":"127.0.0.1:7001","state":"up","last_seen_ms":0},
            {"id":2,"http_addr":"127.0.0.1:7010","peer_addr":"127.0.0.1:7011","state":"down","last_seen_ms":4200}],
            "meta":{"leader":null,"term":0,"commit_index":0},"partitions":[]}"#;
        let v: ClusterView = serde_json::from_str(body).expect("parses");
        let text = render("http://127.0.0.1:7000", &v, false);
        assert!(text.contains("1 of 2 members DOWN"), "{text}");
        assert!(text.contains("DOWN   127.0.0.1:7010"), "{text}");
        assert!(text.contains("4.2s ago"), "{text}");
    }

    #[test]
    fn watch_redraws_only_on_a_terminal() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
        let redraw = WatchStyle::for_output(true, false);
        assert_eq!(redraw, WatchStyle::Redraw);
        assert_eq!(WatchStyle::for_output(true, true), WatchStyle::Redraw);
        assert!(redraw.header(true, at).contains("\x1b[2J"));
        let plain = WatchStyle::for_output(false, false);
        assert_eq!(plain, WatchStyle::Append);
        assert_eq!(plain.header(true, at), "=== 1970-01-02T00:00:00Z ===\n");
        assert_eq!(plain.header(false, at), "\n=== 1970-01-02T00:00:00Z ===\n", "a blank line between snapshots");
        for first in [true, false] {
            assert!(!plain.header(first, at).contains('\x1b') && !plain.footer().contains('\x1b'));
        }
        let lines = WatchStyle::for_output(false, true);
        assert_eq!((lines.header(false, at).as_str(), lines.footer()), ("", ""), "JSON documents, one per line");
    }

    #[test]
    fn partitions_show_leader_rows_with_lag_and_health() {
        let body = r#"{"node_id":1,"members":[
            {"id":1,"http_addr":"a","peer_addr":"a","state":"up","last_seen_ms":0},
            {"id":2,"http_addr":"b","peer_addr":"b","state":"up","last_seen_ms":10},
            {"id":3,"http_addr":"c","peer_addr":"c","state":"down","last_seen_ms":9000,"dead":true}],
            "meta":{"leader":1,"term":2,"commit_index":9},"partitions":[
            {"id":1,"replicas":[1,2,3],"leader":2,"term":3,"commit_index":40,"role":"follower"},
            {"id":2,"replicas":[1,2],"leader":null,"term":3,"commit_index":7,"role":"follower"}]}"#;
        let mut v: ClusterView = serde_json::from_str(body).expect("parses");
        let other: ClusterView = serde_json::from_str(
            r#"{"node_id":2,"members":[],"meta":{"leader":1,"term":2,"commit_index":9},"partitions":[
            {"id":1,"replicas":[1,2,3],"leader":2,"term":3,"commit_index":41,"applied_index":39,"role":"leader",
             "replication":[{"node":1,"lag":0},{"node":2,"lag":0},{"node":3,"lag":17}]}]}"#,
        )
        .expect("parses");
        merge_leader_rows(&mut v, &[other]);
        let text = render("http://a", &v, false);
        assert!(text.contains("41       39"), "commit and applied index from the leader's row: {text}");
        assert!(text.contains("1:0 3:17"), "lag per follower: {text}");
        assert!(text.contains("UNDER-REPLICATED"), "{text}");
        assert!(text.contains("UNAVAILABLE"), "{text}");
        assert!(text.contains("dead: replicas moved away"), "{text}");
    }
}
