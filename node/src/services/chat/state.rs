//! Chat's replicated state, all in the partition of the conversation (the sorted pair of user
//! ids, [`conversation_id`]):
//!
//! - `c/{conv}`: the conversation ([`ConvRec`]): last seq and time, and per member the messages
//!   sent and the read cursor;
//! - `m/{conv}/{seq:020}`: the messages ([`MessageRec`]), seq dense from 1;
//! - `d/{conv}/{from}/{client_msg_id}`: dedupe ([`DedupeRec`]), kept [`DEDUPE_FOR_MS`];
//! - `e/{sent_at:020}/{conv}/{from}/{client_msg_id}`: the same dedupe entries in time order
//!   (the value is the `d/` key), so pruning expired ones is a bounded scan from the front;
//! - `u/{user}/{conv}`: the user → conversations index of this partition ([`IndexRec`]), so a
//!   user's conversation list is one scan per partition;
//! - `k/{conv}/{user}`: the user's delivered cursor (a `u64`): every message up to it reached one
//!   of the user's sessions and was acknowledged there; a (re)connecting session gets what
//!   follows it.
//!
//! Time comes only from commands (`sent_at`, stamped by the proposing node), so every replica
//! prunes the same entries.

use rkyv::{Archive, Deserialize, Serialize};

use crate::services::{Kv, KvRead, Payload, Service, ServiceId, StoreError, get};

/// How long a `client_msg_id` is remembered per (conversation, sender).
pub const DEDUPE_FOR_MS: u64 = 24 * 3600 * 1000;
/// Expired dedupe entries one command prunes at most (each send adds one, so pruning keeps up).
pub const PRUNE_PER_APPLY: usize = 16;
/// Conversations of one user one partition answers at most in a list.
pub const LIST_PER_PARTITION: usize = 1000;
/// Messages one history page holds at most.
pub const MAX_PAGE: u32 = 200;

/// The conversation of two users: their ids, sorted, joined by `:` (ids never contain one).
pub fn conversation_id(x: &str, y: &str) -> String {
    if x <= y { format!("{x}:{y}") } else { format!("{y}:{x}") }
}

/// One stored message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MessageRec {
    /// Position in the conversation, dense from 1.
    pub seq: u64,
    /// Sender's user id.
    pub from: String,
    /// The text (UTF-8, checked by the HTTP layer).
    pub body: String,
    /// When the proposing node took it, Unix milliseconds.
    pub sent_at: u64,
    /// Messages the sender has sent in this conversation up to and including this one: what
    /// makes a reader's unread count (peer messages after the cursor) one lookup.
    pub sender_count: u64,
}

/// One member's side of a conversation.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberRec {
    /// User id.
    pub id: String,
    /// Messages this member has sent here.
    pub sent: u64,
    /// Last seq this member has read (0: none); never moves back.
    pub read_seq: u64,
    /// Messages of the other member with seq ≤ `read_seq`.
    pub read_from_peer: u64,
}

/// A conversation (`c/{conv}`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvRec {
    /// The member with the smaller id.
    pub a: MemberRec,
    /// The member with the larger id.
    pub b: MemberRec,
    /// Seq of the last message (0: none yet).
    pub last_seq: u64,
    /// `sent_at` of the last message.
    pub last_sent_at: u64,
}

impl ConvRec {
    fn new(x: &str, y: &str) -> Self {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        let member = |id: &str| MemberRec { id: id.to_string(), ..MemberRec::default() };
        Self { a: member(a), b: member(b), last_seq: 0, last_sent_at: 0 }
    }

    /// `user`'s side and the other's (`None`: not a member).
    fn sides_mut(&mut self, user: &str) -> Option<(&mut MemberRec, &mut MemberRec)> {
        if self.a.id == user {
            Some((&mut self.a, &mut self.b))
        } else if self.b.id == user {
            Some((&mut self.b, &mut self.a))
        } else {
            None
        }
    }

    /// Messages of `user`'s peer after `user`'s read cursor.
    pub fn unread(&self, user: &str) -> u64 {
        let (me, peer) = if self.a.id == user { (&self.a, &self.b) } else { (&self.b, &self.a) };
        peer.sent.saturating_sub(me.read_from_peer)
    }
}

/// A remembered `client_msg_id` (`d/…`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DedupeRec {
    /// The seq the first send got.
    pub seq: u64,
    /// Its `sent_at`.
    pub sent_at: u64,
}

