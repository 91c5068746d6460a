//! Placement: which nodes replicate which Raft group. Pure functions, no I/O.
//!
//! Today only the initial layout, computed identically on every founder from the config; the
//! placement driver that moves replicas arrives later and will version the layout in meta state.

use std::collections::BTreeMap;

use crate::NodeId;
use crate::raft::GroupId;

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
