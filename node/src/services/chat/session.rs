//! One WebSocket session: `GET /v1/chat/ws`.
//!
//! A session registers with this node's [`Sessions`](super::delivery::Sessions) first, then
//! resyncs: it reads where its user stands in every conversation (one read of every partition)
//! and sends what follows each delivered cursor, the conversation whose oldest undelivered
//! message is oldest first. Live events queue meanwhile and are written after, in order.
//!
//! Ordering: per conversation the session knows the next seq it owes its client. A message
//! with that seq is written at once; a later one is held until the gap closes, and a gap still
//! open after [`GAP_WAIT`] is filled from the store (a linearizable read: every seq below a
//! committed one is committed). Earlier seqs were written already and are dropped. So the
//! client sees every conversation in `seq` order, with no gap and no duplicate, whatever order
//! pushes arrive in.
//!
//! `ack`s move the user's delivered cursor; the session sends the highest per conversation at
//! most every [`ACK_FLUSH`] (one Raft command per conversation, not per message). A client that
//! reconnects before its ack reached the store gets those messages again, with the seqs it saw.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tracing::debug;

use super::delivery::{Event, Slow};
use super::http::{NewMessage, chat_error, check_message, rfc3339_ms};
use super::{ChatError, ChatService, MessageRec};
use crate::services::api::ApiError;
use crate::util::Backoff;

/// How long a gap may stay open before the session reads it from the store.
pub const GAP_WAIT: Duration = Duration::from_millis(250);
/// How often acknowledged cursors go to the store.
pub const ACK_FLUSH: Duration = Duration::from_millis(100);
/// Sends of one session in flight at most; beyond, `send` gets `too_many_in_flight`.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long a connecting session keeps trying to read where its user stands before it gives up
/// (closing with [`CLOSE_UNAVAILABLE`]).
pub const RESYNC_PATIENCE: Duration = Duration::from_secs(10);
/// Close code: the client sent a frame over `chat.max_frame_bytes`.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the client fell behind (its queue overflowed); reconnect to resync.
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// Close code: the session could not resync (the cluster could not answer); reconnect.
pub const CLOSE_UNAVAILABLE: u16 = 1011;
/// Close code: nothing heard from the client for `chat.offline_after` (not even a pong).
pub const CLOSE_SILENT: u16 = 1001;

/// A client frame.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Send { to: String, client_msg_id: String, body: String },
    Ack { conversation_id: String, seq: u64 },
    Read { conversation_id: String, seq: u64 },
    Ping {},
}

/// A server frame.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Sent {
        client_msg_id: String,
        conversation_id: String,
        seq: u64,
        sent_at: String,
    },
    Message {
        conversation_id: &'a str,
        seq: u64,
        from: &'a str,
        body: &'a str,
        sent_at: String,
    },
    Receipt {
        conversation_id: &'a str,
        seq: u64,
        reader: &'a str,
    },
    Presence {
        user: &'a str,
        online: bool,
        last_seen: String,
    },
    Error {
        code: &'a str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong,
}

impl ServerFrame<'_> {
    fn text(&self) -> Utf8Bytes {
        // Plain strings and numbers: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default().into()
    }

    fn error(e: ApiError, client_msg_id: Option<String>) -> ServerFrame<'static> {
        ServerFrame::Error {
            code: e.code,
            message: e.message,
            client_msg_id,
            retry_after_ms: e.retry_after.map(|s| s.max(1) * 1000),
        }
    }
}

/// The two members of `conversation_id` when `user` is one: `(user, peer)`.
fn peer_in<'a>(conversation_id: &'a str, user: &str) -> Option<&'a str> {
    let (a, b) = conversation_id.split_once(':')?;
    if a == user && b != user {
        Some(b)
    } else if b == user && a != user {
        Some(a)
    } else {
        None
    }
}

/// One conversation's ordering state.
#[derive(Default)]
struct Order {
    /// The next seq the client is owed.
    next: u64,
    /// Seqs above `next` that arrived early.
    held: BTreeMap<u64, Arc<Event>>,
    /// When the current gap opened.
    gap_since: Option<Instant>,
    /// The user's delivered cursor as far as this session knows (acked by this client, or
    /// found at resync).
    acked: u64,
}

