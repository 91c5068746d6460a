//! Chat: one-on-one conversations over WebSockets and HTTP, sequenced and stored through Raft.
//!
//! A conversation (the sorted pair of user ids) lives in the partition of its id; its messages,
//! read and delivered cursors, dedupe entries and the members' index rows are that partition's
//! rows ([`state`]). Sends, read cursors and acks are Raft commands on the conversation's
//! partition; a user's conversation list is a scatter over every partition (each holds the
//! index rows of the conversations it owns). Reads are linearizable.
//!
//! Sessions ([`session`]) live on whichever node a client reached; a committed message or
//! receipt reaches them through [`delivery`]. See "Chat" in `docs/design.md`.

pub mod delivery;
pub mod http;
pub mod metrics;
pub mod presence;
pub mod session;
pub mod state;

use std::sync::Arc;
use std::time::Instant;

use self::delivery::{ChatPeer, ChatPeerReply, Event, Pusher, Sessions};
pub use self::metrics::ChatMetrics;
use self::state::{Answer, Command, Query, Rejection, Reply};
pub use self::state::{Chat, CursorRec, MessageRec, Summary};
use super::client::{CallError, Client, Route};
use super::peer::PeerMessage;
use super::{Consistency, Payload, users};
use crate::NodeId;
use crate::config::ChatSection;
use crate::membership::Membership;
use crate::storage::records::RecordError;
use crate::transport::Transport;

/// `query` on every partition at once; fails when any cannot answer (a partial answer would
/// look like missing conversations).
pub(crate) async fn scatter(
    client: &Client,
    query: &Query,
    consistency: Consistency,
) -> Result<Vec<Answer>, ChatError> {
    let reads = (1..=client.partitions()).map(|group| client.read::<Chat>(Route::Partition(group), query, consistency));
    let answers = futures::future::join_all(reads).await;
    Ok(answers.into_iter().collect::<Result<Vec<_>, _>>()?)
}

/// Users remembered as existing, at most.
const KNOWN_USERS: u64 = 100_000;

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// No user has this id.
    #[error("no user has the id `{0}`")]
    UnknownUser(String),
    /// Sender and recipient are the same user.
    #[error("a conversation needs two different users")]
    SameUser,
    /// A read cursor beyond the conversation's last message.
    #[error("seq {seq} is beyond the conversation's last message ({last})")]
    BeyondLast {
        /// The seq asked for.
        seq: u64,
        /// The conversation's last seq.
        last: u64,
    },
    /// The cluster could not answer (see the inner error for whether anything happened).
    #[error(transparent)]
    Cluster(#[from] CallError),
    /// An answer of the wrong kind (a node of another build, or a bug).
    #[error("{0}")]
    Internal(String),
    /// Nobody can answer now (a partition without a leader); retry.
    #[error("{0}")]
    Unavailable(String),
}

pub(crate) fn unexpected<T: std::fmt::Debug>(what: T) -> ChatError {
    ChatError::Internal(format!("unexpected answer {what:?}"))
}

/// A message's place after a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The conversation.
    pub conversation_id: String,
    /// The message's seq.
    pub seq: u64,
    /// Its time, Unix milliseconds (the first send's, for a resend).
    pub sent_at: u64,
    /// A resend of a stored message: nothing new was stored.
    pub duplicate: bool,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Newest first.
    pub messages: Vec<MessageRec>,
    /// Where the next (older) page starts, when there is one.
    pub next_before_seq: Option<u64>,
}

/// Chat on one node: its sessions and pushes; everything else is in the partitions.
pub struct ChatService {
    cfg: ChatSection,
    client: Client,
    metrics: ChatMetrics,
    sessions: Arc<Sessions>,
    pusher: Arc<Pusher>,
    presence: Arc<presence::Presence>,
    known_users: moka::future::Cache<String, ()>,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService").finish_non_exhaustive()
    }
}

