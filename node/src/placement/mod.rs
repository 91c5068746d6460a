//! Placement: which nodes replicate which Raft group. Pure functions, no I/O.
//!
//! The layout lives in meta state ([`Placement`]), versioned. [`initial_layout`] is what the
//! founders bootstrap with; [`plan`] is the placement driver's decision: given the layout and each
//! member's health, the next layout and the replica moves that lead there. [`driver`] runs those
//! decisions on the meta leader, through a small trait the Raft side implements.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::NodeId;

pub mod driver;

/// A Raft group id: 0 is meta, 1..=P are partitions.
pub type GroupId = u64;

/// A cluster member as meta state records it.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberRec {
    /// Node id.
    pub id: NodeId,
    /// QUIC address, host:port.
    pub peer_addr: String,
    /// HTTP address, host:port.
    pub http_addr: String,
    /// Declared dead by the placement driver (unreachable longer than `dead_after`); its replicas
    /// are moved away when spare nodes exist. A dead member that comes back is live again.
    pub dead: bool,
}

/// The versioned layout: the replicas (voters) of every group.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct Layout {
    /// Bumped by every change.
    pub version: u64,
    /// Group → its voters, sorted. (JSON object keys are strings: the group ids in decimal.)
    #[schema(value_type = BTreeMap<String, Vec<u64>>)]
    pub groups: BTreeMap<GroupId, Vec<NodeId>>,
}

/// Meta state's placement record: members and the layout.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Every member that ever joined, by id.
    pub members: BTreeMap<NodeId, MemberRec>,
    /// The layout.
    pub layout: Layout,
}

/// A member's health as the placement driver judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answering heartbeats: may receive replicas.
    Up,
    /// Not answering, for less than `dead_after`: left alone (it may be restarting).
    Down,
    /// Not answering for longer than `dead_after`: its replicas move to spare nodes.
    Dead,
}

/// One replica move the driver decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The group.
    pub group: GroupId,
    /// The replica removed (a dead node), or `None` when a replica is added.
    pub from: Option<NodeId>,
    /// The node receiving the replica.
    pub to: NodeId,
}

/// The placement driver's decision: the layout that should follow `layout`, given each member's
/// health, or `None` when nothing needs to change.
///
/// - A replica on a dead node is replaced by the up node, not yet a replica of that group, that
///   holds the fewest replicas (ties: lowest id). Without such a spare node the dead replica
///   stays: shrinking the group would not make it more available.
/// - A group with fewer voters than its target (meta: up to [`MAX_META_VOTERS`]; partitions:
///   `replication_factor`; both capped by the members not dead) gains replicas on spare up nodes,
///   which is how nodes that join later receive work.
/// - Down (not yet dead) nodes neither lose nor receive replicas.
pub fn plan(
    layout: &Layout,
    health: &BTreeMap<NodeId, Health>,
    replication_factor: usize,
) -> Option<(Layout, Vec<Move>)> {
    let not_dead = health.values().filter(|h| **h != Health::Dead).count();
    let mut load: BTreeMap<NodeId, usize> = health.keys().map(|id| (*id, 0)).collect();
    for (group, replicas) in &layout.groups {
        if *group != 0 {
            for n in replicas {
                *load.entry(*n).or_insert(0) += 1;
            }
        }
    }
    let mut moves = Vec::new();
    let mut groups = layout.groups.clone();
    for (group, replicas) in groups.iter_mut() {
        let target = if *group == 0 { MAX_META_VOTERS } else { replication_factor }.min(not_dead).max(1);
        let counts = *group != 0;
        let pick = |replicas: &[NodeId], load: &mut BTreeMap<NodeId, usize>| {
            let spare = health
                .iter()
                .filter(|(id, h)| **h == Health::Up && !replicas.contains(id))
                .map(|(id, _)| *id)
                .min_by_key(|id| (load.get(id).copied().unwrap_or(0), *id))?;
            if counts {
                *load.entry(spare).or_insert(0) += 1;
            }
            Some(spare)
        };
        let dead: Vec<NodeId> = replicas.iter().copied().filter(|id| health.get(id) == Some(&Health::Dead)).collect();
        for d in dead {
            let Some(to) = pick(replicas, &mut load) else { break };
            replicas.retain(|id| *id != d);
            replicas.push(to);
            if counts && let Some(l) = load.get_mut(&d) {
                *l = l.saturating_sub(1);
            }
            moves.push(Move { group: *group, from: Some(d), to });
        }
        while replicas.len() < target {
            let Some(to) = pick(replicas, &mut load) else { break };
            replicas.push(to);
            moves.push(Move { group: *group, from: None, to });
        }
        replicas.sort_unstable();
    }
    (!moves.is_empty()).then(|| (Layout { version: layout.version + 1, groups }, moves))
}