/// Puts each conversation's messages in `seq` order (see the module docs).
#[derive(Default)]
struct Sequencer {
    convs: HashMap<String, Order>,
}

impl Sequencer {
    fn order(&mut self, conversation_id: &str) -> &mut Order {
        self.convs.entry(conversation_id.to_string()).or_insert_with(|| Order { next: 1, ..Order::default() })
    }

    /// Takes `event`; answers what can be written now, in order.
    fn offer(&mut self, event: Arc<Event>) -> Vec<Arc<Event>> {
        let Event::Message { conversation_id, seq, .. } = &*event else { return vec![event] };
        let seq = *seq;
        let order = self.order(conversation_id);
        if seq < order.next {
            return Vec::new();
        }
        if seq > order.next {
            order.held.insert(seq, event);
            order.gap_since.get_or_insert_with(Instant::now);
            return Vec::new();
        }
        let mut out = vec![event];
        order.next += 1;
        while let Some(e) = order.held.remove(&order.next) {
            out.push(e);
            order.next += 1;
        }
        order.gap_since = if order.held.is_empty() { None } else { Some(Instant::now()) };
        // Anything held below `next` arrived twice.
        let next = order.next;
        order.held.retain(|s, _| *s >= next);
        out
    }

    /// The earliest time a gap should be filled from the store.
    fn next_deadline(&self) -> Option<Instant> {
        self.convs.values().filter_map(|o| o.gap_since).min().map(|t| t + GAP_WAIT)
    }

    /// Conversations whose gap is due: `(conversation, next, first held)`.
    fn due(&self, now: Instant) -> Vec<(String, u64, u64)> {
        self.convs
            .iter()
            .filter(|(_, o)| o.gap_since.is_some_and(|t| t + GAP_WAIT <= now))
            .filter_map(|(c, o)| o.held.keys().next().map(|first| (c.clone(), o.next, *first)))
            .collect()
    }
}

/// The socket's sending half.
type Sink = SplitSink<WebSocket, WsMessage>;

/// A session's state.
struct Session {
    chat: Arc<ChatService>,
    user: String,
    order: Sequencer,
    /// Acks not yet sent to the store: conversation → seq.
    acks: HashMap<String, u64>,
    /// Messages written here and not acknowledged (what this session adds to the gauge).
    unacked: i64,
    /// Raised when the session's queue overflowed.
    slow: Arc<Slow>,
}

/// Why a session ended on the server's side.
enum End {
    /// The socket failed or closed.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

impl Session {
    fn set_unacked(&mut self) {
        let now: i64 =
            self.order.convs.values().map(|o| (o.next.saturating_sub(1)).saturating_sub(o.acked) as i64).sum();
        self.chat.metrics().pending.add(now - self.unacked);
        self.unacked = now;
    }

    /// Writes `events` (already in order).
    async fn write(&mut self, sink: &mut Sink, events: Vec<Arc<Event>>) -> Result<(), End> {
        if events.is_empty() {
            return Ok(());
        }
        let mut texts = Vec::with_capacity(events.len());
        for event in &events {
            let text = match &**event {
                Event::Message { conversation_id, seq, from, body, sent_at, .. } => {
                    ServerFrame::Message { conversation_id, seq: *seq, from, body, sent_at: rfc3339_ms(*sent_at) }
                        .text()
                }
                Event::Receipt { conversation_id, seq, reader, .. } => {
                    ServerFrame::Receipt { conversation_id, seq: *seq, reader }.text()
                }
                Event::Presence { user, online, last_seen, .. } => {
                    ServerFrame::Presence { user, online: *online, last_seen: rfc3339_ms(*last_seen) }.text()
                }
            };
            texts.push(WsMessage::Text(text));
        }
        guarded(sink, texts, &self.slow, self.chat.config().offline_after).await?;
        let now = super::super::urls::now_ms();
        let metrics = self.chat.metrics();
        for event in &events {
            if let Event::Message { sent_at, .. } = &**event {
                metrics.delivered.with_label_values(&["written"]).inc();
                metrics.delivery_seconds.observe(now.saturating_sub(*sent_at) as f64 / 1000.0);
            }
        }
        self.set_unacked();
        Ok(())
    }

