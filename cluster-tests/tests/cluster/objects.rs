//! Object storage through a real S3 client: boto3 (`cluster-tests/scripts/s3_client.py`)
//! against the S3 endpoints of a 3-node cluster. Each test starts its own cluster, creates a
//! user and an S3 key over the HTTP API, and runs one scenario of the script, which asserts
//! what the test's name promises. boto3 comes from a venv `.ci/run` makes
//! (`SHOAL_S3_PYTHON`), or any `python3` that imports it; without one the S3 tests skip
//! (under `CI=true` they fail).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail, ensure};
use cluster_tests::harness::{Cluster, ClusterSpec, admin_client, plain_client, wait_for};
use cluster_tests::skip::{self, ToolCheck};
use serde_json::{Value, json};

use crate::{led, repo};

/// A Python interpreter that imports boto3, or `None` (the test then skips, or fails in CI).
fn boto3_python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> =
        std::env::var_os("SHOAL_S3_PYTHON").map(PathBuf::from).into_iter().chain([PathBuf::from("python3")]).collect();
    let found = candidates.into_iter().find(|py| {
        std::process::Command::new(py).args(["-c", "import boto3"]).output().is_ok_and(|o| o.status.success())
    });
    match skip::tool_check(found.is_some(), std::env::var(skip::CI).ok().as_deref()) {
        ToolCheck::Run => {}
        ToolCheck::Fail => panic!("boto3 is required under CI=true (PyPI; .ci/run installs it into a venv)"),
        ToolCheck::Skip => {
            skip::announce("boto3 is not installed (pip install boto3, or SHOAL_S3_PYTHON=<venv python>)")
        }
    }
    found
}

