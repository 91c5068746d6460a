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
//!   forwarded to a leader watch (openraft's metrics change several times per log entry);
//! - an idle group goes **quiet**: once its leader saw it settled (every entry committed,
//!   applied and matched by every replica) for [`QUIET_AFTER`] heartbeats in a row, it stops
//!   sending it heartbeats. Instead, every heartbeat tick the node sends each peer one
//!   quiet beat listing the quiet groups it leads there with their term and last index (an
//!   idle cluster exchanges one small message per peer pair and tick, whatever the number of
//!   groups). A replica that still follows that leader at that term and index takes the beat
//!   as its leader's heartbeat ([`Heard`]); one that does not (it restarted, missed the last
//!   commit, or follows someone else) asks for the group to wake, and the leader heartbeats it
//!   again. Any new entry wakes a group too. A leader's quorum lease and a replica's refusal
//!   to vote while its leader is alive count quiet beats as contact (see
//!   [`RaftHost::local_leader`] and [`RaftHost::refuses_vote`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::Instant as _;
use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;

use super::host::RaftHost;
use super::wire::{QuietGroup, RaftRequest, RaftRequestBody, RaftResponse};
use super::{GroupId, GroupRaft};
use crate::NodeId;
use crate::config::RaftSection;
use crate::util::lock;

/// Heartbeats in a row a leader must see its group settled before the group goes quiet: the
/// first carries the final commit index to the followers, the others leave room for one lost.
pub const QUIET_AFTER: u32 = 3;
/// Quiet beats go out every this many heartbeat intervals: they are most of what an idle node
/// does (each is a request and an answer per peer), and every other interval keeps a follower's
/// contact well within the shortest election timeout (measured idle CPU per node: 1.3 % with
/// a beat every interval, 0.85 % every other).
pub(super) const QUIET_BEAT_EVERY: u32 = 2;

/// The node tick's timings, from `[raft]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// How often the node ticks.
    pub(super) period: Duration,
    /// A follower that heard from its leader within this long needs no election timer.
    pub(super) quiet_for: Duration,
    /// The same for a follower whose last contact was a quiet beat. openraft's election timer
    /// counts from the last AppendEntries, long ago in a quiet group, so switching it on starts
    /// a pre-vote at once; it is switched on after the shortest election timeout without a beat
    /// ([`QUIET_BEAT_EVERY`] heartbeat intervals apart).
    pub(super) quiet_heard_for: Duration,
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
            quiet_heard_for: raft.election_timeout_min,
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
    /// How long since it last accepted an AppendEntries or a quiet beat (`None`: never since it
    /// opened).
    pub(super) since_heard: Option<Duration>,
    /// That last contact was a quiet beat.
    pub(super) heard_quietly: bool,
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
                openraft_tick: heard
                    .is_none_or(|d| d >= if seen.heard_quietly { timing.quiet_heard_for } else { timing.quiet_for }),
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

/// When a replica last heard from its leader (an accepted AppendEntries or a matching quiet
/// beat), as milliseconds after an epoch plus one (0: never), with [`QUIETLY`] set when that was
/// a quiet beat.
#[derive(Debug, Default)]
pub(super) struct Heard(AtomicU64);

/// The bit of [`Heard`] that says the last contact was a quiet beat.
const QUIETLY: u64 = 1 << 63;

impl Heard {
    /// An AppendEntries was accepted.
    pub(super) fn note(&self, epoch: Instant) {
        self.0.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// A quiet beat of the leader matched.
    pub(super) fn note_quietly(&self, epoch: Instant) {
        self.0.store((epoch.elapsed().as_millis() as u64 + 1) | QUIETLY, Ordering::Relaxed);
    }

    pub(super) fn since(&self, epoch: Instant) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) & !QUIETLY {
            0 => None,
            at => Some(epoch.elapsed().saturating_sub(Duration::from_millis(at - 1))),
        }
    }

    /// Whether the last contact was a quiet beat.
    pub(super) fn quietly(&self) -> bool {
        self.0.load(Ordering::Relaxed) & QUIETLY != 0
    }
}

/// A group's Raft metrics.
type Metrics = openraft::RaftMetrics<crate::storage::entry::TypeConfig>;

