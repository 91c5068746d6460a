//! What several cluster tests ask of a running [`Cluster`] over its HTTP API: which node leads
//! each Raft group, and counter increments and reads (the simplest replicated write and
//! linearizable read, used to probe Raft and placement).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow};

use crate::harness::{Cluster, ClusterSpec, FORM, formed, wait_for, wait_for_result};
use crate::history::{Kind, Outcome};

/// A formed cluster (see [`formed`]) whose every Raft group (meta and partitions) has elected a
/// leader.
pub async fn led(bin: &Path, spec: &ClusterSpec) -> Result<Cluster> {
    let c = formed(bin, spec).await?;
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    wait_for("every group to have a leader", FORM, || async {
        let groups = leaders(&c, &ids).await;
        let partitions = c.get_json(1, "/v1/cluster").await?["partitions"].as_array()?.len();
        (partitions > 0 && groups.len() == partitions + 1).then_some(())
    })
    .await?;
    Ok(c)
}

/// Every group's state as its leader reports it (`role == "leader"`), asked of `ids`; the meta
/// group is group 0.
pub async fn leaders(c: &Cluster, ids: &[u64]) -> BTreeMap<u64, serde_json::Value> {
    let mut out = BTreeMap::new();
    for id in ids {
        let Some(v) = c.get_json(*id, "/v1/cluster").await else { continue };
        let meta = std::iter::once(&v["meta"]).filter(|m| m["leader"].as_u64() == Some(*id));
        for g in v["partitions"].as_array().into_iter().flatten() {
            if g["role"] == "leader"
                && let Some(gid) = g["id"].as_u64()
            {
                out.insert(gid, g.clone());
            }
        }
        for m in meta {
            out.insert(0, m.clone());
        }
    }
    out
}

/// The node leading `group` (0: meta), as node `observer` sees it.
pub async fn leader_of(c: &Cluster, observer: u64, group: u64) -> Option<u64> {
    let v = c.get_json(observer, "/v1/cluster").await?;
    if group == 0 {
        return v["meta"]["leader"].as_u64();
    }
    v["partitions"].as_array()?.iter().find(|p| p["id"].as_u64() == Some(group))?["leader"].as_u64()
}

/// `POST /v1/counters/{name}/increment` by 1 on `node`, once.
pub async fn post_increment(c: &Cluster, node: u64, name: &str) -> reqwest::Result<reqwest::Response> {
    c.http
        .post(c.node(node).url(&format!("/v1/counters/{name}/increment")))
        .json(&serde_json::json!({"by": 1}))
        .send()
        .await
}

/// One increment of counter `name` by 1 on `node`; answers the new value. A 503 `no_leader`
/// answer means nothing was proposed, so it is retried; any other failure is returned.
pub async fn increment(c: &Cluster, node: u64, name: &str) -> Result<u64> {
    wait_for_result("an increment", FORM, || async {
        let r = post_increment(c, node, name).await?;
        let status = r.status();
        let v: serde_json::Value = r.json().await?;
        if status.as_u16() == 503 && v["error"]["code"] == "no_leader" {
            return Ok(None);
        }
        anyhow::ensure!(status.is_success(), "status {status}: {v}");
        Ok(Some(v["value"].as_u64().ok_or_else(|| anyhow!("no value in {v}"))?))
    })
    .await
}

/// The value of counter `name`, read (linearizably) on `node`, once.
pub async fn read(c: &Cluster, node: u64, name: &str) -> Result<u64> {
    let v = c.get_json(node, &format!("/v1/counters/{name}")).await.ok_or_else(|| anyhow!("read failed"))?;
    v["value"].as_u64().ok_or_else(|| anyhow!("no value in {v}"))
}

/// How one recorded counter operation ended, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The node refused the connection (it is down): never sent.
    Refused,
    /// Answered 503 `no_leader`, which the API promises proposed nothing: not applied.
    NotApplied,
    /// Sent, with this outcome (any failure other than the two above is an unknown outcome).
    Done(Outcome),
}

/// One operation of `kind` on counter `name` through `node`: an increment by 1 or a
/// linearizable read. Operation histories record the [`Attempt::Done`] ones only, so an
/// increment applied after a `no_leader` answer shows up as applied twice.
pub async fn counter_op(c: &Cluster, node: u64, name: &str, kind: Kind) -> Attempt {
    let result = match kind {
        Kind::Increment => post_increment(c, node, name).await,
        Kind::Read => c.http.get(c.node(node).url(&format!("/v1/counters/{name}"))).send().await,
    };
    let response = match result {
        Err(e) if e.is_connect() => return Attempt::Refused,
        Err(_) => return Attempt::Done(Outcome::Unknown),
        Ok(r) => r,
    };
    let status = response.status();
    let body = response.json::<serde_json::Value>().await.ok();
    if status.is_success() {
        let value = body.and_then(|v| v["value"].as_u64());
        return Attempt::Done(value.map_or(Outcome::Unknown, Outcome::Ok));
    }
    if status.as_u16() == 503 && body.is_some_and(|v| v["error"]["code"] == "no_leader") {
        return Attempt::NotApplied;
    }
    Attempt::Done(Outcome::Unknown)
}