impl ChatService {
    /// Chat over `client`, pushing to the other members over `transport`.
    pub fn new(
        cfg: ChatSection,
        metrics: ChatMetrics,
        client: Client,
        transport: Arc<Transport>,
        membership: Arc<Membership>,
    ) -> Self {
        let sessions = Sessions::new(cfg.session_queue, metrics.clone());
        let node_id = membership.node_id();
        let pusher = Pusher::new(Arc::clone(&transport), membership, metrics.clone());
        let presence = presence::Presence::new(
            node_id,
            client.clone(),
            transport,
            Arc::clone(&sessions),
            Arc::clone(&pusher),
            cfg.heartbeat,
            cfg.offline_after,
            metrics.clone(),
        );
        let known_users = moka::future::Cache::new(KNOWN_USERS);
        Self { cfg, client, metrics, sessions, pusher, presence, known_users }
    }

    /// The sessions connected here.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Presence.
    pub fn presence(&self) -> &Arc<presence::Presence> {
        &self.presence
    }

    /// The pusher's loop (a background task).
    pub fn pusher(&self) -> Arc<Pusher> {
        Arc::clone(&self.pusher)
    }

    /// Shows `event` to the sessions of its users, here and on every other node.
    fn deliver(&self, event: Event) {
        let event = Arc::new(event);
        self.sessions.deliver(&event);
        self.pusher.push(event);
    }

    /// Serves a [`ChatPeer`] message from another node.
    pub fn on_peer(&self, from: NodeId, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
        let reply = match ChatPeer::decode(payload)? {
            ChatPeer::Push(events) => {
                tracing::trace!(from, events = events.len(), "chat push");
                let mut reached = 0u32;
                for event in events {
                    reached = reached.saturating_add(self.sessions.deliver(&Arc::new(event)));
                }
                ChatPeerReply::Pushed(reached)
            }
            ChatPeer::Live { users, fresh } => self.presence.note_live(users, fresh),
            ChatPeer::Presence(user) => self.presence.local_answer(&user),
        };
        <ChatPeer as PeerMessage>::Reply::encode(&reply)
    }

    /// The configuration.
    pub fn config(&self) -> &ChatSection {
        &self.cfg
    }

    /// The instruments.
    pub fn metrics(&self) -> &ChatMetrics {
        &self.metrics
    }

    /// Fails unless a user has the id `id`. Users are never deleted, so a user found once is
    /// remembered (a bounded cache): a send costs no user lookup after the first.
    pub async fn check_user(&self, id: &str) -> Result<(), ChatError> {
        if self.known_users.contains_key(id) {
            return Ok(());
        }
        match users::by_id(&self.client, id).await? {
            Some(_) => {
                self.known_users.insert(id.to_string(), ()).await;
                Ok(())
            }
            None => Err(ChatError::UnknownUser(id.to_string())),
        }
    }

    /// Sends `body` from `from` to `to`, stamped now by this node. A resend of
    /// `client_msg_id` within 24 h answers the first send's seq and stores nothing.
    pub async fn send(&self, from: &str, to: &str, client_msg_id: &str, body: &str) -> Result<Sent, ChatError> {
        if from == to {
            return Err(ChatError::SameUser);
        }
        self.check_user(to).await?;
        let conv = state::conversation_id(from, to);
        let command = Command::Send {
            from: from.to_string(),
            to: to.to_string(),
            client_msg_id: client_msg_id.to_string(),
            body: body.to_string(),
            sent_at: super::urls::now_ms(),
        };
        let sent = match self.client.propose::<Chat>(conv.as_str(), &command).await? {
            Ok(Reply::Sent { conversation_id, seq, sent_at, duplicate }) => {
                Sent { conversation_id, seq, sent_at, duplicate }
            }
            Err(Rejection::SameUser) => return Err(ChatError::SameUser),
            other => return Err(unexpected(other)),
        };
        // A resend is delivered again (the first send's node may have died before it pushed),
        // with the stored body: sessions that had it drop it by seq.
        let body = if sent.duplicate {
            match self.after(from, to, sent.seq - 1, 1).await?.into_iter().next() {
                Some(m) if m.seq == sent.seq => m.body,
                _ => return Ok(sent),
            }
        } else {
            body.to_string()
        };
        self.deliver(Event::Message {
            conversation_id: sent.conversation_id.clone(),
            seq: sent.seq,
            from: from.to_string(),
            to: to.to_string(),
            body,
            sent_at: sent.sent_at,
        });
        Ok(sent)
    }