/// One conversation of a user in this partition (`u/{user}/{conv}`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IndexRec {
    /// The other member.
    pub peer: String,
    /// Seq of the last message.
    pub last_seq: u64,
    /// `sent_at` of the last message.
    pub last_sent_at: u64,
}

/// Chat's commands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Appends a message unless (conversation, `from`, `client_msg_id`) was seen in the last
    /// [`DEDUPE_FOR_MS`]; answers [`Reply::Sent`].
    Send {
        /// Sender.
        from: String,
        /// Recipient (another user).
        to: String,
        /// The sender's id for this message (the retry key).
        client_msg_id: String,
        /// The text.
        body: String,
        /// Unix milliseconds, stamped by the proposing node: the message's time and the clock
        /// dedupe entries expire by.
        sent_at: u64,
    },
    /// Moves `reader`'s read cursor in the conversation with `peer` forward to `seq`; answers
    /// [`Reply::Read`].
    Read {
        /// The member who read.
        reader: String,
        /// The other member.
        peer: String,
        /// Last seq read.
        seq: u64,
    },
    /// Moves `user`'s delivered cursor in the conversation with `peer` forward to `seq`;
    /// answers [`Reply::Acked`].
    Ack {
        /// The member whose session acknowledged.
        user: String,
        /// The other member.
        peer: String,
        /// Last seq received.
        seq: u64,
    },
}

/// Chat's command answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The message's place.
    Sent {
        /// The conversation.
        conversation_id: String,
        /// Its seq.
        seq: u64,
        /// Its time (the first send's, for a duplicate).
        sent_at: u64,
        /// A resend of a message stored before: nothing was stored now.
        duplicate: bool,
    },
    /// The reader's cursor after the command (unchanged if `seq` was behind it).
    Read {
        /// Last seq read.
        read_seq: u64,
    },
    /// The delivered cursor after the command (unchanged if `seq` was behind it).
    Acked {
        /// Last seq delivered.
        delivered_seq: u64,
    },
}

/// Why a chat command changed nothing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Sender and recipient (or reader and peer) are the same user.
    #[error("a conversation needs two different users")]
    SameUser,
    /// A read cursor beyond the conversation's last message.
    #[error("the conversation's last message is {last}")]
    BeyondLast {
        /// The conversation's last seq.
        last: u64,
    },
}

/// Chat's queries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Messages of the conversation of `user` and `peer` before `before_seq` (none: from the
    /// newest), newest first, at most `limit` (capped at [`MAX_PAGE`]).
    History {
        /// One member.
        user: String,
        /// The other.
        peer: String,
        /// Only seqs below this.
        before_seq: Option<u64>,
        /// Page size.
        limit: u32,
    },
    /// `user`'s conversations in this partition (at most [`LIST_PER_PARTITION`]).
    Conversations {
        /// The user.
        user: String,
    },
    /// Where `user` stands in each of their conversations in this partition (at most
    /// [`LIST_PER_PARTITION`]): what a connecting session resumes from.
    Cursors {
        /// The user.
        user: String,
    },
    /// The other members of `user`'s conversations in this partition (at most
    /// [`LIST_PER_PARTITION`]).
    Contacts {
        /// The user.
        user: String,
    },
    /// Messages of the conversation of `user` and `peer` after `after_seq`, oldest first, at
    /// most `limit` (capped at [`MAX_PAGE`]).
    After {
        /// One member.
        user: String,
        /// The other.
        peer: String,
        /// Only seqs above this.
        after_seq: u64,
        /// Page size.
        limit: u32,
    },
}

/// Where a user stands in one conversation.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CursorRec {
    /// The conversation.
    pub conversation_id: String,
    /// The other member.
    pub peer: String,
    /// The user's delivered cursor (0: nothing acknowledged yet).
    pub delivered_seq: u64,
    /// The conversation's last seq.
    pub last_seq: u64,
    /// `sent_at` of the first message after the cursor (of the last one when none is).
    pub first_pending_at: u64,
}

/// One conversation as a list shows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The conversation.
    pub conversation_id: String,
    /// The other member.
    pub peer: String,
    /// The newest message.
    pub last_message: MessageRec,
    /// Messages of the peer after the user's read cursor.
    pub unread: u64,
    /// The user's delivered cursor: every message up to it was acknowledged by a session.
    pub delivered_seq: u64,
}

