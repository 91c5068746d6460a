//! Presence: who is online, kept as soft state by the node leading each user's partition (the
//! user's *owner*).
//!
//! Every `chat.heartbeat` each node tells each owner, in one [`ChatPeer::Live`] per owner,
//! which of its users have a live session there (a new session tells its owner at once). The
//! owner notes when it last heard of each user and, in one sweep per heartbeat, takes users
//! it has not heard of for `chat.offline_after` offline: no timer per user. A change goes to
//! the sessions of the user's contacts (everyone with a conversation with them) as a
//! `presence` frame, through the same pushes as messages.
//!
//! Nothing here is durable: after the owner fails over, the new owner learns who is online
//! from the next round of beats (users it has not heard of read as offline, never seen).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use super::delivery::{ChatPeer, ChatPeerReply, Event, Pusher, Sessions};
use super::state::{Answer, Query};
use super::{ChatError, ChatMetrics};
use crate::NodeId;
use crate::services::client::Client;
use crate::services::peer;
use crate::services::{Consistency, urls};
use crate::transport::Transport;
use crate::util::lock;

/// How long an owner remembers a user that went offline (for `last_seen`).
const REMEMBER_OFFLINE: Duration = Duration::from_secs(24 * 3600);

/// What the owner knows of one user.
#[derive(Debug, Clone, Copy)]
struct Seen {
    heard: Instant,
    heard_ms: u64,
    online: bool,
}

/// A user's presence as `GET /v1/presence/{user}` answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Online now.
    pub online: bool,
    /// Last live, Unix milliseconds (`None`: not seen since its owner took over).
    pub last_seen: Option<u64>,
}

/// Presence on one node: its owner side and its reporting side.
pub struct Presence {
    node_id: NodeId,
    client: Client,
    transport: Arc<Transport>,
    sessions: Arc<Sessions>,
    pusher: Arc<Pusher>,
    heartbeat: Duration,
    offline_after: Duration,
    owned: Mutex<HashMap<String, Seen>>,
    metrics: ChatMetrics,
}

impl Presence {
    /// Presence for the sessions in `sessions`, announcing changes through `pusher`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: NodeId,
        client: Client,
        transport: Arc<Transport>,
        sessions: Arc<Sessions>,
        pusher: Arc<Pusher>,
        heartbeat: Duration,
        offline_after: Duration,
        metrics: ChatMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            client,
            transport,
            sessions,
            pusher,
            heartbeat,
            offline_after,
            owned: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    fn owns(&self, user: &str) -> bool {
        self.client.leader_of_key(user) == Some(self.node_id)
    }

    /// Owner side: `users` have live sessions somewhere.
    pub fn note_live(self: &Arc<Self>, users: Vec<String>, fresh: bool) -> ChatPeerReply {
        let (now, now_ms) = (Instant::now(), urls::now_ms());
        let mut came_online = Vec::new();
        {
            let mut owned = lock(&self.owned);
            for user in users {
                if !self.owns(&user) {
                    continue;
                }
                // A user first heard of in a periodic report was online before this node took
                // over: nothing to announce.
                let seen = owned.entry(user.clone()).or_insert(Seen { heard: now, heard_ms: now_ms, online: !fresh });
                seen.heard = now;
                seen.heard_ms = now_ms;
                if !seen.online {
                    seen.online = true;
                    came_online.push(user);
                }
            }
            self.metrics.online.set(owned.values().filter(|s| s.online).count() as i64);
        }
        for user in came_online {
            self.announce(user, true, now_ms);
        }
        ChatPeerReply::Noted
    }

    /// Owner side: what this node knows of `user`.
    pub fn local_answer(&self, user: &str) -> ChatPeerReply {
        if !self.owns(user) {
            return ChatPeerReply::NotOwner;
        }
        match lock(&self.owned).get(user) {
            Some(s) => ChatPeerReply::Presence { online: s.online, last_seen: Some(s.heard_ms) },
            None => ChatPeerReply::Presence { online: false, last_seen: None },
        }
    }

    /// `user`'s presence, from its owner.
    pub async fn of(&self, user: &str) -> Result<Status, ChatError> {
        let no_owner = || ChatError::Unavailable(format!("the partition of {user} has no leader now"));
        let owner = self.client.leader_of_key(user).ok_or_else(no_owner)?;
        let reply = if owner == self.node_id {
            self.local_answer(user)
        } else {
            peer::call(&self.transport, owner, &ChatPeer::Presence(user.to_string()), self.heartbeat)
                .await
                .map_err(|e| ChatError::Unavailable(format!("the owner of {user} did not answer: {e}")))?
        };
        match reply {
            ChatPeerReply::Presence { online, last_seen } => Ok(Status { online, last_seen }),
            ChatPeerReply::NotOwner => Err(no_owner()),
            other => Err(super::unexpected(other)),
        }
    }

    /// Tells `user`'s contacts, wherever their sessions are.
    fn announce(self: &Arc<Self>, user: String, online: bool, last_seen: u64) {
        self.metrics.presence_changes.with_label_values(&[if online { "online" } else { "offline" }]).inc();
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let contacts = match me.contacts(&user).await {
                Ok(c) if c.is_empty() => return,
                Ok(c) => c,
                Err(e) => {
                    debug!(user = %user, error = %e, "presence change not announced: contacts unknown");
                    return;
                }
            };
            let event = Arc::new(Event::Presence { user, online, last_seen, contacts });
            me.sessions.deliver(&event);
            me.pusher.push(event);
        });
    }

    /// Everyone with a conversation with `user` (each partition's replica here, or its leader).
    async fn contacts(&self, user: &str) -> Result<Vec<String>, ChatError> {
        let query = Query::Contacts { user: user.to_string() };
        let mut all = Vec::new();
        for answer in super::scatter(&self.client, &query, Consistency::Local).await? {
            match answer {
                Answer::Contacts(some) => all.extend(some),
                other => return Err(super::unexpected(other)),
            }
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Reporting side: tells the owners of `users` (one message per owner).
    pub async fn report(self: &Arc<Self>, users: Vec<String>, fresh: bool) {
        let mut by_owner: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
        for user in users {
            if let Some(owner) = self.client.leader_of_key(&user) {
                by_owner.entry(owner).or_default().push(user);
            }
        }
        let calls = by_owner.into_iter().map(|(owner, users)| async move {
            if owner == self.node_id {
                self.note_live(users, fresh);
            } else if let Err(e) =
                peer::call(&self.transport, owner, &ChatPeer::Live { users, fresh }, self.heartbeat).await
            {
                debug!(owner, error = %e, "liveness not reported");
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Owner side: takes users not heard of for `offline_after` offline; forgets long-gone
    /// ones and those whose partition this node no longer leads.
    fn sweep(self: &Arc<Self>) {
        let now = Instant::now();
        let mut went_offline = Vec::new();
        {
            let mut owned = lock(&self.owned);
            owned.retain(|user, seen| {
                if !self.owns(user) {
                    return false;
                }
                let silent = now.duration_since(seen.heard);
                if seen.online && silent >= self.offline_after {
                    seen.online = false;
                    went_offline.push((user.clone(), seen.heard_ms));
                }
                seen.online || silent < REMEMBER_OFFLINE
            });
            self.metrics.online.set(owned.values().filter(|s| s.online).count() as i64);
        }
        for (user, last_seen) in went_offline {
            self.announce(user, false, last_seen);
        }
    }

    /// Every heartbeat: reports this node's users to their owners, then sweeps.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.report(self.sessions.users(), false).await;
            self.sweep();
        }
    }
}