/// One step of rebalancing, for a healthy cluster whose groups all follow the layout: when the
/// most loaded up node holds at least two partition replicas more than the least loaded one,
/// move one replica (of the lowest such partition) from the first to the second. `None` when
/// balanced, or when any member holding partition replicas is not up (moving then would cost
/// availability). Repeated, this spreads replicas onto nodes that joined.
pub fn rebalance(layout: &Layout, health: &BTreeMap<NodeId, Health>) -> Option<(Layout, Move)> {
    let holds_replicas = |id: &NodeId| layout.groups.iter().any(|(g, r)| *g != 0 && r.contains(id));
    if health.iter().any(|(id, h)| *h != Health::Up && holds_replicas(id)) {
        return None;
    }
    let mut load: BTreeMap<NodeId, usize> =
        health.iter().filter(|(_, h)| **h == Health::Up).map(|(id, _)| (*id, 0)).collect();
    for replicas in layout.groups.iter().filter(|(g, _)| **g != 0).map(|(_, r)| r) {
        for n in replicas {
            if let Some(l) = load.get_mut(n) {
                *l += 1;
            }
        }
    }
    let (&max_node, &max_load) = load.iter().max_by_key(|(id, l)| (**l, **id))?;
    let (&min_node, &min_load) = load.iter().min_by_key(|(id, l)| (**l, **id))?;
    if max_load < min_load + 2 {
        return None;
    }
    let (group, _) = layout.groups.iter().find(|(g, r)| **g != 0 && r.contains(&max_node) && !r.contains(&min_node))?;
    let mut groups = layout.groups.clone();
    let replicas = groups.get_mut(group)?;
    replicas.retain(|id| *id != max_node);
    replicas.push(min_node);
    replicas.sort_unstable();
    Some((Layout { version: layout.version + 1, groups }, Move { group: *group, from: Some(max_node), to: min_node }))
}

/// Largest number of meta-group voters; further nodes would be learners.
pub const MAX_META_VOTERS: usize = 5;

/// The replicas of every group: group 0 (meta) and partitions `1..=partitions`.
///
/// Meta: the first `MAX_META_VOTERS` founders by id. Partition `p`: `replication_factor`
/// consecutive founders (capped by their number), starting at founder `(p - 1) mod n`, so
/// replicas and, with them, leaders spread evenly over the nodes.
pub fn initial_layout(
    founders: &[NodeId],
    partitions: u64,
    replication_factor: usize,
) -> BTreeMap<GroupId, Vec<NodeId>> {
    let mut nodes = founders.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut layout = BTreeMap::new();
    if nodes.is_empty() {
        return layout;
    }
    layout.insert(0, nodes.iter().copied().take(MAX_META_VOTERS).collect());
    let r = replication_factor.clamp(1, nodes.len());
    for p in 1..=partitions {
        let start = ((p - 1) % nodes.len() as u64) as usize;
        let mut replicas: Vec<NodeId> = (0..r).map(|i| nodes[(start + i) % nodes.len()]).collect();
        replicas.sort_unstable();
        layout.insert(p, replicas);
    }
    layout
}

