//! The URL shortener: codes and aliases, redirects from every node, deletion and expiry,
//! clicks, the cache under a stampede, and redirects through failovers and a lost majority.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use cluster_tests::api::leader_of;
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, wait_for, wait_for_result};
use serde_json::{Value, json};

use crate::led;

/// A client that does not follow redirects (so a 302 is seen as one) and sends the admin token.
fn no_follow() -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", cluster_tests::harness::ADMIN_TOKEN).parse()?);
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()?)
}

/// `POST /v1/urls` on `node`, retrying 503s (no leader yet, or a failover under way: a
/// retry after an unknown outcome may leave one extra link, which these tests allow);
/// answers status and body.
async fn shorten(c: &Cluster, node: u64, body: Value) -> Result<(u16, Value)> {
    wait_for_result("a shorten", FORM, || async {
        let r = c.http.post(c.node(node).url("/v1/urls")).json(&body).send().await?;
        let status = r.status().as_u16();
        let v: Value = r.json().await?;
        Ok((status != 503).then_some((status, v)))
    })
    .await
}

async fn created(c: &Cluster, node: u64, body: Value) -> Result<String> {
    let (status, v) = shorten(c, node, body).await?;
    anyhow::ensure!(status == 201, "shorten answered {status}: {v}");
    Ok(v["code"].as_str().ok_or_else(|| anyhow!("no code in {v}"))?.to_string())
}

