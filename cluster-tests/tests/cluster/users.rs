//! The users service: sign-up, bearer tokens that authenticate on every node, and closed
//! sign-up.

use std::time::Duration;

use anyhow::{Result, anyhow};
use cluster_tests::harness::{ClusterSpec, FORM, wait_for_result};

use crate::formed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sign_up_and_their_tokens_authenticate_on_every_node() -> Result<()> {
    let c = formed(&ClusterSpec::new(3)).await?;
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let r = plain.post(c.node(1).url("/v1/users")).json(&serde_json::json!({"name": "ada"})).send().await?;
    assert_eq!(r.status().as_u16(), 201);
    let user: serde_json::Value = r.json().await?;
    let token = user["token"].as_str().ok_or_else(|| anyhow!("no token in {user}"))?.to_string();
    assert_eq!(user["name"], "ada");
    // Right away, on another node: a miss in local state falls back to the meta leader.
    for node in [2, 3, 1] {
        let r = plain.get(c.node(node).url("/v1/users/me")).bearer_auth(&token).send().await?;
        assert_eq!(r.status().as_u16(), 200, "node {node}");
        let me: serde_json::Value = r.json().await?;
        assert_eq!(me["id"], user["id"]);
        assert_eq!(me["name"], "ada");
    }
    // The user's token works for counters (retrying while the partition still elects a leader).
    let status = wait_for_result("an authenticated increment", FORM, || async {
        let r = plain.post(c.node(2).url("/v1/counters/mine/increment")).bearer_auth(&token).send().await?;
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await?;
        Ok((status != 503 || v["error"]["code"] != "no_leader").then_some(status))
    })
    .await?;
    assert_eq!(status, 200);
    for (auth, code) in
        [(None, "missing_token"), (Some("Bearer nope"), "invalid_token"), (Some("Basic x"), "invalid_token")]
    {
        let mut req = plain.get(c.node(1).url("/v1/counters/mine"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await?;
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(r.json::<serde_json::Value>().await?["error"]["code"], code);
    }
    for body in [serde_json::json!({}), serde_json::json!({"name": ""}), serde_json::json!({"name": "a\u{7}b"})] {
        let r = plain.post(c.node(1).url("/v1/users")).json(&body).send().await?;
        assert_eq!(r.status().as_u16(), 400, "{body}");
    }
    // /v1/cluster needs no token.
    assert_eq!(plain.get(c.node(1).url("/v1/cluster")).send().await?.status().as_u16(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_signup_needs_the_admin_token() -> Result<()> {
    let c = formed(&ClusterSpec::new(1).set("auth", "open_signup = false")).await?;
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let r = plain.post(c.node(1).url("/v1/users")).json(&serde_json::json!({"name": "eve"})).send().await?;
    assert_eq!(r.status().as_u16(), 401);
    let r = c.http.post(c.node(1).url("/v1/users")).json(&serde_json::json!({"name": "bob"})).send().await?;
    assert_eq!(r.status().as_u16(), 201, "the admin may create users");
    let token = r.json::<serde_json::Value>().await?["token"].as_str().unwrap_or_default().to_string();
    let r = plain
        .post(c.node(1).url("/v1/users"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403, "a user may not");
    Ok(())
}
