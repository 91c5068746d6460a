//! Live delivery: the sessions connected to this node, and the pushes that carry committed
//! messages and receipts to the sessions on other nodes.
//!
//! The node that proposed a message (the sender's gateway) delivers it once committed: to its
//! own sessions of either member directly, and to every other node in one [`Push`] per node
//! that carries everything due there at that moment (one send in flight per peer; what arrives
//! meanwhile waits for the next). A node delivers a push to its sessions of the users named;
//! a session puts messages in `seq` order itself ([`super::session`]), so pushes may arrive late,
//! twice or out of order. A push that cannot reach a live peer is retried; when the peer is
//! down its sessions are gone, and their clients resync from the delivered cursor on reconnect.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rkyv::{Archive, Deserialize, Serialize};
use std::sync::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::debug;

use super::ChatMetrics;
use super::state::Chat;
use crate::NodeId;
use crate::membership::{Membership, PeerState};
use crate::services::peer::{self, PeerMessage};
use crate::services::{Service, ServiceId};
use crate::transport::Transport;
use crate::util::{Backoff, lock};

/// Something a session shows its user.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A committed message (for both members' sessions).
    Message {
        /// The conversation.
        conversation_id: String,
        /// Its seq.
        seq: u64,
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// The text.
        body: String,
        /// When the proposing node stamped it, Unix milliseconds.
        sent_at: u64,
    },
    /// A committed read cursor (for both members' sessions).
    Receipt {
        /// The conversation.
        conversation_id: String,
        /// The reader's cursor.
        seq: u64,
        /// Who read.
        reader: String,
        /// The other member.
        peer: String,
    },
    /// A user came online or went offline (for their contacts' sessions).
    Presence {
        /// Whose presence changed.
        user: String,
        /// Online now.
        online: bool,
        /// When the user was last live, Unix milliseconds (now, when online).
        last_seen: u64,
        /// The users with a conversation with `user`.
        contacts: Vec<String>,
    },
}

impl Event {
    /// The users whose sessions show it.
    pub fn users(&self) -> Vec<&str> {
        match self {
            Event::Message { from, to, .. } if from == to => vec![from],
            Event::Message { from, to, .. } => vec![from, to],
            Event::Receipt { reader, peer, .. } => vec![reader, peer],
            Event::Presence { contacts, .. } => contacts.iter().map(String::as_str).collect(),
        }
    }
}

/// Chat's messages between nodes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ChatPeer {
    /// Events for the sessions on the receiving node, in the order the sender queued them.
    Push(Vec<Event>),
    /// These users have live sessions on the sending node (to the node leading their
    /// partitions, which keeps presence).
    Live {
        /// The users.
        users: Vec<String>,
        /// A session just connected (else the periodic report). An owner that has no record
        /// of a user announces it online only on a fresh report: a periodic one about a user
        /// it does not know means it took over from another owner, and the user's contacts
        /// heard of them already.
        fresh: bool,
    },
    /// Is this user online? (to the node leading the user's partition)
    Presence(String),
}

/// Answers to [`ChatPeer`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ChatPeerReply {
    /// Sessions that got at least one event.
    Pushed(u32),
    /// Liveness noted.
    Noted,
    /// The user's presence as the owner knows it.
    Presence {
        /// Online now.
        online: bool,
        /// Last live, Unix milliseconds (`None`: not seen since this node took over).
        last_seen: Option<u64>,
    },
    /// This node does not lead the user's partition (any more).
    NotOwner,
}

impl PeerMessage for ChatPeer {
    const SERVICE: ServiceId = Chat::ID;
    const METHOD: &'static str = "chat";
    type Reply = ChatPeerReply;
}

/// Events one push carries at most.
const MAX_PUSH: usize = 4096;
/// Events queued for one peer at most; beyond, the oldest are dropped (that peer's sessions
/// then fill the gap from the store, or resync on reconnect).
const MAX_QUEUED: usize = 256 * 1024;
/// How long one push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per push to a peer that is up.
const PUSH_ATTEMPTS: u32 = 5;

