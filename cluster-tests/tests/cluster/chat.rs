//! Chat over HTTP: two users on different nodes share one history, resends are deduplicated,
//! bad input is refused naming the field, history pages, and no acknowledged message is lost or
//! doubled when the conversation's partition leader is SIGKILLed mid-conversation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use cluster_tests::api::leader_of;
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, plain_client, wait_for, wait_for_result};
use serde_json::{Value, json};

use crate::led;

/// A user of a test cluster.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) token: String,
}

pub(crate) async fn sign_up(c: &Cluster, node: u64, name: &str) -> Result<User> {
    let r = plain_client()?.post(c.node(node).url("/v1/users")).json(&json!({"name": name})).send().await?;
    ensure!(r.status().as_u16() == 201, "sign-up answered {}", r.status());
    let v: Value = r.json().await?;
    let field = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {k} in {v}"));
    Ok(User { id: field("id")?, token: field("token")? })
}

/// One request as `user` on `node`; answers status and JSON body (`Null` when there is none).
async fn call(
    c: &Cluster,
    node: u64,
    user: &User,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let client = plain_client()?;
    let url = c.node(node).url(path);
    let mut request = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    request = request.bearer_auth(&user.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// [`call`], retrying 503s (no leader yet); only for requests that are safe to repeat.
pub(crate) async fn call_ok(
    c: &Cluster,
    node: u64,
    user: &User,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    wait_for_result("an answer other than 503", FORM, || async {
        let (status, v) = call(c, node, user, method, path, body.clone()).await?;
        Ok((status != 503).then_some((status, v)))
    })
    .await
}

/// Sends `body` to `to` as `from` through `node` (a resend with the same `client_msg_id` is
/// safe); answers status and body.
pub(crate) async fn send(c: &Cluster, node: u64, from: &User, to: &str, id: &str, body: &str) -> Result<(u16, Value)> {
    let message = json!({"to": to, "client_msg_id": id, "body": body});
    call_ok(c, node, from, "POST", "/v1/chat/messages", Some(message)).await
}

async fn sent_seq(c: &Cluster, node: u64, from: &User, to: &str, id: &str, body: &str) -> Result<u64> {
    let (status, v) = send(c, node, from, to, id, body).await?;
    ensure!(status == 201, "send answered {status}: {v}");
    v["seq"].as_u64().ok_or_else(|| anyhow!("no seq in {v}"))
}

/// One history page of `user` with `peer` on `node`: (seq, from, body) newest first, and
/// `next_before_seq`.
async fn page(
    c: &Cluster,
    node: u64,
    user: &User,
    peer: &str,
    query: &str,
) -> Result<(Vec<(u64, String, String)>, Option<u64>)> {
    let path = format!("/v1/chat/conversations/{peer}/messages{query}");
    let (status, v) = call_ok(c, node, user, "GET", &path, None).await?;
    ensure!(status == 200, "history answered {status}: {v}");
    let messages = v["messages"]
        .as_array()
        .ok_or_else(|| anyhow!("no messages in {v}"))?
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (m["seq"].as_u64().unwrap_or(0), s("from"), s("body"))
        })
        .collect();
    Ok((messages, v["next_before_seq"].as_u64()))
}

/// The whole history, oldest first, read page by page.
pub(crate) async fn full_history(
    c: &Cluster,
    node: u64,
    user: &User,
    peer: &str,
) -> Result<Vec<(u64, String, String)>> {
    let mut all = Vec::new();
    let mut query = "?limit=200".to_string();
    loop {
        let (messages, next) = page(c, node, user, peer, &query).await?;
        all.extend(messages);
        match next {
            Some(before) => query = format!("?limit=200&before_seq={before}"),
            None => break,
        }
    }
    all.reverse();
    Ok(all)
}