    /// Moves `user`'s delivered cursor with `peer` forward to `seq`; answers the cursor.
    pub async fn ack(&self, user: &str, peer: &str, seq: u64) -> Result<u64, ChatError> {
        let conv = state::conversation_id(user, peer);
        let command = Command::Ack { user: user.to_string(), peer: peer.to_string(), seq };
        match self.client.propose::<Chat>(conv.as_str(), &command).await? {
            Ok(Reply::Acked { delivered_seq }) => Ok(delivered_seq),
            Err(Rejection::BeyondLast { last }) => Err(ChatError::BeyondLast { seq, last }),
            Err(Rejection::SameUser) => Err(ChatError::SameUser),
            other => Err(unexpected(other)),
        }
    }

    /// Messages of the conversation of `user` and `peer` after `after_seq`, oldest first
    /// (linearizable).
    pub async fn after(
        &self,
        user: &str,
        peer: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<MessageRec>, ChatError> {
        let conv = state::conversation_id(user, peer);
        let query = Query::After { user: user.to_string(), peer: peer.to_string(), after_seq, limit };
        match self.client.read::<Chat>(conv.as_str(), &query, Consistency::Linearizable).await? {
            Answer::Messages(messages) => Ok(messages),
            other => Err(unexpected(other)),
        }
    }

    /// Where `user` stands in every conversation: one linearizable read of every partition.
    pub async fn cursors(&self, user: &str) -> Result<Vec<CursorRec>, ChatError> {
        let query = Query::Cursors { user: user.to_string() };
        let mut all = Vec::new();
        for answer in scatter(&self.client, &query, Consistency::Linearizable).await? {
            match answer {
                Answer::Cursors(some) => all.extend(some),
                other => return Err(unexpected(other)),
            }
        }
        Ok(all)
    }

    /// Moves `reader`'s read cursor with `peer` forward to `seq`; answers the cursor.
    pub async fn read(&self, reader: &str, peer: &str, seq: u64) -> Result<u64, ChatError> {
        if reader == peer {
            return Err(ChatError::SameUser);
        }
        self.check_user(peer).await?;
        let conv = state::conversation_id(reader, peer);
        let command = Command::Read { reader: reader.to_string(), peer: peer.to_string(), seq };
        match self.client.propose::<Chat>(conv.as_str(), &command).await? {
            Ok(Reply::Read { read_seq }) => {
                self.deliver(Event::Receipt {
                    conversation_id: conv,
                    seq: read_seq,
                    reader: reader.to_string(),
                    peer: peer.to_string(),
                });
                Ok(read_seq)
            }
            Err(Rejection::BeyondLast { last }) => Err(ChatError::BeyondLast { seq, last }),
            Err(Rejection::SameUser) => Err(ChatError::SameUser),
            other => Err(unexpected(other)),
        }
    }

    /// A page of the conversation of `user` and `peer`, newest first (linearizable).
    pub async fn history(
        &self,
        user: &str,
        peer: &str,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Page, ChatError> {
        if user == peer {
            return Err(ChatError::SameUser);
        }
        self.check_user(peer).await?;
        let conv = state::conversation_id(user, peer);
        let query = Query::History { user: user.to_string(), peer: peer.to_string(), before_seq, limit };
        match self.client.read::<Chat>(conv.as_str(), &query, Consistency::Linearizable).await? {
            Answer::History { messages, next_before_seq } => Ok(Page { messages, next_before_seq }),
            other => Err(unexpected(other)),
        }
    }

    /// Every conversation of `user`, newest message first: one linearizable read of every
    /// partition, concurrently. Fails when any partition cannot answer (a list missing
    /// conversations would look like lost messages).
    pub async fn conversations(&self, user: &str) -> Result<Vec<Summary>, ChatError> {
        let started = Instant::now();
        let query = Query::Conversations { user: user.to_string() };
        let mut all = Vec::new();
        for answer in scatter(&self.client, &query, Consistency::Linearizable).await? {
            match answer {
                Answer::Conversations(some) => all.extend(some),
                other => return Err(unexpected(other)),
            }
        }
        all.sort_by(|x, y| {
            (y.last_message.sent_at, &y.conversation_id).cmp(&(x.last_message.sent_at, &x.conversation_id))
        });
        self.metrics.list_seconds.observe(started.elapsed().as_secs_f64());
        Ok(all)
    }
}