/// The founder that should lead `group` when the cluster starts: the first replica of the group's
/// rotation in [`initial_layout`] (meta: the lowest id), so partition leaders start spread over
/// the founders.
pub fn preferred_leader(founders: &[NodeId], group: GroupId) -> Option<NodeId> {
    let mut nodes = founders.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return None;
    }
    if group == 0 {
        return nodes.first().copied();
    }
    Some(nodes[((group - 1) % nodes.len() as u64) as usize])
}

/// The node that should lead each partition of `layout`, spread so every node that holds
/// replicas leads about as many partitions as any other. Groups are assigned in order, each to
/// its voter that leads the fewest so far; ties go to the voter that comes first in a rotation
/// starting at the group's turn, which for [`initial_layout`] gives exactly [`preferred_leader`]
/// (so the cluster starts balanced and nothing moves). Meta is left out: its leader runs the
/// placement driver wherever it is. Every node computes the same answer from the same layout.
pub fn preferred_leaders(layout: &Layout) -> BTreeMap<GroupId, NodeId> {
    let mut nodes: Vec<NodeId> =
        layout.groups.iter().filter(|(g, _)| **g > 0).flat_map(|(_, r)| r.iter().copied()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut leads: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    for (group, voters) in layout.groups.iter().filter(|(g, _)| **g > 0) {
        let turn = ((group - 1) % nodes.len() as u64) as usize;
        // A voter's place in the rotation that starts at this group's turn.
        let rank = |id: &NodeId| (nodes.iter().position(|n| n == id).unwrap_or(0) + nodes.len() - turn) % nodes.len();
        let best = voters.iter().min_by_key(|id| (leads.get(id).copied().unwrap_or(0), rank(id)));
        if let Some(best) = best {
            *leads.entry(*best).or_insert(0) += 1;
            out.insert(*group, *best);
        }
    }
    out
}

/// The partition a key belongs to: FNV-1a of the key, modulo `partitions`, plus one (group 0 is
/// meta). Every node computes the same answer.
pub fn partition_of(key: &str, partitions: u64) -> GroupId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % partitions.max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(up: &[NodeId], down: &[NodeId], dead: &[NodeId]) -> BTreeMap<NodeId, Health> {
        let mut h = BTreeMap::new();
        h.extend(up.iter().map(|id| (*id, Health::Up)));
        h.extend(down.iter().map(|id| (*id, Health::Down)));
        h.extend(dead.iter().map(|id| (*id, Health::Dead)));
        h
    }

    fn layout(groups: BTreeMap<GroupId, Vec<NodeId>>) -> Layout {
        Layout { version: 7, groups }
    }

    fn loads(l: &Layout) -> BTreeMap<NodeId, usize> {
        let mut per = BTreeMap::new();
        for n in l.groups.iter().filter(|(g, _)| **g > 0).flat_map(|(_, r)| r) {
            *per.entry(*n).or_insert(0) += 1;
        }
        per
    }

    fn leads(l: &BTreeMap<GroupId, NodeId>) -> BTreeMap<NodeId, usize> {
        let mut per = BTreeMap::new();
        for n in l.values() {
            *per.entry(*n).or_insert(0) += 1;
        }
        per
    }

    #[test]
    fn preferred_leaders_of_the_initial_layout_are_the_bootstrap_ones() {
        for (founders, partitions, r) in [(vec![1, 2, 3], 16, 3), (vec![1, 2, 3, 4, 5], 10, 3), (vec![3, 1], 5, 3)] {
            let l = layout(initial_layout(&founders, partitions, r));
            let preferred = preferred_leaders(&l);
            assert_eq!(preferred.len() as u64, partitions, "every partition, no meta");
            for (group, leader) in &preferred {
                assert_eq!(Some(*leader), preferred_leader(&founders, *group), "group {group}");
                assert!(l.groups[group].contains(leader), "group {group}: the leader is a voter");
            }
        }
    }

    #[test]
    fn preferred_leaders_spread_over_the_nodes_after_moves() {
        // Node 5 died and its replicas went to 6: 6 must lead its share, nobody more than one
        // partition more than anybody else.
        let mut l = layout(initial_layout(&[1, 2, 3, 4, 5], 10, 3));
        for voters in l.groups.values_mut() {
            for v in voters.iter_mut() {
                if *v == 5 {
                    *v = 6;
                }
            }
            voters.sort_unstable();
        }
        let per = leads(&preferred_leaders(&l));
        assert_eq!(per.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 6]);
        assert!(per.values().all(|n| *n == 2), "{per:?}");
        // A lopsided layout: 1 holds every partition, 2..=4 one each; each of those leads its own.
        let mut groups = BTreeMap::from([(0, vec![1])]);
        groups.extend((1..=6).map(|g| (g, vec![1, 1 + (g % 3) + 1])));
        let per = leads(&preferred_leaders(&layout(groups)));
        assert_eq!(per.values().sum::<usize>(), 6);
        assert!(per.values().max() <= Some(&2), "{per:?}");
    }

    #[test]
    fn a_healthy_cluster_needs_no_moves() {
        let l = layout(initial_layout(&[1, 2, 3, 4, 5], 8, 3));
        assert_eq!(plan(&l, &health(&[1, 2, 3, 4, 5], &[], &[]), 3), None);
    }

    #[test]
    fn replicas_of_a_dead_node_move_to_the_least_loaded_spares() {
        let l = layout(initial_layout(&[1, 2, 3, 4, 5], 10, 3));
        let (next, moves) = plan(&l, &health(&[1, 2, 3, 4], &[], &[5]), 3).expect("moves");
        assert_eq!(next.version, 8);
        for (g, r) in next.groups.iter().filter(|(g, _)| **g > 0) {
            assert_eq!(r.len(), 3, "group {g}: {r:?}");
            assert!(!r.contains(&5), "group {g} still on the dead node: {r:?}");
        }
        let had_five = l.groups.iter().filter(|(g, r)| **g > 0 && r.contains(&5)).count();
        assert_eq!(moves.iter().filter(|m| m.from == Some(5)).count(), had_five);
        let per = loads(&next);
        let (min, max) = (per.values().min().unwrap(), per.values().max().unwrap());
        assert!(max - min <= 1, "load spread evenly: {per:?}");
        // Meta keeps its dead voter: no node outside it is spare.
        assert_eq!(next.groups[&0], vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn without_a_spare_node_the_dead_replica_stays() {
        let l = layout(initial_layout(&[1, 2, 3], 4, 3));
        assert_eq!(plan(&l, &health(&[1, 2], &[], &[3]), 3), None);
    }

    #[test]
    fn a_node_that_is_down_but_not_dead_is_left_alone() {
        let l = layout(initial_layout(&[1, 2, 3, 4], 4, 3));
        assert_eq!(plan(&l, &health(&[1, 2, 3], &[4], &[]), 3), None);
    }

    #[test]
    fn down_nodes_receive_no_replicas() {
        let l = layout(initial_layout(&[1, 2, 3, 4, 5], 5, 3));
        let (next, _) = plan(&l, &health(&[1, 2, 3], &[4], &[5]), 3).expect("moves");
        assert!(next.groups.values().flatten().all(|n| *n != 5 || next.groups[&0].contains(n)));
        for (g, r) in next.groups.iter().filter(|(g, _)| **g > 0) {
            let before = &l.groups[g];
            for n in r.iter().filter(|n| !before.contains(n)) {
                assert!([1, 2, 3].contains(n), "group {g} moved to non-up node {n}");
            }
        }
    }

    #[test]
    fn joined_nodes_fill_under_replicated_groups_and_meta_up_to_five() {
        // Created with one founder: R capped at 1. Two nodes join.
        let l = layout(initial_layout(&[1], 3, 3));
        let (next, moves) = plan(&l, &health(&[1, 2, 3], &[], &[]), 3).expect("moves");
        assert!(next.groups.values().all(|r| r == &vec![1, 2, 3]), "{next:?}");
        assert!(moves.iter().all(|m| m.from.is_none()));
        let l = layout(initial_layout(&(1..=5).collect::<Vec<_>>(), 1, 3));
        let seven = health(&(1..=7).collect::<Vec<_>>(), &[], &[]);
        assert_eq!(plan(&l, &seven, 3), None, "meta stays at five voters, partitions at R");
    }

    #[test]
    fn three_founders_replicate_everything_everywhere() {
        let l = initial_layout(&[3, 1, 2], 16, 3);
        assert_eq!(l.len(), 17);
        assert!(l.values().all(|r| r == &vec![1, 2, 3]));
    }

    #[test]
    fn five_founders_spread_partitions_evenly() {
        let l = initial_layout(&[1, 2, 3, 4, 5], 10, 3);
        assert_eq!(l[&0], vec![1, 2, 3, 4, 5]);
        let mut per_node = BTreeMap::new();
        for (g, r) in l.iter().filter(|(g, _)| **g > 0) {
            assert_eq!(r.len(), 3, "group {g}");
            for n in r {
                *per_node.entry(*n).or_insert(0) += 1;
            }
        }
        assert!(per_node.values().all(|c| *c == 6), "{per_node:?}");
    }

    #[test]
    fn replication_is_capped_by_node_count_and_meta_by_five() {
        let l = initial_layout(&[1], 4, 3);
        assert!(l.values().all(|r| r == &vec![1]));
        let l = initial_layout(&(1..=7).collect::<Vec<_>>(), 1, 3);
        assert_eq!(l[&0].len(), MAX_META_VOTERS);
    }

    #[test]
    fn preferred_leaders_rotate_over_the_founders() {
        let founders = [3, 1, 2];
        let leaders: Vec<_> = (0..=6).map(|g| preferred_leader(&founders, g)).collect();
        assert_eq!(leaders, [Some(1), Some(1), Some(2), Some(3), Some(1), Some(2), Some(3)]);
        let l = initial_layout(&founders, 6, 3);
        for g in 0..=6 {
            assert!(l[&g].contains(&preferred_leader(&founders, g).unwrap_or(0)), "group {g}");
        }
        assert_eq!(preferred_leader(&[], 1), None);
    }

    #[test]
    fn rebalancing_spreads_replicas_onto_a_joined_node_one_move_at_a_time() {
        let mut l = layout(initial_layout(&[1, 2, 3], 4, 3));
        let h = health(&[1, 2, 3, 4], &[], &[]);
        let mut steps = 0;
        while let Some((next, m)) = rebalance(&l, &h) {
            assert_eq!(next.version, l.version + 1);
            assert_eq!(m.to, 4);
            let changed: Vec<_> = next.groups.iter().filter(|(g, r)| l.groups[g] != **r).collect();
            assert_eq!(changed.len(), 1, "one group per step");
            l = next;
            steps += 1;
            assert!(steps <= 10, "terminates");
        }
        let per = loads(&l);
        assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![3, 3, 3, 3], "{per:?}");
        assert!(l.groups.iter().filter(|(g, _)| **g > 0).all(|(_, r)| r.len() == 3));
    }

    #[test]
    fn no_rebalancing_while_a_replica_holder_is_not_up() {
        let l = layout(initial_layout(&[1, 2, 3], 4, 3));
        assert_eq!(rebalance(&l, &health(&[1, 2, 4], &[3], &[])), None);
        assert_eq!(rebalance(&l, &health(&[1, 2, 3], &[], &[])), None, "balanced already");
    }

    #[test]
    fn partition_of_is_stable_and_in_range() {
        assert_eq!(partition_of("a", 16), partition_of("a", 16));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let p = partition_of(&format!("key-{i}"), 16);
            assert!((1..=16).contains(&p));
            seen.insert(p);
        }
        assert_eq!(seen.len(), 16, "keys spread over every partition");
    }
}