/// A leader's view of whether its group is quiet (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Quiet {
    inner: Mutex<QuietInner>,
    /// Mirrors `inner.quiet` for lock-free reads.
    quiet: AtomicBool,
}

#[derive(Debug, Default)]
struct QuietInner {
    /// The settled `(term, last index)` seen at the last heartbeat tick.
    mark: Option<(u64, u64)>,
    /// Heartbeat ticks in a row at `mark`.
    settled: u32,
    quiet: bool,
    /// Per peer, when it last confirmed in a quiet beat that it follows this node, and in which
    /// term. Kept when the group wakes: they stay valid confirmations (openraft's own lease,
    /// stale after a quiet spell, is renewed only by the first heartbeat round after the wake).
    acks: BTreeMap<NodeId, (Instant, u64)>,
}

impl Quiet {
    /// Notes one heartbeat tick: `settled` is the group's `(term, last index)` if it is settled
    /// now. Answers whether the group is quiet (send no heartbeats).
    pub(super) fn observe(&self, settled: Option<(u64, u64)>) -> bool {
        let mut q = lock(&self.inner);
        match settled {
            Some(mark) if q.mark == Some(mark) => q.settled = q.settled.saturating_add(1),
            other => {
                q.mark = other;
                q.settled = 0;
            }
        }
        let quiet = q.mark.is_some() && q.settled >= QUIET_AFTER;
        q.quiet = quiet;
        self.quiet.store(quiet, Ordering::Relaxed);
        quiet
    }

    /// A replica asked for heartbeats or a write came: loud again (acknowledgements kept).
    /// Answers whether the group was quiet.
    pub(super) fn wake(&self) -> bool {
        let mut q = lock(&self.inner);
        let was = q.quiet;
        q.quiet = false;
        q.mark = None;
        q.settled = 0;
        self.quiet.store(false, Ordering::Relaxed);
        was
    }

    /// This node no longer leads: forget everything. Answers whether the group was quiet.
    pub(super) fn reset(&self) -> bool {
        let mut q = lock(&self.inner);
        let was = q.quiet;
        *q = QuietInner::default();
        self.quiet.store(false, Ordering::Relaxed);
        was
    }

    /// `peer` confirmed, in a quiet beat sent `at`, that it follows this node in `term`.
    pub(super) fn ack(&self, peer: NodeId, at: Instant, term: u64) {
        lock(&self.inner).acks.insert(peer, (at, term));
    }

    pub(super) fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed)
    }

    /// Whether a majority of `voters` (this node `me` included) confirmed within `lease` that
    /// they follow it in `term`: the quiet form of openraft's quorum acknowledgement.
    pub(super) fn quorum_within(
        &self,
        voters: impl Iterator<Item = NodeId>,
        me: NodeId,
        term: u64,
        lease: Duration,
    ) -> bool {
        let q = lock(&self.inner);
        let (mut total, mut acked) = (0usize, 0usize);
        for v in voters {
            total += 1;
            if v == me || q.acks.get(&v).is_some_and(|(at, t)| *t == term && at.elapsed() <= lease) {
                acked += 1;
            }
        }
        total > 0 && acked * 2 > total
    }
}

/// A leader's group is settled when every entry is committed and applied here and every other
/// replica (voters and learners) matched the last one: nothing left to replicate or to tell.
/// Answers its `(term, last index)` then.
pub(super) fn settled(m: &Metrics, me: NodeId) -> Option<(u64, u64)> {
    let last = m.last_log_index?;
    let done = |l: &Option<crate::storage::entry::LogId>| l.as_ref().map(|l| l.index) == Some(last);
    if !done(&m.local_committed) || !done(&m.last_applied) {
        return None;
    }
    let replication = m.replication.as_ref()?;
    let members = m.membership_config.membership();
    let all_matched =
        members.nodes().map(|(id, _)| *id).filter(|id| *id != me).all(|id| replication.get(&id).is_some_and(done));
    all_matched.then_some((m.current_term, last))
}