/// Chat's query answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A page of history.
    History {
        /// Newest first.
        messages: Vec<MessageRec>,
        /// Where the next (older) page starts, when there is one.
        next_before_seq: Option<u64>,
    },
    /// Conversations, in no particular order.
    Conversations(Vec<Summary>),
    /// Cursors, in no particular order.
    Cursors(Vec<CursorRec>),
    /// Messages, oldest first.
    Messages(Vec<MessageRec>),
    /// User ids, in no particular order.
    Contacts(Vec<String>),
}

/// See the module docs.
#[derive(Debug)]
pub struct Chat;

fn conv_key(conv: &str) -> Vec<u8> {
    format!("c/{conv}").into_bytes()
}

fn message_key(conv: &str, seq: u64) -> Vec<u8> {
    format!("m/{conv}/{seq:020}").into_bytes()
}

fn dedupe_key(conv: &str, from: &str, client_msg_id: &str) -> Vec<u8> {
    format!("d/{conv}/{from}/{client_msg_id}").into_bytes()
}

const EXPIRY_PREFIX: &[u8] = b"e/";

fn expiry_key(sent_at: u64, dedupe: &[u8]) -> Vec<u8> {
    // `dedupe` starts with `d/`: the expiry key is unique per dedupe entry and time.
    let mut key = format!("e/{sent_at:020}/").into_bytes();
    key.extend_from_slice(dedupe);
    key
}

/// The time in an expiry key.
fn expiry_time(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.get(2..22)?).ok()?.parse().ok()
}

fn index_key(user: &str, conv: &str) -> Vec<u8> {
    format!("u/{user}/{conv}").into_bytes()
}

fn delivered_key(conv: &str, user: &str) -> Vec<u8> {
    format!("k/{conv}/{user}").into_bytes()
}

fn expired(sent_at: u64, now: u64) -> bool {
    sent_at.saturating_add(DEDUPE_FOR_MS) <= now
}

/// Drops up to [`PRUNE_PER_APPLY`] dedupe entries that expired by `now`, oldest first.
fn prune(kv: &mut dyn Kv, now: u64) -> Result<(), StoreError> {
    for (key, dedupe) in kv.scan(EXPIRY_PREFIX, None, PRUNE_PER_APPLY)? {
        let Some(at) = expiry_time(&key) else {
            kv.delete(&key);
            continue;
        };
        if !expired(at, now) {
            break;
        }
        kv.delete(&key);
        // A resend after expiry stored a newer entry under the same key: that one stays.
        if get::<DedupeRec>(kv, &dedupe)?.is_some_and(|d| d.sent_at == at) {
            kv.delete(&dedupe);
        }
    }
    Ok(())
}

fn send(
    kv: &mut dyn Kv,
    from: String,
    to: String,
    client_msg_id: String,
    body: String,
    sent_at: u64,
) -> Result<Result<Reply, Rejection>, StoreError> {
    if from == to {
        return Ok(Err(Rejection::SameUser));
    }
    prune(kv, sent_at)?;
    let conv = conversation_id(&from, &to);
    let dedupe = dedupe_key(&conv, &from, &client_msg_id);
    if let Some(d) = get::<DedupeRec>(kv, &dedupe)?
        && !expired(d.sent_at, sent_at)
    {
        return Ok(Ok(Reply::Sent { conversation_id: conv, seq: d.seq, sent_at: d.sent_at, duplicate: true }));
    }
    let key = conv_key(&conv);
    let mut rec = get::<ConvRec>(kv, &key)?.unwrap_or_else(|| ConvRec::new(&from, &to));
    let seq = rec.last_seq + 1;
    let Some((sender, _)) = rec.sides_mut(&from) else {
        return Err(StoreError::Db(format!("conversation {conv} does not have its member {from}")));
    };
    sender.sent += 1;
    let message = MessageRec { seq, from: from.clone(), body, sent_at, sender_count: sender.sent };
    rec.last_seq = seq;
    rec.last_sent_at = sent_at;
    kv.put(&message_key(&conv, seq), message.encode()?);
    kv.put(&key, rec.encode()?);
    kv.put(&expiry_key(sent_at, &dedupe), dedupe.clone());
    kv.put(&dedupe, DedupeRec { seq, sent_at }.encode()?);
    for (user, peer) in [(&from, &to), (&to, &from)] {
        let index = IndexRec { peer: peer.clone(), last_seq: seq, last_sent_at: sent_at };
        kv.put(&index_key(user, &conv), index.encode()?);
    }
    Ok(Ok(Reply::Sent { conversation_id: conv, seq, sent_at, duplicate: false }))
}

