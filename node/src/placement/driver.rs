//! The placement driver: on the meta leader, one round per `placement.interval` records new and
//! dead members in meta state, commits layout changes ([`plan`], [`rebalance`]), asks each
//! group's leader to make its membership follow the layout, and hands partition leadership to
//! each partition's preferred leader.
//!
//! The driver decides; the cluster acts. It reaches the Raft groups only through [`Cluster`],
//! implemented above it (by the router), so its decisions are unit-tested with a fake.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{GroupId, Health, MemberRec, Placement, plan, preferred_leaders, rebalance};
use crate::NodeId;
use crate::config::Config;

/// Rounds after which a partition whose preferred leader confirmed it leads is asked again,
/// even though this node saw no leader change (it sees none for groups it does not host).
const RECHECK_LEADER: u32 = 10;

/// What the driver asks of the cluster. Errors end the round (it is retried next interval).
pub trait Cluster: Sync {
    /// Why an operation did not complete.
    type Error: std::fmt::Display + Send;

    /// This node (the meta leader).
    fn me(&self) -> NodeId;

    /// The leader of `group` as this node knows it.
    fn leader_of(&self, group: GroupId) -> Option<NodeId>;

    /// Records `member` (new, moved, or its dead flag changed) in meta state.
    fn upsert_member(&self, member: MemberRec) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Replaces the layout's groups if its version is still `expected_version`; whether it took
    /// effect (a stale change is replanned next round).
    fn set_layout(
        &self,
        expected_version: u64,
        groups: BTreeMap<GroupId, Vec<NodeId>>,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Asks `group`'s leader to make `voters` and `learners` the group's membership; whether it
    /// already is (otherwise the leader works on it in the background).
    fn reconfigure(
        &self,
        group: GroupId,
        layout_version: u64,
        voters: Vec<MemberRec>,
        learners: Vec<MemberRec>,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Asks `group`'s leader to hand leadership to `to`; whether `to` leads already (otherwise
    /// the hand-over may be under way).
    fn transfer_leader(&self, group: GroupId, to: NodeId) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Counts a replica move the driver committed (`add`, `replace` or `rebalance`).
    fn moved(&self, kind: &'static str);
}

/// A member as this node's failure detector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The member.
    pub id: NodeId,
    /// Its peer address.
    pub peer_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// It answers heartbeats.
    pub up: bool,
    /// How long ago it last answered (`None`: never answered this node).
    pub last_seen: Option<Duration>,
}

/// The configuration the driver follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Unreachable this long, a member is dead and its replicas move.
    pub dead_after: Duration,
    /// Voters per partition.
    pub replication_factor: usize,
    /// Whether partition leaders are handed to their preferred nodes.
    pub balance_leaders: bool,
    /// How often a preferred leader that confirmed it leads is asked again.
    pub recheck_leader: Duration,
}

impl Settings {
    /// The settings of `cfg`.
    pub fn new(cfg: &Config) -> Self {
        Self {
            dead_after: cfg.placement.dead_after,
            replication_factor: cfg.raft.replication_factor,
            balance_leaders: cfg.placement.balance_leaders,
            recheck_leader: cfg.placement.interval * RECHECK_LEADER,
        }
    }
}

/// The driver's memory between rounds (it runs only on the meta leader and forgets everything
/// when leadership moves).
#[derive(Debug, Default)]
pub struct Driver {
    /// Since when each member that never answered this node's heartbeats has been unreachable.
    down_since: HashMap<NodeId, Instant>,
    /// Per group, the reconfiguration its leader confirmed as done.
    converged: HashMap<GroupId, (Vec<NodeId>, Vec<NodeId>)>,
    /// Per partition, when its preferred leader last confirmed it leads.
    preferred_leads: HashMap<GroupId, (NodeId, Instant)>,
}

impl Driver {
    /// Forgets everything (this node no longer leads meta).
    pub fn reset(&mut self) {
        self.down_since.clear();
        self.converged.clear();
        self.preferred_leads.clear();
    }