pub(crate) async fn conversations(c: &Cluster, node: u64, user: &User) -> Result<Vec<Value>> {
    let (status, v) = call_ok(c, node, user, "GET", "/v1/chat/conversations", None).await?;
    ensure!(status == 200, "conversations answered {status}: {v}");
    v["conversations"].as_array().cloned().ok_or_else(|| anyhow!("no conversations in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_on_different_nodes_exchange_messages_and_see_the_same_history() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 2, "bob").await?;
    let cat = sign_up(&c, 3, "cat").await?;
    // Ann writes through node 1, Bob through node 2, taking turns.
    let script = [(&ann, 1, "hi bob"), (&bob, 2, "hi ann"), (&ann, 1, "lunch?"), (&ann, 1, "at noon"), (&bob, 2, "ok")];
    for (i, (from, node, body)) in script.iter().enumerate() {
        let to = if from.id == ann.id { &bob.id } else { &ann.id };
        assert_eq!(sent_seq(&c, *node, from, to, &format!("m{i}"), body).await?, i as u64 + 1);
    }
    let expected: Vec<(u64, String, String)> = script
        .iter()
        .enumerate()
        .map(|(i, (from, _, body))| (i as u64 + 1, from.id.clone(), body.to_string()))
        .collect();
    // The same history for both, through every node.
    for node in [1, 2, 3] {
        assert_eq!(full_history(&c, node, &ann, &bob.id).await?, expected, "ann on node {node}");
        assert_eq!(full_history(&c, node, &bob, &ann.id).await?, expected, "bob on node {node}");
    }
    // A later conversation with Cat comes first in Ann's list.
    sent_seq(&c, 3, &cat, &ann.id, "c0", "hello from cat").await?;
    let list = conversations(&c, 2, &ann).await?;
    let view: Vec<(&str, u64, u64)> = list
        .iter()
        .map(|v| {
            (
                v["peer"].as_str().unwrap_or(""),
                v["last_message"]["seq"].as_u64().unwrap_or(0),
                v["unread"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(view, [(cat.id.as_str(), 1, 1), (bob.id.as_str(), 5, 2)], "{list:?}");
    assert_eq!(list[1]["last_message"]["body"], "ok");
    assert_eq!(list[1]["last_message"]["from"], bob.id.as_str());
    let mut pair = [ann.id.clone(), bob.id.clone()];
    pair.sort();
    assert_eq!(list[1]["conversation_id"], pair.join(":"));
    // Bob has not read Ann's three (seqs 1, 3, 4); once he has read up to 3, one is left.
    let bobs = conversations(&c, 3, &bob).await?;
    assert_eq!((bobs.len(), bobs[0]["unread"].as_u64()), (1, Some(3)), "{bobs:?}");
    let read = format!("/v1/chat/conversations/{}/read", ann.id);
    let (status, v) = call_ok(&c, 1, &bob, "POST", &read, Some(json!({"seq": 3}))).await?;
    assert_eq!((status, v["read_seq"].as_u64()), (200, Some(3)), "{v}");
    // Never back.
    let (status, v) = call_ok(&c, 2, &bob, "POST", &read, Some(json!({"seq": 2}))).await?;
    assert_eq!((status, v["read_seq"].as_u64()), (200, Some(3)), "{v}");
    assert_eq!(conversations(&c, 1, &bob).await?[0]["unread"].as_u64(), Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_gets_the_same_seq_and_one_stored_message() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let (status, first) = send(&c, 1, &ann, &bob.id, "retry-me", "only once").await?;
    assert_eq!(status, 201, "{first}");
    // Resent through other nodes: 200 with the first answer.
    for node in [2, 3] {
        let (status, again) = send(&c, node, &ann, &bob.id, "retry-me", "only once").await?;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, first, "node {node}");
    }
    assert_eq!(first["seq"], 1);
    assert_eq!(first["client_msg_id"], "retry-me");
    // The same id from Bob is his own message.
    assert_eq!(sent_seq(&c, 2, &bob, &ann.id, "retry-me", "mine").await?, 2);
    let history = full_history(&c, 3, &bob, &ann.id).await?;
    assert_eq!(history, [(1, ann.id.clone(), "only once".to_string()), (2, bob.id.clone(), "mine".to_string())]);
    let duplicates = c.metric(2, "shoal_chat_messages_total{outcome=\"duplicate\"}").await;
    assert_eq!(duplicates, Some(1.0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_naming_the_field() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 2, "bob").await?;
    let b = bob.id.as_str();
    let long_body = "x".repeat(4097);
    let long_id = "c".repeat(129);
    for (body, status, code, field) in [
        (json!({"to": b, "client_msg_id": "c1", "body": ""}), 400, "invalid_message_body", "body"),
        (json!({"to": b, "client_msg_id": "c1", "body": long_body}), 400, "invalid_message_body", "body"),
        (json!({"to": b, "client_msg_id": "", "body": "hi"}), 400, "invalid_client_msg_id", "client_msg_id"),
        (json!({"to": b, "client_msg_id": long_id, "body": "hi"}), 400, "invalid_client_msg_id", "client_msg_id"),
        (json!({"to": b, "client_msg_id": "tab\tid", "body": "hi"}), 400, "invalid_client_msg_id", "client_msg_id"),
        (json!({"to": ann.id, "client_msg_id": "c1", "body": "hi"}), 400, "invalid_to", "to"),
        (json!({"to": "u/../x", "client_msg_id": "c1", "body": "hi"}), 400, "invalid_to", "to"),
        (
            json!({"to": "u00000000deadbeef", "client_msg_id": "c1", "body": "hi"}),
            404,
            "user_not_found",
            "u00000000deadbeef",
        ),
        (json!({"client_msg_id": "c1", "body": "hi"}), 400, "invalid_body", "to"),
        (json!({"to": b, "client_msg_id": 7, "body": "hi"}), 400, "invalid_body", "client_msg_id"),
    ] {
        let (got, v) = call_ok(&c, 1, &ann, "POST", "/v1/chat/messages", Some(body.clone())).await?;
        assert_eq!((got, v["error"]["code"].as_str()), (status, Some(code)), "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: the message names {field}: {message}");
    }
    // Nothing was stored.
    assert!(conversations(&c, 2, &ann).await?.is_empty());
    assert_eq!(c.metric(1, "shoal_chat_messages_total{outcome=\"rejected\"}").await, Some(10.0));
    // The maximum size is fine.
    sent_seq(&c, 1, &ann, b, "c1", &"é".repeat(2048)).await?;
    // History and read cursors.
    let history = format!("/v1/chat/conversations/{b}/messages");
    for (query, code) in
        [("?limit=0", "invalid_limit"), ("?limit=201", "invalid_limit"), ("?before_seq=x", "invalid_before_seq")]
    {
        let (status, v) = call_ok(&c, 2, &ann, "GET", &format!("{history}{query}"), None).await?;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some(code)), "{query}: {v}");
    }
    let (status, v) = call_ok(&c, 2, &ann, "GET", "/v1/chat/conversations/u00000000deadbeef/messages", None).await?;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("user_not_found")), "{v}");
    let read = format!("/v1/chat/conversations/{b}/read");
    let (status, v) = call_ok(&c, 3, &ann, "POST", &read, Some(json!({"seq": 2}))).await?;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_seq")), "{v}");
    let (status, v) = call_ok(&c, 3, &ann, "POST", &read, Some(json!({"seq": -1}))).await?;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_body")), "{v}");
    // No token: 401; the admin has no conversations: 403.
    let r = plain_client()?.get(c.node(1).url("/v1/chat/conversations")).send().await?;
    assert_eq!(r.status().as_u16(), 401);
    let admin = User { id: "admin".into(), token: cluster_tests::harness::ADMIN_TOKEN.into() };
    let (status, v) = call_ok(&c, 1, &admin, "GET", "/v1/chat/conversations", None).await?;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("user_required")), "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_newest_first_until_the_first_message() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 2, "bob").await?;
    for i in 1..=7u64 {
        assert_eq!(sent_seq(&c, 1 + i % 3, &ann, &bob.id, &format!("m{i}"), &format!("body {i}")).await?, i);
    }
    let seqs = |page: &[(u64, String, String)]| page.iter().map(|m| m.0).collect::<Vec<_>>();
    let (first, next) = page(&c, 2, &bob, &ann.id, "?limit=3").await?;
    assert_eq!((seqs(&first), next), (vec![7, 6, 5], Some(5)));
    assert_eq!(first[0].2, "body 7");
    let (second, next) = page(&c, 3, &bob, &ann.id, "?limit=3&before_seq=5").await?;
    assert_eq!((seqs(&second), next), (vec![4, 3, 2], Some(2)));
    let (last, next) = page(&c, 1, &bob, &ann.id, "?limit=3&before_seq=2").await?;
    assert_eq!((seqs(&last), next), (vec![1], None));
    // Exactly everything in one page: no next page. The default page holds all seven.
    let (all, next) = page(&c, 1, &ann, &bob.id, "?limit=7").await?;
    assert_eq!((seqs(&all), next), ((1..=7).rev().collect::<Vec<u64>>(), None));
    let (all, next) = page(&c, 1, &ann, &bob.id, "").await?;
    assert_eq!((all.len(), next), (7, None));
    // Two users who never wrote: an empty history.
    let cat = sign_up(&c, 3, "cat").await?;
    assert_eq!(page(&c, 3, &cat, &ann.id, "").await?, (Vec::new(), None));
    Ok(())
}

/// What the failover test's senders got acknowledged, in the order the answers came:
/// (sender id, body, seq).
type Acked = Arc<Mutex<Vec<(String, String, u64)>>>;

fn acked_count(acked: &Acked) -> usize {
    acked.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// A closed-loop sender of `from` to `to`: one message at a time, each retried with the same
/// `client_msg_id` until acknowledged, on the next of `nodes` after any failure (a killed node
/// refuses connections). Answers (attempts, acknowledgements that were 200: a resend of a
/// message already stored).
fn spawn_sender(
    view: &Arc<Cluster>,
    from: &User,
    to: &User,
    nodes: Vec<u64>,
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    let (view, acked, stop, from, to) =
        (Arc::clone(view), Arc::clone(acked), Arc::clone(stop), from.clone(), to.id.clone());
    tokio::spawn(async move {
        let (mut attempts, mut resent_stored, mut at) = (0u64, 0u64, 0usize);
        // Bounded: the stop flag, and at most 2,000 messages.
        for i in 0..2_000u64 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (id, body) = (format!("m{i}"), format!("{} says {i}", from.id));
            loop {
                attempts += 1;
                let message = json!({"to": to, "client_msg_id": id, "body": body});
                match call(&view, nodes[at % nodes.len()], &from, "POST", "/v1/chat/messages", Some(message)).await {
                    Ok((status @ (200 | 201), v)) => {
                        resent_stored += u64::from(status == 200);
                        let seq = v["seq"].as_u64().unwrap_or(0);
                        acked.lock().unwrap_or_else(|e| e.into_inner()).push((from.id.clone(), body.clone(), seq));
                        break;
                    }
                    _ => {
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
        (attempts, resent_stored)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_leader_sigkill_exactly_once_and_in_order() -> Result<()> {
    let mut c = led(&ClusterSpec::new(3)).await?;
    let view = Arc::new(c.client_view());
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let mut pair = [ann.id.clone(), bob.id.clone()];
    pair.sort();
    let group = shoal::placement::partition_of(&pair.join(":"), 4);
    let leader = wait_for("the conversation's partition leader", FORM, || leader_of(&c, 1, group)).await?;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
    // Both write at once: Ann through the leader (requests in flight when it dies have an
    // unknown outcome and are resent elsewhere), Bob through a node that survives (its forwards
    // fail until a new leader is elected).
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders = [
        spawn_sender(&view, &ann, &bob, [vec![leader], others.clone()].concat(), &acked, &stop),
        spawn_sender(&view, &bob, &ann, others.clone(), &acked, &stop),
    ];
    wait_for("30 messages acknowledged before the kill", Duration::from_secs(30), || async {
        (acked_count(&acked) >= 30).then_some(())
    })
    .await?;
    c.kill(leader)?;
    let at_kill = acked_count(&acked);
    wait_for("30 messages acknowledged after the kill", Duration::from_secs(30), || async {
        (acked_count(&acked) >= at_kill + 30).then_some(())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let (mut attempts, mut resent_stored) = (0, 0);
    for sender in senders {
        let (a, r) = sender.await?;
        attempts += a;
        resent_stored += r;
    }
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!(
        "killed node {leader} (leader of group {group}) after {at_kill} acks; {} acked in {attempts} attempts, \
         {resent_stored} answered 200 (a resend of a message already stored)",
        acked.len()
    );
    // Each sender's messages got increasing seqs, in the order it sent them.
    for user in [&ann, &bob] {
        let seqs: Vec<u64> = acked.iter().filter(|a| a.0 == user.id).map(|a| a.2).collect();
        assert!(seqs.len() >= 10, "{} got only {} messages through", user.id, seqs.len());
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{}'s seqs are not increasing: {seqs:?}", user.id);
    }
    // Together: each seq once, dense from 1 (every sender stopped after an acknowledgement,
    // so nothing unacknowledged was stored).
    let mut expected: Vec<(u64, String, String)> =
        acked.iter().map(|(from, body, seq)| (*seq, from.clone(), body.clone())).collect();
    expected.sort();
    let seqs: Vec<u64> = expected.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=acked.len() as u64).collect::<Vec<_>>(), "acknowledged seqs");
    // The stored history is exactly the acknowledged messages, once each, through both survivors.
    for node in others {
        assert_eq!(full_history(&view, node, &bob, &ann.id).await?, expected, "history through node {node}");
    }
    Ok(())
}