fn read(kv: &mut dyn Kv, reader: String, peer: String, seq: u64) -> Result<Result<Reply, Rejection>, StoreError> {
    if reader == peer {
        return Ok(Err(Rejection::SameUser));
    }
    let conv = conversation_id(&reader, &peer);
    let key = conv_key(&conv);
    let Some(mut rec) = get::<ConvRec>(kv, &key)? else {
        return Ok(if seq == 0 { Ok(Reply::Read { read_seq: 0 }) } else { Err(Rejection::BeyondLast { last: 0 }) });
    };
    if seq > rec.last_seq {
        return Ok(Err(Rejection::BeyondLast { last: rec.last_seq }));
    }
    let Some(message) = get::<MessageRec>(kv, &message_key(&conv, seq.max(1)))? else {
        return Err(StoreError::Db(format!("conversation {conv} misses its message {seq}")));
    };
    let Some((me, _)) = rec.sides_mut(&reader) else {
        return Err(StoreError::Db(format!("conversation {conv} does not have its member {reader}")));
    };
    if seq <= me.read_seq {
        return Ok(Ok(Reply::Read { read_seq: me.read_seq }));
    }
    me.read_seq = seq;
    me.read_from_peer = if message.from == reader { seq - message.sender_count } else { message.sender_count };
    kv.put(&key, rec.encode()?);
    Ok(Ok(Reply::Read { read_seq: seq }))
}

fn ack(kv: &mut dyn Kv, user: String, peer: String, seq: u64) -> Result<Result<Reply, Rejection>, StoreError> {
    if user == peer {
        return Ok(Err(Rejection::SameUser));
    }
    let conv = conversation_id(&user, &peer);
    let last = get::<ConvRec>(kv, &conv_key(&conv))?.map_or(0, |c| c.last_seq);
    if seq > last {
        return Ok(Err(Rejection::BeyondLast { last }));
    }
    let key = delivered_key(&conv, &user);
    let now = get::<u64>(kv, &key)?.unwrap_or(0);
    if seq <= now {
        return Ok(Ok(Reply::Acked { delivered_seq: now }));
    }
    kv.put(&key, seq.encode()?);
    Ok(Ok(Reply::Acked { delivered_seq: seq }))
}

fn cursors(kv: &dyn KvRead, user: &str) -> Result<Answer, StoreError> {
    let prefix = format!("u/{user}/").into_bytes();
    let mut out = Vec::new();
    for (key, value) in kv.scan(&prefix, None, LIST_PER_PARTITION)? {
        let index = IndexRec::decode(&value)?;
        let conv = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let delivered_seq = get::<u64>(kv, &delivered_key(&conv, user))?.unwrap_or(0).min(index.last_seq);
        let first_pending_at = if delivered_seq < index.last_seq {
            get::<MessageRec>(kv, &message_key(&conv, delivered_seq + 1))?.map_or(index.last_sent_at, |m| m.sent_at)
        } else {
            index.last_sent_at
        };
        out.push(CursorRec {
            conversation_id: conv,
            peer: index.peer,
            delivered_seq,
            last_seq: index.last_seq,
            first_pending_at,
        });
    }
    Ok(Answer::Cursors(out))
}

fn contacts(kv: &dyn KvRead, user: &str) -> Result<Answer, StoreError> {
    let prefix = format!("u/{user}/").into_bytes();
    let peers = kv
        .scan(&prefix, None, LIST_PER_PARTITION)?
        .into_iter()
        .map(|(_, v)| IndexRec::decode(&v).map(|i| i.peer))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Answer::Contacts(peers))
}