/// Runs scenario `name` of the S3 client script with `args`; answers what it printed.
async fn scenario(py: &PathBuf, name: &str, args: &Value) -> Result<String> {
    let script = repo().join("cluster-tests/scripts/s3_client.py");
    let run = tokio::process::Command::new(py).arg(script).arg(name).arg(args.to_string()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(600), run).await.map_err(|_| anyhow!("{name} timed out"))??;
    if !out.status.success() {
        bail!(
            "scenario {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A user with an S3 key.
struct KeyedUser {
    token: String,
    key: String,
    secret: String,
}

async fn user_with_key(c: &Cluster, node: u64, name: &str) -> Result<KeyedUser> {
    let http = plain_client()?;
    let r = http.post(c.node(node).url("/v1/users")).json(&json!({"name": name})).send().await?;
    ensure!(r.status().as_u16() == 201, "sign-up answered {}", r.status());
    let v: Value = r.json().await?;
    let token = v["token"].as_str().ok_or_else(|| anyhow!("no token in {v}"))?.to_string();
    let r = http.post(c.node(node).url("/v1/users/me/s3-keys")).bearer_auth(&token).send().await?;
    ensure!(r.status().as_u16() == 201, "key creation answered {}", r.status());
    let v: Value = r.json().await?;
    let field = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {k} in {v}"));
    Ok(KeyedUser { token, key: field("access_key_id")?, secret: field("secret_access_key")? })
}

fn endpoints(c: &Cluster) -> Vec<String> {
    (1..=3).map(|id| c.node(id).s3.to_string()).collect()
}

async fn run(name: &str, extra: Value) -> Result<()> {
    let Some(py) = boto3_python() else { return Ok(()) };
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = user_with_key(&c, 1, "ann").await?;
    let mut args = json!({"endpoints": endpoints(&c), "key": ann.key, "secret": ann.secret});
    if name == "access" {
        let bob = user_with_key(&c, 2, "bob").await?;
        args["other_key"] = json!(bob.key);
        args["other_secret"] = json!(bob.secret);
    }
    if let (Some(args), Some(extra)) = (args.as_object_mut(), extra.as_object()) {
        args.extend(extra.clone());
    }
    scenario(&py, name, &args).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_by_hash_with_ranges_and_conditional_gets() -> Result<()> {
    // 0 B, 1 B, 1 MiB - 1, 1 MiB, 1 MiB + 1 and 20 MiB, each written through node 1 and read
    // back through nodes 2 and 3.
    run("round_trips", json!({"large": 20 * 1024 * 1024})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_complete_whole_with_s3_etags_and_abort_cleanly() -> Result<()> {
    // 64 MiB in eight parallel parts of 8 MiB.
    run("multipart", json!({"size": 64 * 1024 * 1024})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_by_prefix_and_delimiter_and_copy_and_batch_delete_work() -> Result<()> {
    run("listing", json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_get_and_put_work_on_other_nodes_and_expired_or_tampered_are_refused() -> Result<()> {
    run("presigned", json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_read_buckets_serve_unsigned_reads_and_private_ones_only_their_owner() -> Result<()> {
    run("access", json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keys_are_created_listed_and_revoked_over_http() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = user_with_key(&c, 1, "ann").await?;
    ensure!(ann.key.starts_with("SH") && ann.key.len() == 20, "access key id {}", ann.key);
    ensure!(ann.secret.len() == 40, "secret of {} characters", ann.secret.len());
    let http = plain_client()?;
    // Listed on another node, without the secret.
    let r = http.get(c.node(2).url("/v1/users/me/s3-keys")).bearer_auth(&ann.token).send().await?;
    ensure!(r.status().as_u16() == 200, "list answered {}", r.status());
    let v: Value = r.json().await?;
    let keys = v["keys"].as_array().ok_or_else(|| anyhow!("no keys in {v}"))?;
    ensure!(keys.len() == 1 && keys[0]["access_key_id"] == ann.key.as_str(), "{v}");
    ensure!(!v.to_string().contains(&ann.secret), "the list shows the secret: {v}");
    // The admin token has no keys.
    let r = admin_client()?.post(c.node(1).url("/v1/users/me/s3-keys")).send().await?;
    ensure!(r.status().as_u16() == 403, "admin key creation answered {}", r.status());
    let v: Value = r.json().await?;
    ensure!(v["error"]["code"] == "user_required", "{v}");
    // Another user cannot revoke it.
    let bob = user_with_key(&c, 2, "bob").await?;
    let url = c.node(3).url(&format!("/v1/users/me/s3-keys/{}", ann.key));
    let r = http.delete(&url).bearer_auth(&bob.token).send().await?;
    ensure!(r.status().as_u16() == 404, "bob revoking ann's key answered {}", r.status());
    // Its user can, once.
    let r = http.delete(&url).bearer_auth(&ann.token).send().await?;
    ensure!(r.status().as_u16() == 204, "revocation answered {}", r.status());
    let r = http.delete(&url).bearer_auth(&ann.token).send().await?;
    ensure!(r.status().as_u16() == 404, "a second revocation answered {}", r.status());
    let v: Value = r.json().await?;
    ensure!(v["error"]["code"] == "not_found", "{v}");
    let r = http.get(c.node(1).url("/v1/users/me/s3-keys")).bearer_auth(&ann.token).send().await?;
    let v: Value = r.json().await?;
    ensure!(v["keys"].as_array().is_some_and(Vec::is_empty), "{v}");
    // Requests signed with the revoked key are refused on every node.
    if let Some(py) = boto3_python() {
        let args = json!({"endpoints": endpoints(&c), "key": ann.key, "secret": ann.secret});
        scenario(&py, "revoked", &args).await?;
    }
    Ok(())
}

/// `put`/`get` scenario arguments for object `name` of bucket `bucket` through `node`.
fn object_args(c: &Cluster, user: &KeyedUser, node: u64, bucket: &str, name: &str) -> Value {
    json!({"endpoint": c.node(node).s3.to_string(), "key": user.key, "secret": user.secret,
           "bucket": bucket, "name": name})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_succeed_with_a_replica_down_and_it_fetches_the_chunks_it_missed_on_read() -> Result<()> {
    let Some(py) = boto3_python() else { return Ok(()) };
    let mut c = led(&ClusterSpec::new(3)).await?;
    let ann = user_with_key(&c, 1, "ann").await?;
    c.kill(3)?;
    // Two of three replicas are a write quorum for the chunks and for the record.
    let mut args = object_args(&c, &ann, 1, "repl", "big");
    args["create"] = json!(true);
    args["size"] = json!(3 * 1024 * 1024 + 17);
    let written = scenario(&py, "put", &args).await?;
    let read = scenario(&py, "get", &object_args(&c, &ann, 2, "repl", "big")).await?;
    ensure!(read == written, "node 2 read {read}, {written} was written");
    c.start_node(3)?;
    c.wait_ready(&[3], Duration::from_secs(60)).await?;
    // Node 3 holds none of the chunks: it reads them from the others, checks and keeps them.
    let read = scenario(&py, "get", &object_args(&c, &ann, 3, "repl", "big")).await?;
    ensure!(read == written, "node 3 read {read}, {written} was written");
    // It fetched them on the read (or the resync did), unless a write still retrying when it
    // came back delivered them first.
    let repaired = c.metric(3, "shoal_objects_chunks_repaired_total").await.unwrap_or(0.0);
    let written = c.metric(3, "shoal_objects_chunks_written_total").await.unwrap_or(0.0);
    ensure!(repaired + written >= 4.0, "node 3 got {repaired} + {written} chunks since its restart, not the 4");
    Ok(())
}

/// The chunk files under node `id`'s data directory.
fn chunk_files(c: &Cluster, id: u64) -> Vec<PathBuf> {
    let dir = c.node(id).config.parent().map(|d| d.join(format!("data/node-{id}/objects/chunks")));
    let Some(Ok(shards)) = dir.map(std::fs::read_dir) else { return Vec::new() };
    shards
        .flatten()
        .filter_map(|shard| std::fs::read_dir(shard.path()).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_file_is_never_served_and_is_replaced_from_a_replica() -> Result<()> {
    let Some(py) = boto3_python() else { return Ok(()) };
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = user_with_key(&c, 1, "ann").await?;
    let (written, file, good) = put_one_chunk_and_corrupt_it_on_node_2(&c, &py, &ann).await?;
    let read = scenario(&py, "get", &object_args(&c, &ann, 2, "scrub", "one")).await?;
    ensure!(read == written, "node 2 served {read}, {written} was written");
    let corrupt = c.metric(2, "shoal_objects_corrupt_chunks_total").await.unwrap_or(0.0);
    ensure!(corrupt >= 1.0, "node 2 counted {corrupt} corrupt chunks");
    ensure!(std::fs::read(&file)? == good, "the corrupt file was not replaced by a good copy");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_resync_fetches_every_chunk_the_node_missed() -> Result<()> {
    let Some(py) = boto3_python() else { return Ok(()) };
    let spec = ClusterSpec::new(3).set("objects", "resync_interval = \"2s\"");
    let mut c = led(&spec).await?;
    let ann = user_with_key(&c, 1, "ann").await?;
    c.kill(3)?;
    // 100 one-chunk objects while node 3 is down: it holds none of their chunks.
    let mut args = object_args(&c, &ann, 1, "resync", "");
    args["count"] = json!(100);
    args["size"] = json!(4096);
    scenario(&py, "put_many", &args).await?;
    let before = chunk_files(&c, 3).len();
    c.start_node(3)?;
    c.wait_ready(&[3], Duration::from_secs(60)).await?;
    // Without a single read of them, node 3 comes to hold every chunk, and says none is missing.
    wait_for("node 3's resync to fetch every chunk it missed", Duration::from_secs(60), || async {
        let passes = c.metric(3, "shoal_objects_resync_passes_total").await?;
        let missing = c.metric(3, "shoal_objects_missing_chunks").await?;
        let held = chunk_files(&c, 3).len();
        (passes >= 1.0 && missing == 0.0 && held >= before + 100).then_some(())
    })
    .await?;
    // Fetched by the resync, or delivered late by a write still retrying when node 3 came back.
    let repaired = c.metric(3, "shoal_objects_chunks_repaired_total").await.unwrap_or(0.0);
    let written = c.metric(3, "shoal_objects_chunks_written_total").await.unwrap_or(0.0);
    ensure!(repaired + written >= 100.0, "node 3 got {repaired} + {written} chunks since its restart, not 100");
    Ok(())
}

/// The chunk file names on each of nodes 1 to 3.
fn chunk_names(c: &Cluster) -> Vec<BTreeSet<String>> {
    (1..=3)
        .map(|id| {
            chunk_files(c, id).iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect()
        })
        .collect()
}

/// Waits until every node holds exactly `n` chunk files (the writes past a quorum landed);
/// answers them.
async fn settled(c: &Cluster, n: usize) -> Result<Vec<BTreeSet<String>>> {
    wait_for(&format!("every node to hold {n} chunk files"), Duration::from_secs(30), || async {
        let names = chunk_names(c);
        names.iter().all(|s| s.len() == n).then_some(names)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_deletes_the_chunks_of_overwritten_and_deleted_objects_and_live_ones_read_back() -> Result<()> {
    let Some(py) = boto3_python() else { return Ok(()) };
    // Five 64 KiB chunks per object; unreferenced chunks go 2 s after they were stored.
    let spec = ClusterSpec::new(3)
        .set("objects", "chunk_size = 65536")
        .set("objects", "gc_grace = \"2s\"")
        .set("objects", "gc_interval = \"500ms\"");
    let c = led(&spec).await?;
    let ann = user_with_key(&c, 1, "ann").await?;
    let put = |node: u64, name: &str, create: bool| {
        let mut args = object_args(&c, &ann, node, "gcbkt", name);
        args["create"] = json!(create);
        args["size"] = json!(5 * 65536);
        args
    };
    scenario(&py, "put", &put(1, "a", true)).await?;
    scenario(&py, "put", &put(2, "b", false)).await?;
    let old = settled(&c, 10).await?;
    let kept = scenario(&py, "put", &put(3, "c", false)).await?;
    let with_c = settled(&c, 15).await?;
    // Overwrite a, delete b: their ten old chunks are referenced by nothing.
    let new_a = scenario(&py, "put", &put(1, "a", false)).await?;
    scenario(&py, "delete", &object_args(&c, &ann, 2, "gcbkt", "b")).await?;
    wait_for("every node to collect the old chunks of a and b", Duration::from_secs(60), || async {
        let names = chunk_names(&c);
        let done = (0..3).all(|i| {
            let c_kept = with_c[i].difference(&old[i]).all(|n| names[i].contains(n));
            names[i].is_disjoint(&old[i]) && c_kept && names[i].len() == 10
        });
        done.then_some(())
    })
    .await?;
    for id in 1..=3 {
        let collected = c.metric(id, "shoal_objects_gc_chunks_total").await.unwrap_or(0.0);
        ensure!(collected >= 10.0, "node {id} counted {collected} collected chunks, not 10");
        let bytes = c.metric(id, "shoal_objects_gc_bytes_total").await.unwrap_or(0.0);
        ensure!(bytes >= 10.0 * 65536.0, "node {id} counted {bytes} collected bytes");
    }
    // The live objects read back byte-exact through every node.
    for node in 1..=3 {
        let read = scenario(&py, "get", &object_args(&c, &ann, node, "gcbkt", "a")).await?;
        ensure!(read == new_a, "node {node} read a as {read}, {new_a} was written");
        let read = scenario(&py, "get", &object_args(&c, &ann, node, "gcbkt", "c")).await?;
        ensure!(read == kept, "node {node} read c as {read}, {kept} was written");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_a_corrupt_chunk_nobody_reads_and_replaces_it_from_a_peer() -> Result<()> {
    let Some(py) = boto3_python() else { return Ok(()) };
    let spec = ClusterSpec::new(3).set("objects", "scrub_interval = \"1s\"");
    let c = led(&spec).await?;
    let ann = user_with_key(&c, 1, "ann").await?;
    let (written, file, good) = put_one_chunk_and_corrupt_it_on_node_2(&c, &py, &ann).await?;
    // Nothing reads the object: the scrub alone finds the bad copy and puts a good one back.
    wait_for("node 2's scrub to replace the corrupt chunk", Duration::from_secs(60), || async {
        let found = c.metric(2, "shoal_objects_scrub_corrupt_chunks_total").await?;
        (found >= 1.0 && std::fs::read(&file).ok()? == good).then_some(())
    })
    .await?;
    let gets = c.metric(2, "shoal_objects_requests_total{op=\"GetObject\",outcome=\"ok\"}").await.unwrap_or(0.0);
    ensure!(gets == 0.0, "node 2 served {gets} GETs: the scrub was to find it without a read");
    ensure!(c.metric(2, "shoal_objects_scrub_bytes_total").await.unwrap_or(0.0) >= good.len() as f64);
    let read = scenario(&py, "get", &object_args(&c, &ann, 2, "scrub", "one")).await?;
    ensure!(read == written, "node 2 served {read}, {written} was written");
    Ok(())
}

/// Writes one 512 KiB object (one chunk) as `ann` through node 1, waits for node 2 to hold its
/// chunk (a write quorum answered; the third write may still run) and flips a byte of node 2's
/// copy. Answers what was written, the chunk file and its good bytes.
async fn put_one_chunk_and_corrupt_it_on_node_2(
    c: &Cluster,
    py: &PathBuf,
    ann: &KeyedUser,
) -> Result<(String, PathBuf, Vec<u8>)> {
    let mut args = object_args(c, ann, 1, "scrub", "one");
    args["create"] = json!(true);
    args["size"] = json!(512 * 1024);
    let written = scenario(py, "put", &args).await?;
    let file = wait_for("node 2 to hold the chunk", Duration::from_secs(20), || async {
        chunk_files(c, 2).into_iter().next()
    })
    .await?;
    let good = std::fs::read(&file)?;
    let mut bad = good.clone();
    bad[1000] ^= 0xFF;
    std::fs::write(&file, &bad)?;
    Ok((written, file, good))
}