/// Whether this replica, as `from`'s follower, is exactly where `from`'s quiet beat says the
/// group is: same leader and term, every entry up to `q.last_index` held and known committed.
pub(super) fn follows_quietly(m: &Metrics, from: NodeId, q: &QuietGroup) -> bool {
    matches!(m.state, ServerState::Follower | ServerState::Learner)
        && m.current_leader == Some(from)
        && m.current_term == q.term
        && m.last_log_index == Some(q.last_index)
        && m.local_committed.as_ref().map(|l| l.index) == Some(q.last_index)
}

/// A quiet group's side on the follower: beats answered, votes refused while they keep the
/// leader alive.
impl RaftHost {
    /// Answers a quiet beat from `from` (see the module docs): each listed group this replica
    /// follows exactly as the beat says counts as heard from its leader; the others are asked to
    /// wake, including groups not hosted here (yet), so that they count toward no quorum lease.
    pub(super) fn quiet_beat(&self, from: NodeId, groups: &[QuietGroup]) -> RaftResponse {
        let mut wake = Vec::new();
        for q in groups {
            let Some(g) = self.group(q.group) else {
                wake.push(q.group);
                continue;
            };
            let follows = follows_quietly(&g.raft.metrics().borrow_watched(), from, q);
            if follows {
                g.heard.note_quietly(self.epoch);
            } else {
                wake.push(q.group);
            }
        }
        RaftResponse::QuietAck { wake }
    }

    /// A refusal for `candidate`'s (pre-)vote in `g` while this replica's leader is known alive
    /// by quiet beats: openraft refuses votes during its own leader lease, which only
    /// AppendEntries renew, so a quiet group needs this to keep a restarted or cut-off replica
    /// from unseating a live leader. Refusing a vote never breaks safety. `None`: openraft
    /// decides.
    pub(super) fn refuses_vote(&self, g: &super::host::Group, candidate: NodeId) -> Option<RaftResponse> {
        let m = g.raft.metrics().borrow_watched().clone();
        let lease = self.lease();
        let alive = match (m.state, m.current_leader) {
            (ServerState::Leader, Some(l)) if l == self.node_id => {
                g.quiet.quorum_within(m.membership_config.membership().voter_ids(), l, m.current_term, lease)
            }
            (ServerState::Follower | ServerState::Learner, Some(l)) if l != candidate => {
                g.heard.since(self.epoch).is_some_and(|d| d <= lease)
            }
            _ => false,
        };
        if !alive {
            return None;
        }
        // This replica's own (lower) vote, not granted; no last log id (openraft uses it only to
        // delay a candidate that saw a longer log).
        Some(super::wire::vote_response(openraft::raft::VoteResponse::new(m.vote, None, false)))
    }
}

/// Makes sure openraft's leader lease of `raft` (a group led here) holds, before a write:
/// openraft refuses writes once it has had no acknowledged AppendEntries from a quorum for
/// `lease` (`ForwardToLeader`, reason `LeaseExpired`), which is the normal state of a quiet
/// group (quiet beats keep Shoal's lease, not openraft's). Wakes the group, sends one round of
/// heartbeats and waits (at most `lease`) for their acknowledgements: a write after an idle
/// spell costs one extra round trip.
/// Answers whether it woke a quiet group.
pub(super) async fn renew_lease(raft: &GroupRaft, quiet: &Quiet, lease: Duration) -> bool {
    let fresh = |m: &Metrics| {
        m.last_quorum_acked.is_some_and(|at| at.elapsed() < lease / 2)
            || m.membership_config.membership().voter_ids().all(|v| v == m.id)
    };
    if fresh(&raft.metrics().borrow_watched()) {
        return false;
    }
    let woke = quiet.wake();
    let _ = raft.trigger().heartbeat().await;
    // A lease still lapsed afterwards makes the write fail as it would have anyway.
    let _ = raft.wait(Some(lease)).metrics(fresh, "leader lease renewed").await;
    woke
}