fn after(kv: &dyn KvRead, user: &str, peer: &str, after_seq: u64, limit: u32) -> Result<Answer, StoreError> {
    let conv = conversation_id(user, peer);
    let prefix = format!("m/{conv}/").into_bytes();
    let from = message_key(&conv, after_seq);
    let messages = kv
        .scan(&prefix, Some(from.as_slice()), limit.clamp(1, MAX_PAGE) as usize)?
        .into_iter()
        .map(|(_, v)| MessageRec::decode(&v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Answer::Messages(messages))
}

fn history(kv: &dyn KvRead, user: &str, peer: &str, before: Option<u64>, limit: u32) -> Result<Answer, StoreError> {
    let conv = conversation_id(user, peer);
    let last = get::<ConvRec>(kv, &conv_key(&conv))?.map_or(0, |c| c.last_seq);
    // Seqs in [first, end) are the page.
    let end = before.unwrap_or(u64::MAX).min(last + 1);
    let first = end.saturating_sub(u64::from(limit.clamp(1, MAX_PAGE))).max(1);
    if end <= first {
        return Ok(Answer::History { messages: Vec::new(), next_before_seq: None });
    }
    let prefix = format!("m/{conv}/").into_bytes();
    let after = message_key(&conv, first - 1);
    let mut messages = kv
        .scan(&prefix, Some(after.as_slice()), (end - first) as usize)?
        .into_iter()
        .map(|(_, v)| MessageRec::decode(&v))
        .collect::<Result<Vec<_>, _>>()?;
    messages.reverse();
    Ok(Answer::History { messages, next_before_seq: (first > 1).then_some(first) })
}

fn conversations(kv: &dyn KvRead, user: &str) -> Result<Answer, StoreError> {
    let prefix = format!("u/{user}/").into_bytes();
    let mut out = Vec::new();
    for (key, value) in kv.scan(&prefix, None, LIST_PER_PARTITION)? {
        let index = IndexRec::decode(&value)?;
        let conv = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let (Some(rec), Some(last)) =
            (get::<ConvRec>(kv, &conv_key(&conv))?, get::<MessageRec>(kv, &message_key(&conv, index.last_seq))?)
        else {
            return Err(StoreError::Db(format!("the index of {user} names {conv}, which is incomplete")));
        };
        let delivered_seq = get::<u64>(kv, &delivered_key(&conv, user))?.unwrap_or(0);
        out.push(Summary {
            unread: rec.unread(user),
            delivered_seq,
            conversation_id: conv,
            peer: index.peer,
            last_message: last,
        });
    }
    Ok(Answer::Conversations(out))
}

impl Service for Chat {
    const ID: ServiceId = 5;
    const NAME: &'static str = "chat";
    type Command = Command;
    type Reply = Reply;
    type Rejection = Rejection;
    type Query = Query;
    type Answer = Answer;

    fn apply(kv: &mut dyn Kv, command: Command) -> Result<Result<Reply, Rejection>, StoreError> {
        match command {
            Command::Send { from, to, client_msg_id, body, sent_at } => {
                send(kv, from, to, client_msg_id, body, sent_at)
            }
            Command::Read { reader, peer, seq } => read(kv, reader, peer, seq),
            Command::Ack { user, peer, seq } => ack(kv, user, peer, seq),
        }
    }

    fn query(kv: &dyn KvRead, query: Query) -> Result<Answer, StoreError> {
        match query {
            Query::History { user, peer, before_seq, limit } => history(kv, &user, &peer, before_seq, limit),
            Query::Conversations { user } => conversations(kv, &user),
            Query::Cursors { user } => cursors(kv, &user),
            Query::Contacts { user } => contacts(kv, &user),
            Query::After { user, peer, after_seq, limit } => after(kv, &user, &peer, after_seq, limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemKv;

    const T0: u64 = 1_700_000_000_000;

    fn send_at(kv: &mut MemKv, from: &str, to: &str, id: &str, at: u64) -> Reply {
        let command = Command::Send {
            from: from.into(),
            to: to.into(),
            client_msg_id: id.into(),
            body: format!("{id} from {from}"),
            sent_at: at,
        };
        Chat::apply(kv, command).expect("apply").expect("sent")
    }

    fn seq_of(reply: &Reply) -> (u64, bool) {
        match reply {
            Reply::Sent { seq, duplicate, .. } => (*seq, *duplicate),
            other => panic!("not sent: {other:?}"),
        }
    }

    fn messages(kv: &MemKv, prefix: &str) -> usize {
        kv.0.keys().filter(|k| k.starts_with(prefix.as_bytes())).count()
    }

    fn page(kv: &MemKv, before: Option<u64>, limit: u32) -> (Vec<u64>, Option<u64>) {
        let query = Query::History { user: "ua".into(), peer: "ub".into(), before_seq: before, limit };
        match Chat::query(kv, query).expect("query") {
            Answer::History { messages, next_before_seq } => {
                (messages.iter().map(|m| m.seq).collect(), next_before_seq)
            }
            other => panic!("not history: {other:?}"),
        }
    }

    fn list(kv: &MemKv, user: &str) -> Vec<Summary> {
        match Chat::query(kv, Query::Conversations { user: user.into() }).expect("query") {
            Answer::Conversations(mut all) => {
                all.sort_by_key(|s| std::cmp::Reverse(s.last_message.sent_at));
                all
            }
            other => panic!("not a list: {other:?}"),
        }
    }

    fn read(kv: &mut MemKv, reader: &str, peer: &str, seq: u64) -> Result<Reply, Rejection> {
        Chat::apply(kv, Command::Read { reader: reader.into(), peer: peer.into(), seq }).expect("apply")
    }

    #[test]
    fn seqs_are_dense_from_one_in_each_conversation_whoever_sends() {
        let mut kv = MemKv::default();
        let seqs: Vec<u64> = (0..5)
            .map(|i| {
                let (from, to) = if i % 2 == 0 { ("ua", "ub") } else { ("ub", "ua") };
                seq_of(&send_at(&mut kv, from, to, &format!("c{i}"), T0 + i)).0
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        // Another conversation counts from 1 on its own.
        assert_eq!(seq_of(&send_at(&mut kv, "ua", "uc", "c0", T0)), (1, false));
        let same = Command::Send {
            from: "ua".into(),
            to: "ua".into(),
            client_msg_id: "x".into(),
            body: "me".into(),
            sent_at: T0,
        };
        assert_eq!(Chat::apply(&mut kv, same).expect("apply"), Err(Rejection::SameUser));
    }

    #[test]
    fn a_resend_returns_the_original_seq_and_stores_one_message() {
        let mut kv = MemKv::default();
        let first = send_at(&mut kv, "ua", "ub", "c1", T0);
        let again = send_at(&mut kv, "ua", "ub", "c1", T0 + 5_000);
        assert_eq!(seq_of(&first), (1, false));
        assert_eq!(
            again,
            Reply::Sent { conversation_id: "ua:ub".into(), seq: 1, sent_at: T0, duplicate: true },
            "the original's seq and time"
        );
        assert_eq!(messages(&kv, "m/ua:ub/"), 1);
        // The same id from the other member, or in another conversation, is another message.
        assert_eq!(seq_of(&send_at(&mut kv, "ub", "ua", "c1", T0 + 6_000)), (2, false));
        assert_eq!(seq_of(&send_at(&mut kv, "ua", "uc", "c1", T0 + 6_000)), (1, false));
        assert_eq!(messages(&kv, "m/ua:ub/"), 2);
    }

    #[test]
    fn dedupe_entries_expire_after_24_hours_of_command_time() {
        let mut kv = MemKv::default();
        send_at(&mut kv, "ua", "ub", "c1", T0);
        // Just inside 24 h: still a duplicate.
        assert_eq!(seq_of(&send_at(&mut kv, "ua", "ub", "c1", T0 + DEDUPE_FOR_MS - 1)), (1, true));
        // Another message 24 h later prunes the entry (and stores its own).
        send_at(&mut kv, "ua", "ub", "c2", T0 + DEDUPE_FOR_MS);
        assert!(kv.get(&dedupe_key("ua:ub", "ua", "c1")).expect("get").is_none(), "pruned");
        assert_eq!(messages(&kv, "d/"), 1);
        assert_eq!(messages(&kv, "e/"), 1);
        // Now the old id is new again.
        assert_eq!(seq_of(&send_at(&mut kv, "ua", "ub", "c1", T0 + DEDUPE_FOR_MS + 1)), (3, false));
        // An expired entry not yet pruned does not dedupe either, and its late pruning leaves
        // the newer entry under the same key alone.
        // (16 older entries in front of it use up one command's pruning.)
        let mut kv = MemKv::default();
        for i in 0..PRUNE_PER_APPLY as u64 {
            send_at(&mut kv, "ua", "ub", &format!("p{i}"), T0 - 100 + i);
        }
        send_at(&mut kv, "ua", "ub", "x", T0);
        assert_eq!(seq_of(&send_at(&mut kv, "ua", "ub", "x", T0 + DEDUPE_FOR_MS)), (18, false));
        assert_eq!(seq_of(&send_at(&mut kv, "ua", "ub", "x", T0 + DEDUPE_FOR_MS + 1)), (18, true));
        assert_eq!(messages(&kv, "d/"), 1, "only the newer x is left");
    }

    #[test]
    fn pruning_is_bounded_per_command() {
        let mut kv = MemKv::default();
        for i in 0..40 {
            send_at(&mut kv, "ua", "ub", &format!("c{i}"), T0 + i);
        }
        send_at(&mut kv, "ua", "ub", "late", T0 + 2 * DEDUPE_FOR_MS);
        // 40 expired, 16 pruned, plus the new one.
        assert_eq!(messages(&kv, "d/"), 40 - PRUNE_PER_APPLY + 1);
        assert_eq!(messages(&kv, "e/"), 40 - PRUNE_PER_APPLY + 1);
    }

    #[test]
    fn the_read_cursor_never_moves_back_and_not_past_the_last_message() {
        let mut kv = MemKv::default();
        assert_eq!(read(&mut kv, "ua", "ub", 0), Ok(Reply::Read { read_seq: 0 }));
        assert_eq!(read(&mut kv, "ua", "ub", 1), Err(Rejection::BeyondLast { last: 0 }));
        for i in 0..4 {
            send_at(&mut kv, "ub", "ua", &format!("c{i}"), T0 + i);
        }
        assert_eq!(read(&mut kv, "ua", "ub", 3), Ok(Reply::Read { read_seq: 3 }));
        assert_eq!(read(&mut kv, "ua", "ub", 2), Ok(Reply::Read { read_seq: 3 }), "stays at 3");
        assert_eq!(read(&mut kv, "ua", "ub", 5), Err(Rejection::BeyondLast { last: 4 }));
        assert_eq!(read(&mut kv, "ua", "ua", 1), Err(Rejection::SameUser));
        let rec: ConvRec = get(&kv, &conv_key("ua:ub")).expect("get").expect("conversation");
        assert_eq!((rec.a.read_seq, rec.b.read_seq), (3, 0));
    }

    #[test]
    fn history_pages_newest_first_with_exact_boundaries() {
        let mut kv = MemKv::default();
        assert_eq!(page(&kv, None, 50), (Vec::<u64>::new(), None), "no conversation yet");
        for i in 0..7 {
            send_at(&mut kv, "ua", "ub", &format!("c{i}"), T0 + i);
        }
        assert_eq!(page(&kv, None, 3), (vec![7, 6, 5], Some(5)));
        assert_eq!(page(&kv, Some(5), 3), (vec![4, 3, 2], Some(2)));
        assert_eq!(page(&kv, Some(2), 3), (vec![1], None));
        assert_eq!(page(&kv, None, 7), ((1..=7).rev().collect::<Vec<u64>>(), None), "exactly all: no next page");
        assert_eq!(page(&kv, Some(1), 3), (Vec::<u64>::new(), None));
        assert_eq!(page(&kv, Some(100), 2), (vec![7, 6], Some(6)), "before beyond the end");
        assert_eq!(page(&kv, None, 0), (vec![7], Some(7)), "limit at least 1");
        // The other member sees the same history.
        let query = Query::History { user: "ub".into(), peer: "ua".into(), before_seq: None, limit: 1 };
        let Answer::History { messages, .. } = Chat::query(&kv, query).expect("query") else { panic!("history") };
        assert_eq!((messages[0].seq, messages[0].from.as_str()), (7, "ua"));
    }

    #[test]
    fn conversations_list_newest_first_with_unread_counting_only_the_peers_messages() {
        let mut kv = MemKv::default();
        send_at(&mut kv, "ub", "ua", "b1", T0 + 1);
        send_at(&mut kv, "ua", "ub", "a1", T0 + 2);
        send_at(&mut kv, "ub", "ua", "b2", T0 + 3);
        send_at(&mut kv, "uc", "ua", "c1", T0 + 4);
        send_at(&mut kv, "ub", "ua", "b3", T0 + 5);
        let all = list(&kv, "ua");
        let view: Vec<(&str, u64, u64)> = all.iter().map(|s| (s.peer.as_str(), s.last_message.seq, s.unread)).collect();
        assert_eq!(view, [("ub", 4, 3), ("uc", 1, 1)]);
        assert_eq!(all[0].last_message.body, "b3 from ub");
        assert_eq!(all[0].conversation_id, "ua:ub");
        // ua read up to its own message (seq 2): one of ub's messages was before it.
        read(&mut kv, "ua", "ub", 2).expect("read");
        assert_eq!(list(&kv, "ua")[0].unread, 2);
        read(&mut kv, "ua", "ub", 3).expect("read");
        assert_eq!(list(&kv, "ua")[0].unread, 1);
        // ub's side: one message of ua, unread.
        assert_eq!(list(&kv, "ub").iter().map(|s| (s.peer.as_str(), s.unread)).collect::<Vec<_>>(), [("ua", 1)]);
        // A new message from uc moves that conversation to the top.
        send_at(&mut kv, "uc", "ua", "c2", T0 + 6);
        let all = list(&kv, "ua");
        let view: Vec<(&str, u64)> = all.iter().map(|s| (s.peer.as_str(), s.unread)).collect();
        assert_eq!(view, [("uc", 2), ("ub", 1)]);
        assert!(list(&kv, "uz").is_empty());
    }

    fn ack(kv: &mut MemKv, user: &str, peer: &str, seq: u64) -> Result<Reply, Rejection> {
        Chat::apply(kv, Command::Ack { user: user.into(), peer: peer.into(), seq }).expect("apply")
    }

    fn cursors(kv: &MemKv, user: &str) -> Vec<CursorRec> {
        match Chat::query(kv, Query::Cursors { user: user.into() }).expect("query") {
            Answer::Cursors(mut all) => {
                all.sort_by(|x, y| x.conversation_id.cmp(&y.conversation_id));
                all
            }
            other => panic!("not cursors: {other:?}"),
        }
    }

    fn after(kv: &MemKv, after_seq: u64, limit: u32) -> Vec<u64> {
        let query = Query::After { user: "ub".into(), peer: "ua".into(), after_seq, limit };
        match Chat::query(kv, query).expect("query") {
            Answer::Messages(messages) => messages.iter().map(|m| m.seq).collect(),
            other => panic!("not messages: {other:?}"),
        }
    }

    #[test]
    fn delivered_cursors_move_forward_only_and_not_past_the_last_message() {
        let mut kv = MemKv::default();
        assert_eq!(ack(&mut kv, "ua", "ub", 1), Err(Rejection::BeyondLast { last: 0 }));
        for i in 0..3 {
            send_at(&mut kv, "ub", "ua", &format!("c{i}"), T0 + i);
        }
        assert_eq!(ack(&mut kv, "ua", "ub", 2), Ok(Reply::Acked { delivered_seq: 2 }));
        assert_eq!(ack(&mut kv, "ua", "ub", 1), Ok(Reply::Acked { delivered_seq: 2 }), "stays at 2");
        assert_eq!(ack(&mut kv, "ua", "ub", 4), Err(Rejection::BeyondLast { last: 3 }));
        assert_eq!(ack(&mut kv, "ua", "ua", 1), Err(Rejection::SameUser));
        // The other member's cursor is its own.
        assert_eq!(ack(&mut kv, "ub", "ua", 3), Ok(Reply::Acked { delivered_seq: 3 }));
        assert_eq!(ack(&mut kv, "ua", "ub", 2), Ok(Reply::Acked { delivered_seq: 2 }));
    }

    #[test]
    fn cursors_say_where_a_connecting_session_resumes() {
        let mut kv = MemKv::default();
        send_at(&mut kv, "ub", "ua", "c0", T0);
        send_at(&mut kv, "ua", "ub", "c1", T0 + 10);
        send_at(&mut kv, "ub", "ua", "c2", T0 + 20);
        send_at(&mut kv, "uc", "ua", "c0", T0 + 5);
        ack(&mut kv, "ua", "ub", 1).expect("ack");
        let view: Vec<(String, u64, u64, u64)> =
            cursors(&kv, "ua").into_iter().map(|c| (c.peer, c.delivered_seq, c.last_seq, c.first_pending_at)).collect();
        assert_eq!(
            view,
            [("ub".to_string(), 1, 3, T0 + 10), ("uc".to_string(), 0, 1, T0 + 5)],
            "the first pending message's time orders the resync"
        );
        ack(&mut kv, "ua", "ub", 3).expect("ack");
        assert_eq!(cursors(&kv, "ua")[0].first_pending_at, T0 + 20, "nothing pending: the last message's time");
        assert!(cursors(&kv, "uz").is_empty());
    }

    #[test]
    fn messages_after_a_seq_come_oldest_first_and_bounded() {
        let mut kv = MemKv::default();
        assert!(after(&kv, 0, 10).is_empty());
        for i in 0..7 {
            send_at(&mut kv, "ua", "ub", &format!("c{i}"), T0 + i);
        }
        assert_eq!(after(&kv, 0, 3), [1, 2, 3]);
        assert_eq!(after(&kv, 3, 10), [4, 5, 6, 7]);
        assert_eq!(after(&kv, 7, 10), Vec::<u64>::new());
        assert_eq!(after(&kv, 0, 0), [1], "at least one");
        assert_eq!(after(&kv, 0, 10_000).len(), 7);
    }
}
