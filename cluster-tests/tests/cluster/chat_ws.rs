//! Chat over WebSockets, driven by a real WebSocket client library (tokio-tungstenite): live
//! delivery between nodes in `seq` order, offline delivery after the delivered cursor on
//! reconnect, several sessions of one user, resends, bad frames, and no message answered `sent`
//! lost or doubled when the conversation's partition leader or the recipient's node is
//! SIGKILLed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, anyhow, bail, ensure};
use cluster_tests::api::leader_of;
use cluster_tests::chat::{ChatSocket, Incoming, Refused};
use cluster_tests::harness::{Cluster, ClusterSpec, FORM, plain_client, wait_for, wait_for_result};
use serde_json::{Value, json};

use crate::chat::{User, conversations, send, sign_up};
use crate::led;

/// How long one frame may take to come.
const FRAME: Duration = Duration::from_secs(20);

fn conv(x: &User, y: &User) -> String {
    let mut pair = [x.id.as_str(), y.id.as_str()];
    pair.sort_unstable();
    pair.join(":")
}

/// A received `message`: (seq, from, body).
type Got = (u64, String, String);

fn got_of(frame: &Value) -> Result<Got> {
    let seq = frame["seq"].as_u64().ok_or_else(|| anyhow!("no seq in {frame}"))?;
    let s = |k: &str| frame[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {k} in {frame}"));
    Ok((seq, s("from")?, s("body")?))
}

/// Connects `user` to `node`, retrying while the node cannot resync it yet (it closes with
/// 1011) or cannot check the token (503).
async fn connect(c: &Cluster, node: u64, user: &User) -> Result<ChatSocket> {
    let http = c.node(node).http;
    wait_for_result("a chat session", FORM, || async {
        match ChatSocket::connect(http, Some(&user.token), false).await {
            Ok(socket) => Ok(Some(socket)),
            Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 503) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Reads frames until `want` messages arrived; fails on an `error` frame or a close.
async fn receive(socket: &mut ChatSocket, want: usize) -> Result<Vec<Got>> {
    let mut got = Vec::new();
    while got.len() < want {
        let frame = socket.frame(FRAME).await?;
        match frame["type"].as_str() {
            Some("message") => got.push(got_of(&frame)?),
            Some("error") => bail!("error frame {frame}"),
            _ => {}
        }
    }
    Ok(got)
}

/// Sends one message and resends it (same `client_msg_id`) after each retryable `error` until
/// it is answered `sent`; other frames are skipped. Answers its seq.
async fn send_until_sent(socket: &mut ChatSocket, to: &str, id: &str, body: &str) -> Result<u64> {
    socket.send_message(to, id, body).await?;
    loop {
        let f = socket.frame(FRAME).await?;
        match f["type"].as_str() {
            Some("sent") if f["client_msg_id"] == id => return f["seq"].as_u64().ok_or_else(|| anyhow!("{f}")),
            Some("error") if f["client_msg_id"] == id => {
                let wait = f["retry_after_ms"].as_u64().ok_or_else(|| anyhow!("not retryable: {f}"))?;
                tokio::time::sleep(Duration::from_millis(wait.min(1000))).await;
                socket.send_message(to, id, body).await?;
            }
            _ => {}
        }
    }
}

/// Sends `n` messages to `peer`, each after the previous one's `sent`, while taking every
/// frame; acks every 100th message; then reads until `total` messages of the conversation
/// arrived. Answers the messages in arrival order.
async fn converse(mut socket: ChatSocket, me: User, peer: User, n: usize, total: usize) -> Result<Vec<Got>> {
    let conversation = conv(&me, &peer);
    let mut got: Vec<Got> = Vec::new();
    let mut sent = 0;
    let mut waiting: Option<String> = None;
    while got.len() < total || waiting.is_some() || sent < n {
        if waiting.is_none() && sent < n {
            let id = format!("{}-{sent}", me.id);
            socket.send_message(&peer.id, &id, &format!("{} #{sent}", me.id)).await?;
            waiting = Some(id);
            sent += 1;
        }
        let frame = socket.frame(FRAME).await?;
        match frame["type"].as_str() {
            Some("sent") => {
                ensure!(frame["client_msg_id"].as_str() == waiting.as_deref(), "unexpected {frame}");
                waiting = None;
            }
            Some("message") => {
                got.push(got_of(&frame)?);
                if got.len() % 100 == 0 {
                    socket.ack(&conversation, got.len() as u64).await?;
                }
            }
            Some("presence") => {}
            _ => bail!("unexpected frame {frame}"),
        }
    }
    socket.close().await;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_on_different_nodes_exchange_1000_messages_each_way_in_order_without_gaps_or_duplicates() -> Result<()>
{
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 2, "bob").await?;
    let (a, b) = (connect(&c, 1, &ann).await?, connect(&c, 2, &bob).await?);
    const N: usize = 1000;
    let ann_side = tokio::spawn(converse(a, ann.clone(), bob.clone(), N, 2 * N));
    let bob_side = tokio::spawn(converse(b, bob.clone(), ann.clone(), N, 2 * N));
    let (ann_got, bob_got) = (ann_side.await??, bob_side.await??);
    for (who, got) in [("ann", &ann_got), ("bob", &bob_got)] {
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (1..=2 * N as u64).collect::<Vec<_>>(), "{who}'s session: every seq once, in order");
        for sender in [&ann, &bob] {
            let bodies: Vec<&str> = got.iter().filter(|g| g.1 == sender.id).map(|g| g.2.as_str()).collect();
            let expected: Vec<String> = (0..N).map(|i| format!("{} #{i}", sender.id)).collect();
            assert_eq!(bodies, expected, "{who} got {}'s messages in the order they were sent", sender.id);
        }
    }
    // The acks reached the store: each user's delivered cursor is its last ack.
    wait_for("both delivered cursors at 2000", FORM, || async {
        let a = conversations(&c, 1, &ann).await.ok()?;
        let b = conversations(&c, 2, &bob).await.ok()?;
        let cursor = |v: &[Value]| v.first().and_then(|x| x["delivered_seq"].as_u64());
        (cursor(&a) == Some(2 * N as u64) && cursor(&b) == Some(2 * N as u64)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_gets_what_was_sent_meanwhile_after_its_cursor_on_another_node() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 2, "bob").await?;
    let mut bob_on_2 = connect(&c, 2, &bob).await?;
    for i in 1..=5 {
        let (status, v) = send(&c, 1, &ann, &bob.id, &format!("m{i}"), &format!("hello {i}")).await?;
        ensure!(status == 201, "send answered {status}: {v}");
    }
    let first = receive(&mut bob_on_2, 5).await?;
    assert_eq!(first.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    bob_on_2.ack(&conv(&ann, &bob), 5).await?;
    wait_for("bob's delivered cursor at 5", FORM, || async {
        let v = conversations(&c, 3, &bob).await.ok()?;
        (v.first()?["delivered_seq"].as_u64()? == 5).then_some(())
    })
    .await?;
    bob_on_2.close().await;
    // Bob is offline: 20 more.
    for i in 6..=25 {
        let (status, v) = send(&c, 1, &ann, &bob.id, &format!("m{i}"), &format!("hello {i}")).await?;
        ensure!(status == 201, "send answered {status}: {v}");
    }
    // He comes back on another node, with his token in the query string.
    let mut bob_on_3 = ChatSocket::connect(c.node(3).http, Some(&bob.token), true).await?;
    let resync = receive(&mut bob_on_3, 20).await?;
    let expected: Vec<Got> = (6..=25).map(|i| (i, ann.id.clone(), format!("hello {i}"))).collect();
    assert_eq!(resync, expected, "exactly what followed the cursor, in order");
    // Then live messages, with nothing repeated in between.
    let (status, _) = send(&c, 2, &ann, &bob.id, "m26", "live").await?;
    ensure!(status == 201);
    assert_eq!(receive(&mut bob_on_3, 1).await?, [(26, ann.id.clone(), "live".to_string())]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_of_one_user_on_different_nodes_both_receive_everything() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let mut phone = connect(&c, 2, &bob).await?;
    let mut laptop = connect(&c, 3, &bob).await?;
    let mut ann_socket = connect(&c, 1, &ann).await?;
    for node in [2, 3] {
        assert_eq!(c.metric(node, "shoal_chat_sessions").await, Some(1.0), "one session on node {node}");
    }
    for i in 1..=50 {
        ann_socket.send_message(&bob.id, &format!("m{i}"), &format!("hi {i}")).await?;
    }
    let expected: Vec<Got> = (1..=50).map(|i| (i, ann.id.clone(), format!("hi {i}"))).collect();
    // Ann's sends may commit in any order; each session shows them in seq order.
    for (name, socket) in [("phone", &mut phone), ("laptop", &mut laptop)] {
        let got = receive(socket, 50).await?;
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>(), "{name}");
        let mut bodies: Vec<String> = got.iter().map(|g| g.2.clone()).collect();
        bodies.sort();
        let mut want: Vec<String> = expected.iter().map(|g| g.2.clone()).collect();
        want.sort();
        assert_eq!(bodies, want, "{name} got every message");
    }
    // A message from the phone reaches the laptop too (and Ann).
    phone.send_message(&ann.id, "from-phone", "sent from the phone").await?;
    let on_laptop = receive(&mut laptop, 1).await?;
    assert_eq!(on_laptop, [(51, bob.id.clone(), "sent from the phone".to_string())]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_client_msg_id_gets_the_same_seq_and_is_delivered_once() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let mut a = connect(&c, 1, &ann).await?;
    let mut b = connect(&c, 2, &bob).await?;
    let mut sent = Vec::new();
    for id in ["x", "x", "y"] {
        a.send_message(&bob.id, id, &format!("body {id}")).await?;
        loop {
            let f = a.frame(FRAME).await?;
            if f["type"] == "sent" {
                sent.push((f["client_msg_id"].as_str().unwrap_or_default().to_string(), f["seq"].as_u64()));
                break;
            }
        }
    }
    assert_eq!(sent, [("x".into(), Some(1)), ("x".into(), Some(1)), ("y".into(), Some(2))]);
    let got = receive(&mut b, 2).await?;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2], "x once, then y");
    let (status, v) =
        crate::chat::call_ok(&c, 3, &bob, "GET", &format!("/v1/chat/conversations/{}/messages", ann.id), None).await?;
    ensure!(status == 200);
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(2), "one stored x: {v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_an_error_naming_the_field_and_oversized_ones_close_with_1009() -> Result<()> {
    let c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    // Handshakes: no token, a bad token, not a WebSocket at all.
    let refused = |e: anyhow::Error| e.downcast::<Refused>().map_err(|e| anyhow!("not refused: {e}"));
    let r = refused(ChatSocket::connect(c.node(1).http, None, false).await.err().ok_or_else(|| anyhow!("accepted"))?)?;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (401, Some("missing_token")));
    let r = refused(
        ChatSocket::connect(c.node(1).http, Some("nope"), true).await.err().ok_or_else(|| anyhow!("accepted"))?,
    )?;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (401, Some("invalid_token")));
    let plain = plain_client()?.get(c.node(1).url("/v1/chat/ws")).bearer_auth(&ann.token).send().await?;
    assert_eq!(plain.status().as_u16(), 426);
    let body: Value = plain.json().await?;
    assert_eq!(body["error"]["code"], "upgrade_required");

    let mut a = connect(&c, 1, &ann).await?;
    let cases: Vec<(String, &str, &str)> = vec![
        ("{not json".into(), "invalid_frame", ""),
        (json!({"type": "shout"}).to_string(), "invalid_frame", "shout"),
        (json!({"type": "send", "to": bob.id, "body": "x"}).to_string(), "invalid_frame", "client_msg_id"),
        (json!({"type": "send", "to": ann.id, "client_msg_id": "c", "body": "x"}).to_string(), "invalid_to", "to"),
        (json!({"type": "send", "to": "u0", "client_msg_id": "c", "body": "x"}).to_string(), "user_not_found", "u0"),
        (
            json!({"type": "send", "to": bob.id, "client_msg_id": "c", "body": "b".repeat(4097)}).to_string(),
            "invalid_message_body",
            "body",
        ),
        (json!({"type": "ack", "conversation_id": "ux:uy", "seq": 1}).to_string(), "invalid_conversation_id", "ux:uy"),
        (json!({"type": "ack", "conversation_id": conv(&ann, &bob), "seq": 3}).to_string(), "invalid_seq", "seq 3"),
    ];
    for (frame, code, mentions) in cases {
        a.send_text(frame.clone()).await?;
        let answer = a.frame(FRAME).await?;
        assert_eq!(answer["type"], "error", "{frame} → {answer}");
        assert_eq!(answer["code"], code, "{frame} → {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(mentions), "{frame} → {answer} should mention {mentions}");
        // The connection stays open.
        a.send_json(&json!({"type": "ping"})).await?;
        assert_eq!(a.frame(FRAME).await?["type"], "pong", "after {frame}");
    }
    // A frame over chat.max_frame_bytes (16 KiB) closes the connection with 1009.
    a.send_text(json!({"type": "send", "to": bob.id, "client_msg_id": "big", "body": "b".repeat(20_000)}).to_string())
        .await?;
    assert_eq!(a.next(FRAME).await?, Incoming::Closed(Some(1009)));
    Ok(())
}

/// One user's side of the failover test: sends `ids` in order, each resent on `error` (after
/// its `retry_after_ms`) until `sent`; gathers `message` frames until the conversation holds
/// `until_total()` messages. Answers (client_msg_id → seq) and the messages received.
async fn send_through_failover(
    mut socket: ChatSocket,
    me: User,
    peer: User,
    count: usize,
    done_sending: tokio::sync::watch::Sender<usize>,
    mut total: tokio::sync::watch::Receiver<Option<u64>>,
) -> Result<(BTreeMap<String, u64>, Vec<Got>)> {
    let mut acked = BTreeMap::new();
    let mut got: Vec<Got> = Vec::new();
    let mut next = 0;
    let mut waiting = false;
    loop {
        if !waiting && next < count {
            socket.send_message(&peer.id, &format!("{}-{next}", me.id), &format!("{} #{next}", me.id)).await?;
            waiting = true;
        }
        if !waiting
            && let Some(t) = *total.borrow_and_update()
            && got.last().is_some_and(|g| g.0 >= t)
        {
            break;
        }
        let frame = tokio::select! {
            f = socket.frame(FRAME) => f?,
            _ = total.changed(), if !waiting => continue,
        };
        match frame["type"].as_str() {
            Some("sent") => {
                acked.insert(
                    frame["client_msg_id"].as_str().unwrap_or_default().to_string(),
                    frame["seq"].as_u64().unwrap_or(0),
                );
                waiting = false;
                next += 1;
                done_sending.send_replace(next);
            }
            Some("error") => {
                ensure!(frame["retry_after_ms"].as_u64().is_some(), "a send failed for good: {frame}");
                tokio::time::sleep(Duration::from_millis(frame["retry_after_ms"].as_u64().unwrap_or(100).min(1000)))
                    .await;
                let id = format!("{}-{next}", me.id);
                ensure!(frame["client_msg_id"].as_str() == Some(id.as_str()), "error for another send: {frame}");
                socket.send_message(&peer.id, &id, &format!("{} #{next}", me.id)).await?;
            }
            Some("message") => got.push(got_of(&frame)?),
            Some("presence" | "receipt") => {}
            _ => bail!("unexpected frame {frame}"),
        }
    }
    Ok((acked, got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_partition_leader_while_both_send_delivers_every_sent_message_once_in_order() -> Result<()> {
    let mut c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let group = shoal::placement::partition_of(&conv(&ann, &bob), 4);
    let leader = wait_for("the conversation's partition leader", FORM, || leader_of(&c, 1, group)).await?;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
    let (a, b) = (connect(&c, others[0], &ann).await?, connect(&c, others[1], &bob).await?);
    const N: usize = 60;
    let (ann_done, mut ann_progress) = tokio::sync::watch::channel(0);
    let (bob_done, bob_progress) = tokio::sync::watch::channel(0);
    let (total_tx, total_rx) = tokio::sync::watch::channel(None);
    let ann_side = tokio::spawn(send_through_failover(a, ann.clone(), bob.clone(), N, ann_done, total_rx.clone()));
    let bob_side = tokio::spawn(send_through_failover(b, bob.clone(), ann.clone(), N, bob_done, total_rx));
    // A side that fails drops its progress channel: its own error says why.
    let early = |side: &str| anyhow!("{side}'s side ended before it was done");
    if ann_progress.wait_for(|n| *n >= 15).await.is_err() {
        return Err(ann_side.await?.err().unwrap_or_else(|| early("ann")));
    }
    c.kill(leader)?;
    let mut bob_progress = bob_progress;
    if ann_progress.wait_for(|n| *n >= N).await.is_err() {
        return Err(ann_side.await?.err().unwrap_or_else(|| early("ann")));
    }
    if bob_progress.wait_for(|n| *n >= N).await.is_err() {
        return Err(bob_side.await?.err().unwrap_or_else(|| early("bob")));
    }
    // Everything was answered `sent`: the conversation holds exactly 2N messages.
    total_tx.send_replace(Some(2 * N as u64));
    let (ann_acked, ann_got) = ann_side.await??;
    let (bob_acked, bob_got) = bob_side.await??;
    let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
    for (id, seq) in ann_acked.iter().chain(&bob_acked) {
        assert!(by_seq.insert(*seq, id.clone()).is_none(), "seq {seq} answered twice");
    }
    assert_eq!(by_seq.keys().copied().collect::<Vec<_>>(), (1..=2 * N as u64).collect::<Vec<_>>());
    for (who, got) in [("ann", &ann_got), ("bob", &bob_got)] {
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (1..=2 * N as u64).collect::<Vec<_>>(), "{who}: each seq once, in order");
        for (seq, from, body) in got {
            let id = &by_seq[seq];
            let (user, n) = id.split_once('-').ok_or_else(|| anyhow!("bad id {id}"))?;
            assert_eq!((from.as_str(), body.clone()), (user, format!("{user} #{n}")), "{who} seq {seq}");
        }
    }
    eprintln!("killed node {leader}, leader of group {group}; {} messages delivered to both", 2 * N);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_recipients_node_loses_nothing_pending() -> Result<()> {
    let mut c = led(&ClusterSpec::new(3)).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let mut bob_on_3 = connect(&c, 3, &bob).await?;
    let mut ann_on_1 = connect(&c, 1, &ann).await?;
    for i in 1..=10 {
        ann_on_1.send_message(&bob.id, &format!("m{i}"), &format!("hello {i}")).await?;
    }
    let first = receive(&mut bob_on_3, 10).await?;
    assert_eq!(first.iter().map(|g| g.0).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    // Bob acknowledges 5 of them, then his node dies.
    bob_on_3.ack(&conv(&ann, &bob), 5).await?;
    wait_for("bob's delivered cursor at 5", FORM, || async {
        let v = conversations(&c, 1, &bob).await.ok()?;
        (v.first()?["delivered_seq"].as_u64()? == 5).then_some(())
    })
    .await?;
    c.kill(3)?;
    // Ann sends 10 more, each resent until it is answered `sent` (partitions node 3 led fail
    // over meanwhile).
    for i in 11..=20 {
        send_until_sent(&mut ann_on_1, &bob.id, &format!("m{i}"), &format!("hello {i}")).await?;
    }
    // Bob reconnects to node 2 and gets everything after his cursor: 6..=20, once, in order.
    let mut bob_on_2 = connect(&c, 2, &bob).await?;
    let got = receive(&mut bob_on_2, 15).await?;
    let stored = crate::chat::full_history(&c, 2, &bob, &ann.id).await?;
    assert_eq!(stored.len(), 20, "every send stored once");
    assert_eq!(got, stored[5..], "what followed the cursor, once, in order");
    Ok(())
}

/// The next `presence` frame about `user` (other frames are skipped).
async fn presence_frame(socket: &mut ChatSocket, user: &User) -> Result<Value> {
    loop {
        let f = socket.frame(FRAME).await?;
        if f["type"] == "presence" && f["user"] == user.id.as_str() {
            return Ok(f);
        }
    }
}

/// `GET /v1/presence/{user}` on `node` until `online` is as wanted; answers the body.
async fn presence_until(c: &Cluster, node: u64, asker: &User, user: &User, online: bool) -> Result<Value> {
    let path = format!("/v1/presence/{}", user.id);
    wait_for_result(&format!("{} online = {online}", user.id), FORM, || async {
        let (status, v) = crate::chat::call_ok(c, node, asker, "GET", &path, None).await?;
        ensure!(status == 200, "presence answered {status}: {v}");
        Ok((v["online"].as_bool() == Some(online)).then_some(v))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_online_then_offline_after_the_timeout_then_online_again() -> Result<()> {
    let spec = ClusterSpec::new(3).set("chat", "heartbeat = \"300ms\"").set("chat", "offline_after = \"1500ms\"");
    let c = led(&spec).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let (status, _) = send(&c, 1, &ann, &bob.id, "hello", "hello").await?;
    ensure!(status == 201, "they are contacts once they talked");
    let never = presence_until(&c, 3, &ann, &bob, false).await?;
    assert!(never.get("last_seen").is_none(), "never seen: {never}");
    let mut a = connect(&c, 1, &ann).await?;
    a.send_json(&json!({"type": "ping"})).await?;
    while a.frame(FRAME).await?["type"] != "pong" {}
    // Bob connects on another node: Ann is told, and anyone can ask.
    let b = connect(&c, 2, &bob).await?;
    let online = presence_frame(&mut a, &bob).await?;
    assert_eq!(online["online"], true, "{online}");
    presence_until(&c, 3, &ann, &bob, true).await?;
    // He leaves: offline once chat.offline_after passed without a live session.
    let left = std::time::Instant::now();
    b.close().await;
    let offline = presence_frame(&mut a, &bob).await?;
    assert_eq!(offline["online"], false, "{offline}");
    assert!(left.elapsed() >= Duration::from_millis(1000), "offline only after the timeout ({:?})", left.elapsed());
    let body = presence_until(&c, 3, &ann, &bob, false).await?;
    assert!(body["last_seen"].is_string(), "last seen when he went: {body}");
    // And back.
    let _b = connect(&c, 3, &bob).await?;
    assert_eq!(presence_frame(&mut a, &bob).await?["online"], true);
    // An unknown user is 404.
    let (status, v) = crate::chat::call_ok(&c, 1, &ann, "GET", "/v1/presence/u0000000000000000", None).await?;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("user_not_found")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_that_stops_reading_is_closed_with_1013_and_resyncs_everything_on_reconnect() -> Result<()> {
    let spec = ClusterSpec::new(3).set("chat", "session_queue = 16");
    let c = led(&spec).await?;
    let ann = sign_up(&c, 1, "ann").await?;
    let bob = sign_up(&c, 1, "bob").await?;
    let mut b = connect(&c, 2, &bob).await?;
    b.send_json(&json!({"type": "ping"})).await?;
    while b.frame(FRAME).await?["type"] != "pong" {}
    // Bob stops reading. Ann sends 4 KB messages over HTTP, 50 at a time, until his node gives
    // up on him: once the socket buffers are full, his 16-event queue overflows.
    let body = "x".repeat(4000);
    let mut sent = 0u64;
    loop {
        ensure!(sent < 20_000, "bob was not closed as a slow consumer after {sent} messages");
        let ids: Vec<String> = (sent..sent + 50).map(|i| format!("m{i}")).collect();
        let batch = ids.iter().map(|id| send(&c, 1, &ann, &bob.id, id, &body));
        for answer in futures::future::join_all(batch).await {
            let (status, v) = answer?;
            ensure!(status == 201, "send answered {status}: {v}");
        }
        sent += 50;
        if c.metric(2, "shoal_chat_slow_consumer_disconnects_total").await.is_some_and(|n| n >= 1.0) {
            break;
        }
    }
    // What was written before the close comes first, then the close: 1013.
    let mut read = 0u64;
    let code = loop {
        match b.next(FRAME).await? {
            Incoming::Frame(f) if f["type"] == "message" => {
                read += 1;
                assert_eq!(f["seq"].as_u64(), Some(read), "in order before the close");
            }
            Incoming::Frame(_) => {}
            Incoming::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(1013), "closed as too slow after {read} messages");
    // Bob reconnects and gets everything (he never acknowledged a thing), in order.
    // (Pushes of Ann's burst may still be arriving at node 3 while the resync runs: if they
    // overflow the small queue the new session is closed too, and Bob reconnects again, as any
    // client would.)
    let mut attempts = 0;
    let got = loop {
        attempts += 1;
        ensure!(attempts <= 10, "no session got through the resync in 10 attempts");
        let mut again = connect(&c, 3, &bob).await?;
        let mut got = Vec::new();
        let complete = loop {
            match again.next(FRAME).await? {
                Incoming::Frame(f) if f["type"] == "message" => {
                    got.push(got_of(&f)?);
                    if got.len() as u64 == sent {
                        break true;
                    }
                }
                Incoming::Frame(_) => {}
                Incoming::Closed(code) => {
                    assert_eq!(code, Some(1013), "only a slow consumer is closed");
                    break false;
                }
            }
        };
        if complete {
            break got;
        }
    };
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (1..=sent).collect::<Vec<_>>());
    eprintln!("closed after {read} of {sent} messages; all {sent} resent on reconnect ({attempts} attempts)");
    Ok(())
}