    /// One round at `now`: registers new members, judges health, commits layout changes
    /// ([`plan`]) and asks group leaders to make their memberships follow the layout `p`.
    pub async fn round<C: Cluster>(
        &mut self,
        cluster: &C,
        peers: &[Peer],
        p: &Placement,
        settings: &Settings,
        now: Instant,
    ) -> Result<(), C::Error> {
        // Members that joined (or changed address) are recorded in meta state first.
        for m in peers {
            let known = p.members.get(&m.id);
            if known.is_none_or(|k| k.peer_addr != m.peer_addr || k.http_addr != m.http_addr) {
                let member = MemberRec {
                    id: m.id,
                    peer_addr: m.peer_addr.clone(),
                    http_addr: m.http_addr.clone(),
                    dead: known.is_some_and(|k| k.dead),
                };
                info!(member = m.id, "recording member in meta state");
                cluster.upsert_member(member).await?;
            }
        }
        let mut health = BTreeMap::new();
        for (id, member) in &p.members {
            let seen = peers.iter().find(|v| v.id == *id);
            let up = *id == cluster.me() || seen.is_some_and(|v| v.up);
            let h = if up {
                self.down_since.remove(id);
                Health::Up
            } else {
                // Unreachable since its last answered heartbeat, as the failure detector saw it;
                // a member that never answered this node is timed from when the driver noticed.
                let unreachable = match seen.and_then(|v| v.last_seen) {
                    Some(d) => d,
                    None => now.duration_since(*self.down_since.entry(*id).or_insert(now)),
                };
                if unreachable >= settings.dead_after { Health::Dead } else { Health::Down }
            };
            if (h == Health::Dead) != member.dead && h != Health::Down {
                let member = MemberRec { dead: h == Health::Dead, ..member.clone() };
                info!(member = id, dead = member.dead, "member state changes");
                cluster.upsert_member(member).await?;
            }
            health.insert(*id, h);
        }
        if let Some((next, moves)) = plan(&p.layout, &health, settings.replication_factor) {
            if !cluster.set_layout(p.layout.version, next.groups.clone()).await? {
                return Ok(());
            }
            for m in &moves {
                let kind = if m.from.is_some() { "replace" } else { "add" };
                cluster.moved(kind);
                info!(group = m.group, from = ?m.from, to = m.to, version = next.version, "replica moved");
            }
            // Group memberships follow in the next round, from the committed layout.
            return Ok(());
        }
        for (group, voters) in &p.layout.groups {
            let learners: Vec<NodeId> = if *group == 0 {
                p.members.values().filter(|m| !m.dead && !voters.contains(&m.id)).map(|m| m.id).collect()
            } else {
                Vec::new()
            };
            let wanted = (voters.clone(), learners.clone());
            if self.converged.get(group) == Some(&wanted) {
                continue;
            }
            let records = |ids: &[NodeId]| ids.iter().filter_map(|id| p.members.get(id).cloned()).collect();
            match cluster.reconfigure(*group, p.layout.version, records(voters), records(&learners)).await {
                Ok(true) => {
                    self.converged.insert(*group, wanted);
                }
                Ok(false) => {}
                Err(e) => debug!(group, error = %e, "group leader not reachable for reconfiguration"),
            }
        }
        // Once every group follows the layout, spread replicas further (one move per round, so
        // at most one group is being changed at a time).
        let all_follow =
            p.layout.groups.iter().all(|(g, voters)| self.converged.get(g).is_some_and(|(v, _)| v == voters));
        if all_follow && let Some((next, m)) = rebalance(&p.layout, &health) {
            if !cluster.set_layout(p.layout.version, next.groups.clone()).await? {
                return Ok(());
            }
            cluster.moved("rebalance");
            info!(group = m.group, from = ?m.from, to = m.to, version = next.version, "replica moved to balance load");
            return Ok(());
        }
        // Then leaders: each partition's leader hands over to its preferred leader when that
        // node is up; one hand-over at a time in the cluster.
        if all_follow && settings.balance_leaders {
            for (group, to) in preferred_leaders(&p.layout) {
                if health.get(&to) != Some(&Health::Up) {
                    continue;
                }
                // Confirmed lately and, as far as this node sees, still so: nothing to ask.
                let confirmed = self.preferred_leads.get(&group);
                if confirmed.is_some_and(|(l, at)| *l == to && now.duration_since(*at) < settings.recheck_leader)
                    && cluster.leader_of(group) == Some(to)
                {
                    continue;
                }
                self.preferred_leads.remove(&group);
                match cluster.transfer_leader(group, to).await {
                    Ok(true) => {
                        self.preferred_leads.insert(group, (to, Instant::now()));
                    }
                    Ok(false) => break,
                    Err(e) => debug!(group, error = %e, "group leader not reachable for a hand-over"),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::placement::{Layout, initial_layout};
    use crate::util::lock;

    /// What the driver asked of the fake cluster.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Upsert(MemberRec),
        SetLayout(u64, BTreeMap<GroupId, Vec<NodeId>>),
        Reconfigure(GroupId, Vec<NodeId>, Vec<NodeId>),
        Transfer(GroupId, NodeId),
        Moved(&'static str),
    }

    /// A cluster that records every call and answers as told.
    struct Fake {
        me: NodeId,
        leaders: BTreeMap<GroupId, NodeId>,
        layout_applies: bool,
        calls: Mutex<Vec<Call>>,
    }

    impl Fake {
        fn new(me: NodeId) -> Self {
            Self { me, leaders: BTreeMap::new(), layout_applies: true, calls: Mutex::new(Vec::new()) }
        }

        fn take(&self) -> Vec<Call> {
            std::mem::take(&mut *lock(&self.calls))
        }
    }

    impl Cluster for Fake {
        type Error = String;

        fn me(&self) -> NodeId {
            self.me
        }

        fn leader_of(&self, group: GroupId) -> Option<NodeId> {
            self.leaders.get(&group).copied()
        }

        async fn upsert_member(&self, member: MemberRec) -> Result<(), String> {
            lock(&self.calls).push(Call::Upsert(member));
            Ok(())
        }

        async fn set_layout(&self, expected: u64, groups: BTreeMap<GroupId, Vec<NodeId>>) -> Result<bool, String> {
            lock(&self.calls).push(Call::SetLayout(expected, groups));
            Ok(self.layout_applies)
        }

        async fn reconfigure(
            &self,
            group: GroupId,
            _layout_version: u64,
            voters: Vec<MemberRec>,
            learners: Vec<MemberRec>,
        ) -> Result<bool, String> {
            let ids = |ms: Vec<MemberRec>| ms.into_iter().map(|m| m.id).collect();
            lock(&self.calls).push(Call::Reconfigure(group, ids(voters), ids(learners)));
            Ok(true)
        }

        async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<bool, String> {
            lock(&self.calls).push(Call::Transfer(group, to));
            Ok(true)
        }

        fn moved(&self, kind: &'static str) {
            lock(&self.calls).push(Call::Moved(kind));
        }
    }

    fn settings() -> Settings {
        Settings {
            dead_after: Duration::from_secs(60),
            replication_factor: 3,
            balance_leaders: true,
            recheck_leader: Duration::from_secs(10),
        }
    }

    fn member(id: NodeId, dead: bool) -> MemberRec {
        MemberRec { id, peer_addr: format!("10.0.0.{id}:7000"), http_addr: format!("10.0.0.{id}:8080"), dead }
    }

    fn peer(id: NodeId, up: bool, last_seen: Option<Duration>) -> Peer {
        let m = member(id, false);
        Peer { id, peer_addr: m.peer_addr, http_addr: m.http_addr, up, last_seen }
    }

    /// Members `ids` (none dead) and the founders' layout over them with `partitions` groups.
    fn placement(ids: &[NodeId], partitions: u64, version: u64) -> Placement {
        Placement {
            members: ids.iter().map(|id| (*id, member(*id, false))).collect(),
            layout: Layout { version, groups: initial_layout(ids, partitions, 3) },
        }
    }

    #[tokio::test]
    async fn a_dead_members_replicas_move_to_live_nodes() {
        let cluster = Fake::new(1);
        let p = placement(&[1, 2, 3, 4], 4, 7);
        assert!(p.layout.groups.values().any(|r| r.contains(&3)));
        let peers = [
            peer(1, true, Some(Duration::ZERO)),
            peer(2, true, None),
            peer(3, false, Some(Duration::from_secs(90))),
            peer(4, true, None),
        ];
        let mut driver = Driver::default();
        driver.round(&cluster, &peers, &p, &settings(), Instant::now()).await.expect("round");
        let calls = cluster.take();
        assert_eq!(calls[0], Call::Upsert(member(3, true)), "{calls:?}");
        let Some(Call::SetLayout(expected, groups)) = calls.get(1) else { panic!("no layout change: {calls:?}") };
        assert_eq!(*expected, 7);
        // Meta (all four nodes are voters) has no spare node: its dead replica stays.
        assert_eq!(groups[&0], p.layout.groups[&0]);
        let partitions = groups.iter().filter(|(g, _)| **g > 0);
        for (group, replicas) in partitions {
            assert!(!replicas.contains(&3), "partition {group} keeps the dead node: {replicas:?}");
            assert_eq!(replicas.len(), 3, "partition {group} changed size");
        }
        let moves = calls.iter().filter(|c| **c == Call::Moved("replace")).count();
        assert_eq!(moves, p.layout.groups.iter().filter(|(g, r)| **g > 0 && r.contains(&3)).count());
        // Group memberships follow only in the next round, from the committed layout.
        assert!(!calls.iter().any(|c| matches!(c, Call::Reconfigure(..) | Call::Transfer(..))), "{calls:?}");
    }

    #[tokio::test]
    async fn a_member_down_for_less_than_dead_after_keeps_its_replicas() {
        let cluster = Fake::new(1);
        let p = placement(&[1, 2, 3, 4], 4, 7);
        let peers = [
            peer(1, true, None),
            peer(2, true, None),
            peer(3, false, Some(Duration::from_secs(5))),
            peer(4, true, None),
        ];
        let mut driver = Driver::default();
        driver.round(&cluster, &peers, &p, &settings(), Instant::now()).await.expect("round");
        let calls = cluster.take();
        assert!(!calls.iter().any(|c| matches!(c, Call::Upsert(_) | Call::SetLayout(..))), "{calls:?}");
        // With a member down, no hand-over is started for partitions it should lead.
        assert!(!calls.iter().any(|c| matches!(c, Call::Transfer(_, 3))), "{calls:?}");
    }

    #[tokio::test]
    async fn a_stale_layout_change_is_replanned_next_round() {
        let mut cluster = Fake::new(1);
        cluster.layout_applies = false;
        let mut p = placement(&[1, 2, 3, 4], 4, 7);
        p.members.get_mut(&3).expect("member 3").dead = true;
        let peers = [
            peer(1, true, None),
            peer(2, true, None),
            peer(4, true, None),
            peer(3, false, Some(Duration::from_secs(90))),
        ];
        let mut driver = Driver::default();
        driver.round(&cluster, &peers, &p, &settings(), Instant::now()).await.expect("round");
        let calls = cluster.take();
        assert!(matches!(calls.as_slice(), [Call::SetLayout(7, _)]), "a stale change counts no move: {calls:?}");
        cluster.layout_applies = true;
        driver.round(&cluster, &peers, &p, &settings(), Instant::now()).await.expect("round");
        let calls = cluster.take();
        assert!(matches!(calls.first(), Some(Call::SetLayout(7, _))), "replanned: {calls:?}");
        assert!(calls.contains(&Call::Moved("replace")), "{calls:?}");
    }

    #[tokio::test]
    async fn a_new_member_is_recorded_first() {
        let cluster = Fake::new(1);
        let p = placement(&[1, 2, 3], 3, 1);
        let peers = [peer(1, true, None), peer(2, true, None), peer(3, true, None), peer(4, true, None)];
        let mut driver = Driver::default();
        driver.round(&cluster, &peers, &p, &settings(), Instant::now()).await.expect("round");
        assert_eq!(cluster.take().first(), Some(&Call::Upsert(member(4, false))));
    }

    #[tokio::test]
    async fn groups_that_follow_the_layout_and_preferred_leaders_are_not_asked_again() {
        let p = placement(&[1, 2, 3], 3, 1);
        let mut cluster = Fake::new(1);
        let peers = [peer(1, true, None), peer(2, true, None), peer(3, true, None)];
        let mut driver = Driver::default();
        let now = Instant::now();
        driver.round(&cluster, &peers, &p, &settings(), now).await.expect("round");
        let calls = cluster.take();
        let reconfigured: Vec<GroupId> =
            calls.iter().filter_map(|c| if let Call::Reconfigure(g, ..) = c { Some(*g) } else { None }).collect();
        assert_eq!(reconfigured, vec![0, 1, 2, 3]);
        assert!(calls.contains(&Call::Reconfigure(0, vec![1, 2, 3], vec![])), "{calls:?}");
        let preferred = preferred_leaders(&p.layout);
        let transfers: Vec<Call> = preferred.iter().map(|(g, to)| Call::Transfer(*g, *to)).collect();
        assert_eq!(calls.iter().filter(|c| matches!(c, Call::Transfer(..))).cloned().collect::<Vec<_>>(), transfers);
        // The preferred leaders lead now: nothing left to ask until the recheck is due.
        cluster.leaders = preferred;
        driver.round(&cluster, &peers, &p, &settings(), now + Duration::from_secs(1)).await.expect("round");
        assert_eq!(cluster.take(), vec![]);
        driver.round(&cluster, &peers, &p, &settings(), now + Duration::from_secs(11)).await.expect("round");
        assert_eq!(cluster.take().len(), 3, "every partition's leader is asked again after the recheck");
    }
}
