//! Chat, first slice: one-on-one conversations over HTTP, sequenced and stored through Raft.
//!
//! A conversation (the sorted pair of user ids) lives in the partition of its id; its messages,
//! read cursors, dedupe entries and the members' index rows are that partition's rows
//! ([`state`]). Sends and read cursors are Raft commands on the conversation's partition; a
//! user's conversation list is a scatter over every partition (each holds the index rows of
//! the conversations it owns). Reads are linearizable.
//!
//! Not here yet (the WebSocket slice): sessions, live delivery, delivered cursors, presence,
//! routing between nodes, backpressure. See "Chat" in `docs/design.md`.

pub mod http;
pub mod metrics;
pub mod state;

use std::time::Instant;

pub use self::metrics::ChatMetrics;
use self::state::{Answer, Command, Query, Rejection, Reply};
pub use self::state::{Chat, MessageRec, Summary};
use super::client::{CallError, Client, Route};
use super::{Consistency, users};
use crate::config::ChatSection;

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
}

fn unexpected<T: std::fmt::Debug>(what: T) -> ChatError {
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

/// Chat on one node: stateless apart from its configuration and instruments.
pub struct ChatService {
    cfg: ChatSection,
    client: Client,
    metrics: ChatMetrics,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService").finish_non_exhaustive()
    }
}

impl ChatService {
    /// Chat over `client`.
    pub fn new(cfg: ChatSection, metrics: ChatMetrics, client: Client) -> Self {
        Self { cfg, client, metrics }
    }

    /// The configuration.
    pub fn config(&self) -> &ChatSection {
        &self.cfg
    }

    /// The instruments.
    pub fn metrics(&self) -> &ChatMetrics {
        &self.metrics
    }

    /// Fails unless a user has the id `id`.
    pub async fn check_user(&self, id: &str) -> Result<(), ChatError> {
        match users::by_id(&self.client, id).await? {
            Some(_) => Ok(()),
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
        match self.client.propose::<Chat>(conv.as_str(), &command).await? {
            Ok(Reply::Sent { conversation_id, seq, sent_at, duplicate }) => {
                Ok(Sent { conversation_id, seq, sent_at, duplicate })
            }
            Err(Rejection::SameUser) => Err(ChatError::SameUser),
            other => Err(unexpected(other)),
        }
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
            Ok(Reply::Read { read_seq }) => Ok(read_seq),
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
        let reads = (1..=self.client.partitions()).map(|group| {
            let query = &query;
            async move { self.client.read::<Chat>(Route::Partition(group), query, Consistency::Linearizable).await }
        });
        let mut all = Vec::new();
        for answer in futures::future::join_all(reads).await {
            match answer? {
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
