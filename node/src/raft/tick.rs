//! The node's tick: one timer per node drives every hosted group's heartbeats and watches their
//! leaders, instead of a timer per group.
//!
//! openraft gives each group a tick task that checks its election timer and, on a leader, sends
//! heartbeats. With 17 groups that is hundreds of wake-ups a second on an idle node, each heartbeat
//! at its own phase. Here, every `raft.heartbeat_interval / 2`:
//! - every other tick, each group this node leads sends its heartbeats, all at once, so the
//!   heartbeats for one peer leave in one write on its lane;
//! - a group's own openraft tick runs only while it can matter: not on a leader (its heartbeats
//!   come from here), nor on a follower that heard from its leader within
//!   [`Timing::quiet_for`], since openraft's election timer counts from that contact and cannot
//!   fire before it; it is switched back on otherwise, so a lost leader is handled by openraft's
//!   own election timers as usual;
//! - a lost leader's successor campaigns as soon as it can win. openraft refuses votes while the
//!   leader lease runs (`election_timeout_max` after the last contact), and a follower's own
//!   timer fires within that lease, so its pre-vote fails and waits a whole timeout again:
//!   failovers took between one and two `election_timeout_max`. The successor (the lowest id
//!   among the voters other than the silent leader: one per group, so no split votes between
//!   followers) starts a pre-vote once its own lease ran out, and again every tick until a
//!   leader is elected;
//! - each group's term and leader are published on its `leadership` channel, which requests
//!   forwarded to a leader watch (openraft's metrics change several times per log entry).

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;

use super::GroupRaft;
use super::host::RaftHost;
use crate::NodeId;
use crate::config::RaftSection;

/// The node tick's timings, from `[raft]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// How often the node ticks.
    pub(super) period: Duration,
    /// A follower that heard from its leader within this long needs no election timer.
    pub(super) quiet_for: Duration,
    /// openraft's leader lease: a voter refuses (pre-)votes this long after its last contact.
    pub(super) lease: Duration,
}

impl Timing {
    pub(super) fn new(raft: &RaftSection) -> Self {
        let period = (raft.heartbeat_interval / 2).max(Duration::from_millis(1));
        Self {
            period,
            // Two ticks before the shortest election timeout: the timer is back on before it can
            // expire, even when a tick runs late.
            quiet_for: raft.election_timeout_min.saturating_sub(period * 2),
            lease: raft.election_timeout_max,
        }
    }
}

/// One group as the node tick sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    /// This replica's role.
    pub(super) state: ServerState,
    /// The leader it knows.
    pub(super) leader: Option<NodeId>,
    /// How long since it last accepted an AppendEntries (`None`: never since it opened).
    pub(super) since_heard: Option<Duration>,
    /// Whether this node is the group's successor should `leader` be gone.
    pub(super) successor: bool,
}

/// What the node tick does for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// Send heartbeats (on a heartbeat tick).
    pub(super) heartbeat: bool,
    /// Keep openraft's own tick (its election timer) running.
    pub(super) openraft_tick: bool,
    /// Start a pre-vote now.
    pub(super) campaign: bool,
}

/// Decides what to do for a group (pure; see the module docs).
pub(super) fn plan(seen: &Seen, timing: &Timing) -> Plan {
    match seen.state {
        ServerState::Leader => Plan { heartbeat: true, openraft_tick: false, campaign: false },
        ServerState::Follower if seen.leader.is_some() => {
            let heard = seen.since_heard;
            Plan {
                heartbeat: false,
                openraft_tick: heard.is_none_or(|d| d >= timing.quiet_for),
                campaign: seen.successor && heard.is_some_and(|d| d > timing.lease),
            }
        }
        // Electing, a learner, or no leader known: openraft's timers as usual.
        _ => Plan { heartbeat: false, openraft_tick: true, campaign: false },
    }
}

/// The successor of `leader` among `voters`: the lowest other id.
pub(super) fn successor(voters: impl Iterator<Item = NodeId>, leader: NodeId) -> Option<NodeId> {
    voters.filter(|v| *v != leader).min()
}

/// When a group last accepted an AppendEntries, as milliseconds after an epoch plus one (0:
/// never).
#[derive(Debug, Default)]
pub(super) struct Heard(AtomicU64);

impl Heard {
    pub(super) fn note(&self, epoch: Instant) {
        self.0.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    pub(super) fn since(&self, epoch: Instant) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            at => Some(epoch.elapsed().saturating_sub(Duration::from_millis(at - 1))),
        }
    }
}