/// Status and `Location` of `GET /{code}` on `node`.
async fn visit(client: &reqwest::Client, c: &Cluster, node: u64, code: &str) -> Result<(u16, Option<String>)> {
    let r = client.get(c.node(node).url(&format!("/{code}"))).send().await?;
    let location = r.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
    Ok((r.status().as_u16(), location))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortened_links_redirect_from_every_node_and_bad_input_is_refused() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let client = no_follow()?;
    let mut codes = Vec::new();
    for node in [1, 2, 3] {
        let (status, v) = shorten(&c, node, json!({"url": format!("https://example.com/page/{node}?q=1")})).await?;
        assert_eq!(status, 201, "{v}");
        let code = v["code"].as_str().unwrap_or_default().to_string();
        assert_eq!(code.len(), 7, "{v}");
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
        assert_eq!(v["short_url"], format!("http://{}/{code}", c.node(node).http));
        assert!(v["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')), "{v}");
        codes.push((code, format!("https://example.com/page/{node}?q=1")));
    }
    let distinct: std::collections::BTreeSet<_> = codes.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(distinct.len(), 3, "codes are unique: {codes:?}");
    // Write affinity: each node handed out a code of a partition it leads.
    for (i, (code, _)) in codes.iter().enumerate() {
        let group = shoal::placement::partition_of(code, 4);
        assert_eq!(leader_of(&c, 1, group).await, Some(i as u64 + 1), "{code} (group {group})");
    }
    // Right after creation, from every node (a replica that has not applied the link yet asks
    // the leader).
    for (code, target) in &codes {
        for node in [3, 2, 1] {
            assert_eq!(visit(&client, &c, node, code).await?, (302, Some(target.clone())), "{code} on {node}");
        }
    }
    // Aliases: taken once, 409 after.
    let alias = created(&c, 2, json!({"url": "http://example.org/", "alias": "launch-day_1"})).await?;
    assert_eq!(alias, "launch-day_1");
    let (status, v) = shorten(&c, 3, json!({"url": "http://example.org/other", "alias": "launch-day_1"})).await?;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("alias_taken")), "{v}");
    assert_eq!(visit(&client, &c, 1, "launch-day_1").await?, (302, Some("http://example.org/".into())));
    // Bad input: 400 with a code naming what is wrong, and nothing created.
    let own = format!("http://{}/launch-day_1", c.node(2).http);
    for (body, code) in [
        (json!({"url": "ftp://example.com/file"}), "invalid_url"),
        (json!({"url": "javascript:alert(1)"}), "invalid_url"),
        (json!({"url": "no scheme here"}), "invalid_url"),
        (json!({"url": "https://user:secret@example.com/"}), "invalid_url"),
        (json!({"url": format!("https://example.com/{}", "a".repeat(2048))}), "invalid_url"),
        (json!({"url": own}), "invalid_url"),
        (json!({"url": "https://example.com/", "alias": "ab"}), "invalid_alias"),
        (json!({"url": "https://example.com/", "alias": "has/slash"}), "invalid_alias"),
        (json!({"url": "https://example.com/", "alias": "metrics"}), "invalid_alias"),
        (json!({"url": "https://example.com/", "expires_at": "2001-01-01T00:00:00Z"}), "invalid_expires_at"),
        (json!({"url": "https://example.com/", "expires_at": "tomorrow"}), "invalid_expires_at"),
        (json!({"link": "https://example.com/"}), "invalid_body"),
    ] {
        let r = c.http.post(c.node(1).url("/v1/urls")).json(&body).send().await?;
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await?;
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(visit(&client, &c, 1, "ab").await?.0, 404);
    assert_eq!(visit(&client, &c, 2, "nosuchcode").await?.0, 404);
    // Shortening needs a token.
    let plain = reqwest::Client::new();
    let r = plain.post(c.node(1).url("/v1/urls")).json(&json!({"url": "https://example.com/"})).send().await?;
    assert_eq!(r.status().as_u16(), 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_expired_links_answer_410_everywhere_and_only_owners_see_them() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let client = no_follow()?;
    // A user of their own (the admin may see and delete anything).
    let r = reqwest::Client::new().post(c.node(1).url("/v1/users")).json(&json!({"name": "owner"})).send().await?;
    let token = r.json::<Value>().await?["token"].as_str().unwrap_or_default().to_string();
    let r = reqwest::Client::new().post(c.node(1).url("/v1/users")).json(&json!({"name": "other"})).send().await?;
    let other = r.json::<Value>().await?["token"].as_str().unwrap_or_default().to_string();
    let user = cluster_tests::harness::plain_client()?;
    let r = user
        .post(c.node(2).url("/v1/urls"))
        .bearer_auth(&token)
        .json(&json!({"url": "https://example.com/doomed"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 201);
    let code = r.json::<Value>().await?["code"].as_str().unwrap_or_default().to_string();
    // Cached on every node.
    for node in [1, 2, 3] {
        assert_eq!(visit(&client, &c, node, &code).await?.0, 302);
    }
    // Someone else may neither see nor delete it.
    let path = format!("/v1/urls/{code}");
    let r = user.get(c.node(1).url(&path)).bearer_auth(&other).send().await?;
    assert_eq!(r.status().as_u16(), 403);
    let r = user.delete(c.node(1).url(&path)).bearer_auth(&other).send().await?;
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(visit(&client, &c, 3, &code).await?.0, 302);
    let r = user.get(c.node(3).url(&path)).bearer_auth(&token).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await?;
    assert_eq!((v["status"].as_str(), v["url"].as_str()), (Some("active"), Some("https://example.com/doomed")));
    // Deleted on node 3: every node answers 410 within a second (node 3 tells the others).
    let r = user.delete(c.node(3).url(&path)).bearer_auth(&token).send().await?;
    assert_eq!(r.status().as_u16(), 204);
    let deleted = Instant::now();
    wait_for("every node to answer 410 for the deleted link", Duration::from_secs(5), || async {
        for node in [1, 2, 3] {
            if visit(&client, &c, node, &code).await.ok()?.0 != 410 {
                return None;
            }
        }
        Some(())
    })
    .await?;
    let took = deleted.elapsed();
    assert!(took < Duration::from_millis(1500), "410 everywhere took {took:?}");
    let r = user.get(c.node(1).url(&path)).bearer_auth(&token).send().await?;
    assert_eq!(r.json::<Value>().await?["status"], "deleted");
    // The code is never handed out again: recreating it as an alias is refused.
    let (status, _) = shorten(&c, 1, json!({"url": "https://example.com/again", "alias": code})).await?;
    assert_eq!(status, 409);
    // A link expiring in two seconds redirects, then answers 410.
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    let at = humantime::format_rfc3339_seconds(at).to_string();
    let short = created(&c, 1, json!({"url": "https://example.com/brief", "expires_at": at})).await?;
    assert_eq!(visit(&client, &c, 2, &short).await?.0, 302);
    wait_for("the link to expire", Duration::from_secs(10), || async {
        (visit(&client, &c, 2, &short).await.ok()?.0 == 410).then_some(())
    })
    .await?;
    for node in [1, 3] {
        assert_eq!(visit(&client, &c, node, &short).await?.0, 410, "node {node}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_from_several_nodes_are_counted_and_a_stampede_loads_once_per_node() -> Result<()> {
    // Cached mappings stay fresh for the whole burst, so every load the metrics show is one
    // of the stampede's.
    let c = led(&ClusterSpec::new(3).set("urls", "cache_fresh_for = \"30s\"")).await?;
    let client = no_follow()?;
    let code = created(&c, 1, json!({"url": "https://example.com/popular"})).await?;
    let loads_before: Vec<f64> = futures::future::join_all([1, 2, 3].map(|n| {
        let c = &c;
        async move { c.metric(n, "shoal_urls_cache_loads_total{outcome=\"ok\"}").await.unwrap_or(0.0) }
    }))
    .await;
    // A stampede: 40 concurrent first requests per node for the uncached code.
    let mut burst = Vec::new();
    for node in [1, 2, 3] {
        for i in 0..40 {
            let (client, c, code) = (&client, &c, &code);
            burst.push(async move {
                let referer = if i % 2 == 0 { "https://news.example/item" } else { "https://blog.example/post" };
                let r = client.get(c.node(node).url(&format!("/{code}"))).header("referer", referer).send().await?;
                Ok::<u16, anyhow::Error>(r.status().as_u16())
            });
        }
    }
    for status in futures::future::join_all(burst).await {
        assert_eq!(status?, 302);
    }
    for (i, node) in [1u64, 2, 3].into_iter().enumerate() {
        let loads = c.metric(node, "shoal_urls_cache_loads_total{outcome=\"ok\"}").await.unwrap_or(0.0);
        assert_eq!(loads - loads_before[i], 1.0, "node {node} loaded the code once for 40 requests");
    }
    // Clicks land in the partition within about a second of being counted.
    let path = format!("/v1/urls/{code}");
    let v = wait_for("all 120 clicks to be counted", Duration::from_secs(10), || async {
        let v = c.get_json(2, &path).await?;
        (v["clicks_total"] == 120).then_some(v)
    })
    .await?;
    let today = v["clicks_by_day"].as_array().and_then(|d| d.last()).cloned().unwrap_or_default();
    assert_eq!(today["clicks"], 120, "{v}");
    assert_eq!(v["clicks_by_day"].as_array().map(Vec::len), Some(30));
    let hosts: Vec<(String, u64)> = v["top_referrers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["host"].as_str().unwrap_or_default().to_string(), r["clicks"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(hosts, vec![("blog.example".to_string(), 60), ("news.example".to_string(), 60)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_survive_a_killed_partition_leader_and_shortens_resume_after_failover() -> Result<()> {
    let mut c = led(&ClusterSpec::new(3)).await?;
    let client = no_follow()?;
    let code = created(&c, 1, json!({"url": "https://example.com/steady"})).await?;
    let group = shoal::placement::partition_of(&code, 4);
    let leader = wait_for("the link's partition leader", FORM, || leader_of(&c, 1, group)).await?;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
    for node in &others {
        assert_eq!(visit(&client, &c, *node, &code).await?.0, 302);
    }
    c.kill(leader)?;
    // Redirects keep working on the survivors throughout the failover.
    for node in &others {
        assert_eq!(visit(&client, &c, *node, &code).await?, (302, Some("https://example.com/steady".into())));
    }
    // New shortens resume once partitions have leaders again.
    let fresh = created(&c, others[0], json!({"url": "https://example.com/after"})).await?;
    for node in &others {
        assert_eq!(visit(&client, &c, *node, &fresh).await?.0, 302);
    }
    c.start_node(leader)?;
    c.wait_ready(&[leader], FORM).await?;
    wait_for("the restarted node to redirect the new link", FORM, || async {
        (visit(&client, &c, leader, &fresh).await.ok()?.0 == 302).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_replica_serves_cached_links_stale_when_their_partition_is_down() -> Result<()> {
    // Cached links are revalidated after a second here, so the stale path comes soon.
    let mut c = led(&ClusterSpec::new(5).set("urls", "cache_fresh_for = \"1s\"")).await?;
    let client = no_follow()?;
    // Two links in one partition: one to cache on a node that holds no replica of it, one
    // left uncached there.
    let first = created(&c, 1, json!({"url": "https://example.com/cached"})).await?;
    let group = shoal::placement::partition_of(&first, 4);
    let mut second = None;
    for i in 0..40 {
        let alias = format!("same-partition-{i}");
        if shoal::placement::partition_of(&alias, 4) == group {
            second = Some(created(&c, 1, json!({"url": "https://example.com/uncached", "alias": alias})).await?);
            break;
        }
    }
    let second = second.context("no alias landed in the partition")?;
    let view = c.get_json(1, "/v1/cluster").await.context("cluster view")?;
    let replicas: Vec<u64> = view["partitions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["id"].as_u64() == Some(group)))
        .and_then(|p| p["replicas"].as_array())
        .map(|r| r.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert_eq!(replicas.len(), 3, "{view}");
    let outsider = (1..=5).find(|n| !replicas.contains(n)).context("a node outside the partition")?;
    // Cached there (the load asks the partition's leader, which a node outside it may first
    // have to find: 503 until then).
    let cached = wait_for_result("the outsider to redirect the link", FORM, || async {
        let answer = visit(&client, &c, outsider, &first).await?;
        Ok((answer.0 != 503).then_some(answer))
    })
    .await?;
    assert_eq!(cached, (302, Some("https://example.com/cached".into())));
    // The partition loses its majority.
    c.kill(replicas[0])?;
    c.kill(replicas[1])?;
    // The cached link keeps redirecting, served stale once it is due for revalidation.
    wait_for_result("a stale redirect", FORM, || async {
        let (status, _) = visit(&client, &c, outsider, &first).await?;
        assert_eq!(status, 302, "a cached link is served while its partition is down");
        let stale = c.metric(outsider, "shoal_urls_cache_requests_total{result=\"stale\"}").await.unwrap_or(0.0);
        Ok((stale > 0.0).then_some(()))
    })
    .await?;
    // The uncached one cannot be looked up: 503 with Retry-After.
    let r = client.get(c.node(outsider).url(&format!("/{second}"))).send().await?;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    Ok(())
}

/// The click flusher is a service task under the supervised `services` actor: an injected fault
/// restarts the actor (counted like every other actor), and clicks counted afterwards still
/// reach the link's partition, so the flusher runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tasks_are_supervised_and_the_click_flusher_runs_again_after_a_restart() -> Result<()> {
    let c = led(&ClusterSpec::new(1).set("testing", "fault_injection = true")).await?;
    let client = no_follow()?;
    let code = created(&c, 1, json!({"url": "https://example.com/supervised"})).await?;
    let series = "shoal_actor_restarts_total{actor=\"services\"}";
    assert_eq!(c.metric(1, series).await, Some(0.0));
    let r = c.http.post(c.node(1).url("/v1/testing/faults/services")).send().await?;
    assert_eq!(r.status().as_u16(), 202);
    wait_for("the services actor's restart to be counted", Duration::from_secs(10), || async {
        (c.metric(1, series).await? >= 1.0).then_some(())
    })
    .await?;
    assert!(c.log(1).contains("injected fault in the services actor"));
    assert_eq!(c.metric(1, "shoal_actor_up{actor=\"services\"}").await, Some(1.0));
    for _ in 0..3 {
        assert_eq!(visit(&client, &c, 1, &code).await?.0, 302);
    }
    let path = format!("/v1/urls/{code}");
    wait_for("clicks counted after the restart to be flushed", Duration::from_secs(10), || async {
        let v = c.get_json(1, &path).await?;
        (v["clicks_total"] == 3).then_some(())
    })
    .await?;
    Ok(())
}