/// Sends `peer` this tick's quiet beat and applies its answer: the groups it asks to wake are
/// woken, the others count it as an acknowledgement.
async fn send_quiet_beat(host: Weak<RaftHost>, peer: NodeId, groups: Vec<QuietGroup>, deadline: Duration) {
    let Some(transport) = host.upgrade().map(|h| Arc::clone(&h.transport)) else { return };
    let sent = Instant::now();
    let listed: Vec<(GroupId, u64)> = groups.iter().map(|q| (q.group, q.term)).collect();
    let request = RaftRequest { group: 0, body: RaftRequestBody::QuietBeat { groups } };
    let answer = transport.call_with_timeout(peer, request, deadline).await;
    let Some(host) = host.upgrade() else { return };
    let wake = match answer {
        Ok(RaftResponse::QuietAck { wake }) => wake,
        // Unreachable, or a peer that does not know quiet beats: no acknowledgement.
        _ => return,
    };
    for (group, term) in listed {
        let Some(g) = host.group(group) else { continue };
        if wake.contains(&group) {
            if g.quiet.wake() {
                host.metrics.quiet_wakes.with_label_values(&[&group.to_string(), "replica"]).inc();
            }
        } else {
            g.quiet.ack(peer, sent, term);
        }
    }
}

/// The node tick's loop (see the module docs); ends with the host.
pub(super) async fn run(host: Weak<RaftHost>, timing: Timing) {
    let mut tick = tokio::time::interval(timing.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = false;
    let mut beats_sent: u32 = 0;
    loop {
        tick.tick().await;
        beat = !beat;
        let Some(strong) = host.upgrade() else { return };
        let mut heartbeats: Vec<GroupRaft> = Vec::new();
        let mut campaigns: Vec<GroupRaft> = Vec::new();
        let mut beats: HashMap<NodeId, Vec<QuietGroup>> = HashMap::new();
        for (&group, g) in strong.read_groups().iter() {
            let (seen, settled, peers) = {
                let rx = g.raft.metrics();
                let m = rx.borrow_watched();
                let known = (m.current_term, m.current_leader);
                g.leadership.send_if_modified(|v| std::mem::replace(v, known) != known);
                let successor =
                    m.current_leader.and_then(|l| successor(m.membership_config.membership().voter_ids(), l));
                let seen = Seen {
                    state: m.state,
                    leader: m.current_leader,
                    since_heard: g.heard.since(strong.epoch),
                    heard_quietly: g.heard.quietly(),
                    successor: successor == Some(strong.node_id),
                };
                let leading = m.state == ServerState::Leader && strong.quiescence && !strong.busy(group);
                let settled = if leading { settled(&m, strong.node_id) } else { None };
                let peers: Vec<NodeId> = match settled {
                    Some(_) => m
                        .membership_config
                        .membership()
                        .nodes()
                        .map(|(id, _)| *id)
                        .filter(|id| *id != strong.node_id)
                        .collect(),
                    None => Vec::new(),
                };
                (seen, settled, peers)
            };
            let plan = plan(&seen, &timing);
            g.raft.runtime_config().tick(plan.openraft_tick);
            if seen.state != ServerState::Leader {
                if g.quiet.reset() {
                    strong.metrics.quiet.with_label_values(&[&group.to_string()]).set(0);
                    strong.metrics.quiet_wakes.with_label_values(&[&group.to_string(), "leadership"]).inc();
                }
            } else if beat {
                let was_quiet = g.quiet.is_quiet();
                let quiet = g.quiet.observe(settled);
                if was_quiet && !quiet {
                    strong.metrics.quiet_wakes.with_label_values(&[&group.to_string(), "unsettled"]).inc();
                }
                strong.metrics.quiet.with_label_values(&[&group.to_string()]).set(i64::from(quiet));
                if let (true, Some((term, last_index))) = (quiet, settled) {
                    for peer in peers {
                        beats.entry(peer).or_default().push(QuietGroup { group, term, last_index });
                    }
                }
            }
            if plan.heartbeat && beat && !g.quiet.is_quiet() {
                heartbeats.push(g.raft.clone());
            }
            if plan.campaign {
                campaigns.push(g.raft.clone());
            }
        }
        drop(strong);
        if beat {
            beats_sent = beats_sent.wrapping_add(1);
        }
        if beat && beats_sent % QUIET_BEAT_EVERY == 0 {
            // Answered within one beat interval, or not counted.
            let deadline = timing.period * 2 * QUIET_BEAT_EVERY;
            for (peer, groups) in beats {
                tokio::spawn(send_quiet_beat(host.clone(), peer, groups, deadline));
            }
        }
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
            heard_quietly: false,
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
        let seen = Seen {
            state: ServerState::Leader,
            leader: Some(2),
            since_heard: None,
            heard_quietly: false,
            successor: false,
        };
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
            let seen = Seen {
                state,
                leader: None,
                since_heard: Some(Duration::from_millis(1)),
                heard_quietly: false,
                successor: true,
            };
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

    #[test]
    fn a_follower_kept_by_quiet_beats_gets_its_timer_back_only_after_the_shortest_election_timeout() {
        let t = timing();
        let r = RaftSection::default();
        let quietly = |ms: u64| Seen { heard_quietly: true, ..follower(Some(ms), false) };
        // Beats come every QUIET_BEAT_EVERY heartbeat intervals: a follower between two beats
        // keeps its timer off (switched on, openraft's stale timer would start a pre-vote).
        let between_beats = (r.heartbeat_interval * QUIET_BEAT_EVERY).as_millis() as u64 + 50;
        assert!(!plan(&quietly(between_beats), &t).openraft_tick);
        assert!(plan(&quietly(t.quiet_heard_for.as_millis() as u64), &t).openraft_tick);
        assert!(t.quiet_heard_for <= r.election_timeout_min);
    }

    #[test]
    fn a_group_goes_quiet_after_settled_heartbeats_in_a_row_and_any_change_wakes_it() {
        let q = Quiet::default();
        for _ in 0..QUIET_AFTER {
            assert!(!q.observe(Some((3, 10))), "not before {QUIET_AFTER} settled beats in a row");
        }
        assert!(q.observe(Some((3, 10))));
        assert!(q.is_quiet());
        // A new entry: loud again, and the count starts over.
        assert!(!q.observe(Some((3, 11))));
        assert!(!q.is_quiet());
        for _ in 0..QUIET_AFTER {
            q.observe(Some((3, 11)));
        }
        assert!(q.is_quiet());
        // Unsettled (something to replicate or apply).
        assert!(!q.observe(None));
        for _ in 0..=QUIET_AFTER {
            q.observe(Some((3, 11)));
        }
        assert!(q.is_quiet());
        // A replica asked to wake.
        q.wake();
        assert!(!q.is_quiet());
        assert!(!q.observe(Some((3, 11))), "woken: heartbeats again before going quiet");
    }

    #[test]
    fn a_quiet_leader_holds_its_lease_only_while_a_majority_acknowledged_its_term_recently() {
        let q = Quiet::default();
        let lease = Duration::from_millis(800);
        let voters = || [1, 2, 3].into_iter();
        assert!(!q.quorum_within(voters(), 1, 7, lease), "alone is no majority of three");
        q.ack(2, Instant::now() - Duration::from_secs(2), 7);
        assert!(!q.quorum_within(voters(), 1, 7, lease), "a stale acknowledgement");
        q.ack(3, Instant::now(), 6);
        assert!(!q.quorum_within(voters(), 1, 7, lease), "an acknowledgement of another term");
        q.ack(3, Instant::now(), 7);
        assert!(q.quorum_within(voters(), 1, 7, lease));
        // Waking keeps them (openraft's lease comes back only with the next heartbeat round);
        // losing the lead forgets them.
        for _ in 0..=QUIET_AFTER {
            q.observe(Some((7, 5)));
        }
        assert!(q.wake());
        assert!(q.quorum_within(voters(), 1, 7, lease), "still confirmed after a wake");
        q.reset();
        assert!(!q.quorum_within(voters(), 1, 7, lease), "forgotten once no longer leading");
        let five = || [1, 2, 3, 4, 5].into_iter();
        q.ack(2, Instant::now(), 7);
        assert!(!q.quorum_within(five(), 1, 7, lease), "two of five");
        q.ack(4, Instant::now(), 7);
        assert!(q.quorum_within(five(), 1, 7, lease), "three of five");
    }

    #[test]
    fn heard_tells_a_quiet_beat_from_an_append() {
        let epoch = Instant::now() - Duration::from_secs(5);
        let h = Heard::default();
        h.note_quietly(epoch);
        assert!(h.quietly());
        assert!(h.since(epoch).is_some_and(|d| d < Duration::from_secs(1)));
        h.note(epoch);
        assert!(!h.quietly());
        assert!(h.since(epoch).is_some_and(|d| d < Duration::from_secs(1)));
    }
}