/// The node tick's loop (see the module docs); ends with the host.
pub(super) async fn run(host: Weak<RaftHost>, timing: Timing) {
    let mut tick = tokio::time::interval(timing.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = false;
    loop {
        tick.tick().await;
        beat = !beat;
        let Some(host) = host.upgrade() else { return };
        let mut heartbeats: Vec<GroupRaft> = Vec::new();
        let mut campaigns: Vec<GroupRaft> = Vec::new();
        for g in host.read_groups().values() {
            let seen = {
                let rx = g.raft.metrics();
                let m = rx.borrow_watched();
                let known = (m.current_term, m.current_leader);
                g.leadership.send_if_modified(|v| std::mem::replace(v, known) != known);
                let successor =
                    m.current_leader.and_then(|l| successor(m.membership_config.membership().voter_ids(), l));
                Seen {
                    state: m.state,
                    leader: m.current_leader,
                    since_heard: g.heard.since(host.epoch),
                    successor: successor == Some(host.node_id),
                }
            };
            let plan = plan(&seen, &timing);
            g.raft.runtime_config().tick(plan.openraft_tick);
            if plan.heartbeat && beat {
                heartbeats.push(g.raft.clone());
            }
            if plan.campaign {
                campaigns.push(g.raft.clone());
            }
        }
        drop(host);
        // A group that stopped reports its fatal error through its actor; nothing to do here.
        for raft in heartbeats {
            let _ = raft.trigger().heartbeat().await;
        }
        for raft in campaigns {
            let _ = raft.trigger().elect(true).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing::new(&RaftSection::default())
    }

    fn follower(since_heard: Option<u64>, successor: bool) -> Seen {
        Seen {
            state: ServerState::Follower,
            leader: Some(1),
            since_heard: since_heard.map(Duration::from_millis),
            successor,
        }
    }

    #[test]
    fn timings_follow_the_raft_section() {
        let t = timing();
        let r = RaftSection::default();
        assert_eq!(t.period, r.heartbeat_interval / 2);
        assert!(t.quiet_for + t.period * 2 <= r.election_timeout_min);
        assert_eq!(t.lease, r.election_timeout_max);
    }

    #[test]
    fn a_leader_heartbeats_without_an_election_timer() {
        let seen = Seen { state: ServerState::Leader, leader: Some(2), since_heard: None, successor: false };
        assert_eq!(plan(&seen, &timing()), Plan { heartbeat: true, openraft_tick: false, campaign: false });
    }

    #[test]
    fn a_follower_hearing_its_leader_needs_no_election_timer() {
        let p = plan(&follower(Some(50), true), &timing());
        assert_eq!(p, Plan { heartbeat: false, openraft_tick: false, campaign: false });
    }

    #[test]
    fn a_follower_whose_leader_went_quiet_gets_its_election_timer_back_before_it_could_expire() {
        let t = timing();
        let just_quiet = t.quiet_for.as_millis() as u64;
        assert!(plan(&follower(Some(just_quiet), false), &t).openraft_tick);
        assert!(plan(&follower(None, false), &t).openraft_tick, "never heard since it opened");
        assert!(!plan(&follower(Some(just_quiet), false), &t).campaign, "not the successor");
    }

    #[test]
    fn only_the_successor_campaigns_and_only_once_the_lease_ran_out() {
        let t = timing();
        let lease = t.lease.as_millis() as u64;
        assert!(!plan(&follower(Some(lease - 10), true), &t).campaign, "votes would be refused");
        assert!(plan(&follower(Some(lease + 1), true), &t).campaign);
        assert!(!plan(&follower(Some(lease + 1), false), &t).campaign);
    }

    #[test]
    fn candidates_learners_and_leaderless_followers_keep_openraft_timers() {
        for state in [ServerState::Candidate, ServerState::Learner] {
            let seen = Seen { state, leader: None, since_heard: Some(Duration::from_millis(1)), successor: true };
            assert_eq!(plan(&seen, &timing()), Plan { heartbeat: false, openraft_tick: true, campaign: false });
        }
        let leaderless = Seen { leader: None, ..follower(Some(5_000), true) };
        assert_eq!(plan(&leaderless, &timing()), Plan { heartbeat: false, openraft_tick: true, campaign: false });
    }

    #[test]
    fn the_successor_is_the_lowest_other_voter() {
        assert_eq!(successor([1, 2, 3].into_iter(), 1), Some(2));
        assert_eq!(successor([1, 2, 3].into_iter(), 2), Some(1));
        assert_eq!(successor([3].into_iter(), 3), None);
    }

    #[test]
    fn heard_counts_from_the_last_note() {
        let epoch = Instant::now() - Duration::from_secs(5);
        let h = Heard::default();
        assert_eq!(h.since(epoch), None);
        h.note(epoch);
        assert!(h.since(epoch).is_some_and(|d| d < Duration::from_secs(1)));
    }
}