/// One connected session, as the registry holds it.
struct Entry {
    id: u64,
    tx: mpsc::Sender<Arc<Event>>,
    /// Set when its queue overflowed: the session closes with 1013.
    slow: Arc<Slow>,
}

/// A session's "you fell behind" signal.
#[derive(Debug, Default)]
pub struct Slow {
    flag: AtomicBool,
    notify: Notify,
}

impl Slow {
    fn raise(&self) {
        if !self.flag.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Waits until the session's queue overflowed.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The sessions connected to this node, by user.
pub struct Sessions {
    by_user: Mutex<HashMap<String, Vec<Entry>>>,
    next_id: AtomicU64,
    queue: usize,
    metrics: ChatMetrics,
}

/// A registered session: what it receives, and its removal on drop.
pub struct Registration {
    sessions: Arc<Sessions>,
    user: String,
    id: u64,
    /// Events for the session, in arrival order.
    pub events: mpsc::Receiver<Arc<Event>>,
    /// Raised when `events` overflowed.
    pub slow: Arc<Slow>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut all = lock(&self.sessions.by_user);
        if let Some(list) = all.get_mut(&self.user) {
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                all.remove(&self.user);
            }
        }
        self.sessions.metrics.sessions.dec();
    }
}

impl Sessions {
    /// An empty registry whose sessions queue at most `queue` events each.
    pub fn new(queue: usize, metrics: ChatMetrics) -> Arc<Self> {
        Arc::new(Self { by_user: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), queue, metrics })
    }

    /// Registers a session of `user`; it receives every event for `user` from now on.
    pub fn register(self: &Arc<Self>, user: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::channel(self.queue);
        let slow = Arc::new(Slow::default());
        let entry = Entry { id, tx, slow: Arc::clone(&slow) };
        lock(&self.by_user).entry(user.to_string()).or_default().push(entry);
        self.metrics.sessions.inc();
        Registration { sessions: Arc::clone(self), user: user.to_string(), id, events, slow }
    }

    /// Whether `user` has a session here.
    pub fn has(&self, user: &str) -> bool {
        lock(&self.by_user).contains_key(user)
    }

    /// The users with a session here.
    pub fn users(&self) -> Vec<String> {
        lock(&self.by_user).keys().cloned().collect()
    }

    /// Hands `event` to every session here of the users it names; answers how many took it. A
    /// session whose queue is full is told it fell behind.
    pub fn deliver(&self, event: &Arc<Event>) -> u32 {
        let all = lock(&self.by_user);
        let mut n = 0;
        for user in event.users() {
            for entry in all.get(user).into_iter().flatten() {
                match entry.tx.try_send(Arc::clone(event)) {
                    Ok(()) => n += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => entry.slow.raise(),
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        n
    }
}

/// Events waiting for one peer.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Arc<Event>>,
    /// A push to this peer is under way.
    busy: bool,
}

/// Pushes events to the other nodes.
pub struct Pusher {
    transport: Arc<Transport>,
    membership: Arc<Membership>,
    outboxes: Mutex<HashMap<NodeId, Outbox>>,
    wake: Notify,
    metrics: ChatMetrics,
}

impl Pusher {
    /// A pusher over `transport`, to the members `membership` lists.
    pub fn new(transport: Arc<Transport>, membership: Arc<Membership>, metrics: ChatMetrics) -> Arc<Self> {
        Arc::new(Self { transport, membership, outboxes: Mutex::new(HashMap::new()), wake: Notify::new(), metrics })
    }

    /// Queues `event` for every other node that is up.
    pub fn push(&self, event: Arc<Event>) {
        let me = self.membership.node_id();
        let peers: Vec<NodeId> = self
            .membership
            .view()
            .into_iter()
            .filter(|m| m.id != me && m.state == PeerState::Up)
            .map(|m| m.id)
            .collect();
        if peers.is_empty() {
            return;
        }
        let mut boxes = lock(&self.outboxes);
        for peer in peers {
            let outbox = boxes.entry(peer).or_default();
            if outbox.queue.len() >= MAX_QUEUED {
                outbox.queue.pop_front();
                self.metrics.push_dropped.inc();
            }
            outbox.queue.push_back(Arc::clone(&event));
        }
        drop(boxes);
        self.wake.notify_one();
    }

    /// Takes the next batch for every idle peer that has one.
    fn take_batches(&self) -> Vec<(NodeId, Vec<Event>)> {
        let mut boxes = lock(&self.outboxes);
        let mut out = Vec::new();
        for (peer, outbox) in boxes.iter_mut() {
            if outbox.busy || outbox.queue.is_empty() {
                continue;
            }
            let n = outbox.queue.len().min(MAX_PUSH);
            let events = outbox.queue.drain(..n).map(|e| (*e).clone()).collect();
            outbox.busy = true;
            out.push((*peer, events));
        }
        out
    }

    async fn send(self: Arc<Self>, peer: NodeId, events: Vec<Event>) -> NodeId {
        let push = ChatPeer::Push(events);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        for attempt in 1..=PUSH_ATTEMPTS {
            match peer::call(&self.transport, peer, &push, PUSH_TIMEOUT).await {
                Ok(_) => {
                    self.metrics.pushes.with_label_values(&["ok"]).inc();
                    return peer;
                }
                Err(e) => {
                    debug!(peer, attempt, error = %e, "chat push failed");
                    let up = self.membership.view().iter().any(|m| m.id == peer && m.state == PeerState::Up);
                    if !up {
                        break;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        self.metrics.pushes.with_label_values(&["failed"]).inc();
        peer
    }

    /// Sends what is queued, one push in flight per peer, until the node stops.
    pub async fn run(self: Arc<Self>) {
        let mut inflight = JoinSet::new();
        loop {
            let woken = self.wake.notified();
            for (peer, events) in self.take_batches() {
                inflight.spawn(Arc::clone(&self).send(peer, events));
            }
            tokio::select! {
                () = woken => {}
                Some(done) = inflight.join_next() => {
                    if let Ok(peer) = done
                        && let Some(outbox) = lock(&self.outboxes).get_mut(&peer)
                    {
                        outbox.busy = false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> Arc<Event> {
        Arc::new(Event::Message {
            conversation_id: "ua:ub".into(),
            seq,
            from: "ua".into(),
            to: "ub".into(),
            body: "hi".into(),
            sent_at: 1,
        })
    }

    #[tokio::test]
    async fn events_reach_every_session_of_both_members_and_nobody_else() {
        let sessions = Sessions::new(8, ChatMetrics::new(&prometheus::Registry::new()).expect("metrics"));
        let mut a1 = sessions.register("ua");
        let mut a2 = sessions.register("ua");
        let mut b = sessions.register("ub");
        let mut c = sessions.register("uc");
        assert_eq!(sessions.deliver(&message(1)), 3);
        for r in [&mut a1, &mut a2, &mut b] {
            assert_eq!(r.events.try_recv().ok().as_deref(), Some(&*message(1)));
        }
        assert!(c.events.try_recv().is_err(), "not a member");
        drop(a2);
        assert_eq!(sessions.deliver(&message(2)), 2, "a dropped session is gone");
        drop((a1, b));
        assert!(!sessions.has("ua"));
        assert!(sessions.has("uc"));
    }

    #[tokio::test]
    async fn a_full_queue_marks_the_session_slow_and_spares_the_others() {
        let sessions = Sessions::new(2, ChatMetrics::new(&prometheus::Registry::new()).expect("metrics"));
        let a = sessions.register("ua");
        let mut b = sessions.register("ub");
        for seq in 1..=2 {
            sessions.deliver(&message(seq));
        }
        b.events.recv().await.expect("first");
        sessions.deliver(&message(3));
        assert!(a.slow.flag.load(Ordering::Acquire), "ua's queue overflowed");
        assert!(!b.slow.flag.load(Ordering::Acquire), "ub kept up");
        tokio::time::timeout(Duration::from_secs(5), a.slow.wait()).await.expect("told");
    }
}