    /// Sends everything after the user's delivered cursors, oldest pending conversation first.
    async fn resync(&mut self, sink: &mut Sink) -> Result<(), ChatError> {
        let mut cursors = self.chat.cursors(&self.user).await?;
        cursors.sort_by(|x, y| (x.first_pending_at, &x.conversation_id).cmp(&(y.first_pending_at, &y.conversation_id)));
        // A retried resync keeps what an earlier attempt wrote.
        for c in &cursors {
            let order = self.order.order(&c.conversation_id);
            order.next = order.next.max(c.delivered_seq + 1);
            order.acked = order.acked.max(c.delivered_seq);
        }
        for c in cursors.iter().filter(|c| c.delivered_seq < c.last_seq) {
            loop {
                let next = self.order.order(&c.conversation_id).next;
                let page = self.chat.after(&self.user, &c.peer, next - 1, super::state::MAX_PAGE).await?;
                let short = page.len() < super::state::MAX_PAGE as usize;
                let ready = self.offer_stored(&c.conversation_id, &c.peer, page);
                if self.write(sink, ready).await.is_err() {
                    return Ok(());
                }
                if short {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Offers messages read from the store.
    fn offer_stored(&mut self, conversation_id: &str, peer: &str, page: Vec<MessageRec>) -> Vec<Arc<Event>> {
        let mut ready = Vec::new();
        for m in page {
            let to = if m.from == self.user { peer.to_string() } else { self.user.clone() };
            let event = Event::Message {
                conversation_id: conversation_id.to_string(),
                seq: m.seq,
                from: m.from,
                to,
                body: m.body,
                sent_at: m.sent_at,
            };
            ready.extend(self.order.offer(Arc::new(event)));
        }
        if !ready.is_empty() {
            self.chat.metrics().delivered.with_label_values(&["from_store"]).inc_by(ready.len() as u64);
        }
        ready
    }

    /// Reads the gaps that are due from the store and writes what closes.
    async fn fill_gaps(&mut self, sink: &mut Sink) -> Result<(), End> {
        for (conv, next, first_held) in self.order.due(Instant::now()) {
            let Some(peer) = peer_in(&conv, &self.user).map(str::to_string) else { continue };
            let limit = (first_held - next).min(u64::from(super::state::MAX_PAGE)) as u32;
            match self.chat.after(&self.user, &peer, next - 1, limit).await {
                Ok(page) => {
                    let ready = self.offer_stored(&conv, &peer, page);
                    self.write(sink, ready).await?;
                }
                Err(e) => {
                    debug!(conversation = %conv, error = %e, "could not fill a gap; trying again");
                    if let Some(o) = self.order.convs.get_mut(&conv) {
                        o.gap_since = Some(Instant::now());
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles one client text frame; answers the frame to write back, if any.
    fn on_frame(
        &mut self,
        text: &str,
        replies: &mpsc::Sender<String>,
        in_flight: &Arc<Semaphore>,
    ) -> Option<ServerFrame<'static>> {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let message = format!(
                    "{e}; expected {{\"type\": \"send\" | \"ack\" | \"read\" | \"ping\", ...}} as in the API reference"
                );
                return Some(ServerFrame::Error {
                    code: "invalid_frame",
                    message,
                    client_msg_id: None,
                    retry_after_ms: None,
                });
            }
        };
        match frame {
            ClientFrame::Ping {} => Some(ServerFrame::Pong),
            ClientFrame::Send { to, client_msg_id, body } => {
                let new = NewMessage { to, client_msg_id, body };
                if let Err(e) = check_message(&new, self.chat.config().max_body_bytes) {
                    self.chat.metrics().messages.with_label_values(&["rejected"]).inc();
                    return Some(ServerFrame::error(e, Some(new.client_msg_id)));
                }
                if new.to == self.user {
                    let e = chat_error(ChatError::SameUser);
                    return Some(ServerFrame::error(e, Some(new.client_msg_id)));
                }
                let Ok(permit) = Arc::clone(in_flight).try_acquire_owned() else {
                    return Some(ServerFrame::Error {
                        code: "too_many_in_flight",
                        message: format!("at most {MAX_IN_FLIGHT} sends may wait for `sent` on one connection"),
                        client_msg_id: Some(new.client_msg_id),
                        retry_after_ms: Some(100),
                    });
                };
                let chat = Arc::clone(&self.chat);
                let from = self.user.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let outcome = chat.send(&from, &new.to, &new.client_msg_id, &new.body).await;
                    let label = match &outcome {
                        Ok(s) if s.duplicate => "duplicate",
                        Ok(_) => "sent",
                        Err(ChatError::Cluster(_) | ChatError::Internal(_)) => "failed",
                        Err(_) => "rejected",
                    };
                    chat.metrics().messages.with_label_values(&[label]).inc();
                    let frame = match outcome {
                        Ok(sent) => ServerFrame::Sent {
                            client_msg_id: new.client_msg_id,
                            conversation_id: sent.conversation_id,
                            seq: sent.seq,
                            sent_at: rfc3339_ms(sent.sent_at),
                        },
                        Err(e) => ServerFrame::error(chat_error(e), Some(new.client_msg_id)),
                    };
                    // The session may be gone: nothing to tell then.
                    let _ = replies.send(frame.text().to_string()).await;
                    drop(permit);
                });
                None
            }
            ClientFrame::Ack { conversation_id, seq } => {
                if peer_in(&conversation_id, &self.user).is_none() {
                    return Some(not_yours(&conversation_id));
                }
                let order = self.order.order(&conversation_id);
                // A client can only acknowledge what it was sent.
                if seq >= order.next {
                    let message =
                        format!("seq {seq} was not delivered on this connection (the last was {})", order.next - 1);
                    return Some(ServerFrame::Error {
                        code: "invalid_seq",
                        message,
                        client_msg_id: None,
                        retry_after_ms: None,
                    });
                }
                if seq > order.acked {
                    order.acked = seq;
                    let pending = self.acks.entry(conversation_id).or_default();
                    *pending = (*pending).max(seq);
                    self.set_unacked();
                }
                None
            }
            ClientFrame::Read { conversation_id, seq } => {
                let Some(peer) = peer_in(&conversation_id, &self.user).map(str::to_string) else {
                    return Some(not_yours(&conversation_id));
                };
                let chat = Arc::clone(&self.chat);
                let user = self.user.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    if let Err(e) = chat.read(&user, &peer, seq).await {
                        let _ = replies.send(ServerFrame::error(chat_error(e), None).text().to_string()).await;
                    }
                });
                None
            }
        }
    }

    /// Sends the acks gathered since the last flush, one command per conversation.
    fn flush_acks(&mut self, replies: &mpsc::Sender<String>) {
        for (conv, seq) in self.acks.drain() {
            let Some(peer) = peer_in(&conv, &self.user).map(str::to_string) else { continue };
            let chat = Arc::clone(&self.chat);
            let user = self.user.clone();
            let replies = replies.clone();
            tokio::spawn(async move {
                if let Err(e) = chat.ack(&user, &peer, seq).await {
                    debug!(user = %user, conversation = %conv, error = %e, "ack not stored");
                    let _ = replies.send(ServerFrame::error(chat_error(e), None).text().to_string()).await;
                }
            });
        }
    }
}

fn not_yours(conversation_id: &str) -> ServerFrame<'static> {
    ServerFrame::Error {
        code: "invalid_conversation_id",
        message: format!("conversation_id `{conversation_id}` is not a conversation of yours"),
        client_msg_id: None,
        retry_after_ms: None,
    }
}

/// Writes `messages`, unless the session falls behind meanwhile (its queue overflows: close
/// with 1013) or the client takes `within` to take them (gone).
async fn guarded(sink: &mut Sink, messages: Vec<WsMessage>, slow: &Slow, within: Duration) -> Result<(), End> {
    let writing = async {
        for m in messages {
            sink.feed(m).await?;
        }
        sink.flush().await
    };
    tokio::select! {
        written = writing => written.map_err(|_| End::Gone),
        () = slow.wait() => Err(End::Close(CLOSE_TRY_AGAIN, "too slow: reconnect to resync")),
        () = tokio::time::sleep(within) => Err(End::Gone),
    }
}

/// How long a close frame may take to go out.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

async fn close(sink: &mut Sink, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = tokio::time::timeout(CLOSE_WITHIN, sink.send(WsMessage::Close(Some(frame)))).await;
}

/// Runs the session of `user` on `socket` until either side ends it.
pub async fn run(chat: Arc<ChatService>, user: String, socket: WebSocket) {
    let mut registration = chat.sessions().register(&user);
    // The user's owner hears of this session now, not at the next heartbeat.
    let presence = Arc::clone(chat.presence());
    let live = vec![user.clone()];
    tokio::spawn(async move { presence.report(live, true).await });
    let (mut sink, mut stream) = socket.split();
    let mut session = Session {
        chat: Arc::clone(&chat),
        user,
        order: Sequencer::default(),
        acks: HashMap::new(),
        unacked: 0,
        slow: Arc::clone(&registration.slow),
    };
    // A partition without a leader (a failover under way) holds the resync up, within reason.
    let give_up = Instant::now() + RESYNC_PATIENCE;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        match session.resync(&mut sink).await {
            Ok(()) => break,
            Err(ChatError::Cluster(e)) if Instant::now() < give_up => {
                debug!(error = %e, "resync failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                let frame = ServerFrame::error(chat_error(e), None);
                let _ = tokio::time::timeout(CLOSE_WITHIN, sink.send(WsMessage::Text(frame.text()))).await;
                close(&mut sink, CLOSE_UNAVAILABLE, "could not resync; reconnect").await;
                session.chat.metrics().pending.sub(session.unacked);
                return;
            }
        }
    }
    let (replies_tx, mut replies) = mpsc::channel::<String>(MAX_IN_FLIGHT + 16);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let max_frame = chat.config().max_frame_bytes;
    let mut flush = tokio::time::interval(ACK_FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (heartbeat, offline_after) = (chat.config().heartbeat, chat.config().offline_after);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let slow = Arc::clone(&registration.slow);
    let end = loop {
        let gap = session.order.next_deadline();
        let step = tokio::select! {
            incoming = stream.next() => {
                heard = Instant::now();
                match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    if text.len() > max_frame {
                        break End::Close(CLOSE_TOO_BIG, "frame over chat.max_frame_bytes");
                    }
                    match session.on_frame(text.as_str(), &replies_tx, &in_flight) {
                        Some(frame) => guarded(&mut sink, vec![WsMessage::Text(frame.text())], &slow, offline_after).await,
                        None => Ok(()),
                    }
                }
                Some(Ok(WsMessage::Binary(bytes))) => {
                    if bytes.len() > max_frame {
                        break End::Close(CLOSE_TOO_BIG, "frame over chat.max_frame_bytes");
                    }
                    let frame = ServerFrame::Error {
                        code: "invalid_frame",
                        message: "frames are JSON text; binary frames are not accepted".into(),
                        client_msg_id: None,
                        retry_after_ms: None,
                    };
                    guarded(&mut sink, vec![WsMessage::Text(frame.text())], &slow, offline_after).await
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Ok(()),
                Some(Ok(WsMessage::Close(_))) | None => Err(End::Gone),
                Some(Err(e)) => {
                    debug!(error = %e, "websocket read failed");
                    // Over the size limit of the WebSocket layer itself.
                    if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                        break End::Close(CLOSE_TOO_BIG, "frame over chat.max_frame_bytes");
                    }
                    Err(End::Gone)
                }
            }},
            Some(event) = registration.events.recv() => {
                let ready = session.order.offer(event);
                session.write(&mut sink, ready).await
            },
            Some(text) = replies.recv() => {
                guarded(&mut sink, vec![WsMessage::Text(text.into())], &slow, offline_after).await
            }
            () = slow.wait() => Err(End::Close(CLOSE_TRY_AGAIN, "too slow: reconnect to resync")),
            () = sleep_until(gap), if gap.is_some() => session.fill_gaps(&mut sink).await,
            // Only while acks wait: an idle session arms no 100 ms timer (10,000 idle sessions
            // cost 33,000 wake-ups a second per node before). Re-armed after a pause, the
            // overdue tick fires at once and the next comes ACK_FLUSH later.
            _ = flush.tick(), if !session.acks.is_empty() => {
                session.flush_acks(&replies_tx);
                Ok(())
            }
            _ = ping.tick() => {
                if heard.elapsed() >= offline_after {
                    Err(End::Close(CLOSE_SILENT, "nothing heard within chat.offline_after"))
                } else {
                    guarded(&mut sink, vec![WsMessage::Ping(Default::default())], &slow, offline_after).await
                }
            }
        };
        if let Err(end) = step {
            break end;
        }
    };
    session.flush_acks(&replies_tx);
    if let End::Close(code, reason) = end {
        if code == CLOSE_TRY_AGAIN {
            chat.metrics().slow_consumers.inc();
        }
        close(&mut sink, code, reason).await;
    }
    chat.metrics().pending.sub(session.unacked);
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conv: &str, seq: u64) -> Arc<Event> {
        Arc::new(Event::Message {
            conversation_id: conv.into(),
            seq,
            from: "ua".into(),
            to: "ub".into(),
            body: format!("m{seq}"),
            sent_at: 1,
        })
    }

    fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
        events
            .iter()
            .map(|e| match &**e {
                Event::Message { seq, .. } => *seq,
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn messages_come_out_in_seq_order_without_gaps_or_duplicates() {
        let mut s = Sequencer::default();
        assert_eq!(seqs(&s.offer(message("ua:ub", 1))), [1]);
        assert_eq!(seqs(&s.offer(message("ua:ub", 3))), Vec::<u64>::new(), "held: 2 is missing");
        assert!(s.next_deadline().is_some());
        assert_eq!(seqs(&s.offer(message("ua:ub", 1))), Vec::<u64>::new(), "a duplicate");
        assert_eq!(seqs(&s.offer(message("ua:ub", 4))), Vec::<u64>::new());
        assert_eq!(seqs(&s.offer(message("ua:ub", 2))), [2, 3, 4], "the gap closes");
        assert!(s.next_deadline().is_none());
        assert_eq!(seqs(&s.offer(message("ua:ub", 3))), Vec::<u64>::new(), "late duplicate");
        // Conversations are independent.
        assert_eq!(seqs(&s.offer(message("ua:uc", 1))), [1]);
        assert_eq!(seqs(&s.offer(message("ua:ub", 5))), [5]);
    }

    #[test]
    fn a_gap_is_due_for_the_store_only_after_the_wait() {
        let mut s = Sequencer::default();
        s.offer(message("ua:ub", 1));
        s.offer(message("ua:ub", 5));
        let now = Instant::now();
        assert!(s.due(now).is_empty(), "not yet");
        let later = now + GAP_WAIT + Duration::from_millis(1);
        assert_eq!(s.due(later), [("ua:ub".to_string(), 2, 5)]);
    }

    #[test]
    fn client_frames_name_the_bad_field() {
        let parse = |t: &str| serde_json::from_str::<ClientFrame>(t).map_err(|e| e.to_string());
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping {})));
        assert!(parse(r#"{"type":"send","to":"u1","body":"x"}"#).unwrap_err().contains("client_msg_id"));
        assert!(parse(r#"{"type":"ack","conversation_id":"a:b","seq":"x"}"#).is_err());
        assert!(parse(r#"{"type":"shout"}"#).unwrap_err().contains("shout"));
        assert!(parse(r#"{"type":"ping","extra":1}"#).unwrap_err().contains("extra"));
        assert!(parse("[]").is_err());
    }

    #[test]
    fn only_members_name_a_conversation() {
        assert_eq!(peer_in("ua:ub", "ua"), Some("ub"));
        assert_eq!(peer_in("ua:ub", "ub"), Some("ua"));
        assert_eq!(peer_in("ua:ub", "uc"), None);
        assert_eq!(peer_in("ua:ua", "ua"), None);
        assert_eq!(peer_in("uaub", "ua"), None);
    }
}
