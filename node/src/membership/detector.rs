//! The failure detector: pure state, fed with probe outcomes and the time they happened.
//!
//! A peer starts `Down` (never seen), turns `Up` on its first answered heartbeat, and turns `Down`
//! after `down_after_missed` consecutive missed heartbeats.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::NodeId;

/// A peer's health as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Answering heartbeats.
    Up,
    /// Never answered, or missed too many heartbeats.
    Down,
}

/// What the detector knows about one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerHealth {
    /// Current verdict.
    pub state: PeerState,
    /// Consecutive missed heartbeats.
    pub missed: u32,
    /// When the peer last answered.
    pub last_ack: Option<Instant>,
    /// Round trip of the last answered heartbeat.
    pub rtt: Option<Duration>,
}

impl Default for PeerHealth {
    fn default() -> Self {
        Self { state: PeerState::Down, missed: 0, last_ack: None, rtt: None }
    }
}

/// Heartbeat bookkeeping for every peer.
#[derive(Debug, Clone)]
pub struct FailureDetector {
    down_after_missed: u32,
    peers: BTreeMap<NodeId, PeerHealth>,
}

impl FailureDetector {
    /// A detector that marks a peer down after `down_after_missed` consecutive misses.
    pub fn new(down_after_missed: u32) -> Self {
        Self { down_after_missed: down_after_missed.max(1), peers: BTreeMap::new() }
    }

    /// Starts tracking `peer` (as down, never seen) if it is not tracked yet.
    pub fn track(&mut self, peer: NodeId) {
        self.peers.entry(peer).or_default();
    }

    /// Records an answered heartbeat; returns the new state if it changed.
    pub fn record_ack(&mut self, peer: NodeId, at: Instant, rtt: Duration) -> Option<PeerState> {
        let h = self.peers.entry(peer).or_default();
        h.missed = 0;
        h.last_ack = Some(at);
        h.rtt = Some(rtt);
        (h.state != PeerState::Up).then(|| {
            h.state = PeerState::Up;
            PeerState::Up
        })
    }

    /// Records a missed heartbeat; returns the new state if it changed.
    pub fn record_miss(&mut self, peer: NodeId) -> Option<PeerState> {
        let limit = self.down_after_missed;
        let h = self.peers.entry(peer).or_default();
        h.missed = h.missed.saturating_add(1);
        (h.state == PeerState::Up && h.missed >= limit).then(|| {
            h.state = PeerState::Down;
            PeerState::Down
        })
    }

    /// What is known about `peer`.
    pub fn health(&self, peer: NodeId) -> Option<&PeerHealth> {
        self.peers.get(&peer)
    }

    /// Peers currently up.
    pub fn up_count(&self) -> usize {
        self.peers.values().filter(|h| h.state == PeerState::Up).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn new_peer_is_down_until_it_answers() {
        let mut d = FailureDetector::new(3);
        d.track(2);
        assert_eq!(d.health(2).map(|h| h.state), Some(PeerState::Down));
        assert_eq!(d.record_miss(2), None, "a never-seen peer stays down without a transition");
        let t0 = Instant::now();
        assert_eq!(d.record_ack(2, t0, 2 * MS), Some(PeerState::Up));
        assert_eq!(d.record_ack(2, t0 + 500 * MS, 2 * MS), None);
        assert_eq!(d.up_count(), 1);
    }

    #[test]
    fn down_after_exactly_n_consecutive_misses() {
        let mut d = FailureDetector::new(3);
        let t0 = Instant::now();
        d.record_ack(2, t0, MS);
        assert_eq!(d.record_miss(2), None);
        assert_eq!(d.record_miss(2), None);
        assert_eq!(d.record_miss(2), Some(PeerState::Down));
        assert_eq!(d.record_miss(2), None, "no repeated transition");
        let h = d.health(2).expect("tracked");
        assert_eq!(h.missed, 4);
        assert_eq!(h.last_ack, Some(t0), "last_ack keeps the last answer");
    }

    #[test]
    fn an_answer_resets_the_miss_count() {
        let mut d = FailureDetector::new(2);
        let t0 = Instant::now();
        d.record_ack(5, t0, MS);
        d.record_miss(5);
        d.record_ack(5, t0 + 1000 * MS, 3 * MS);
        assert_eq!(d.record_miss(5), None, "one miss after an answer is not enough");
        assert_eq!(d.record_miss(5), Some(PeerState::Down));
        assert_eq!(d.record_ack(5, t0 + 3000 * MS, MS), Some(PeerState::Up));
        assert_eq!(d.health(5).and_then(|h| h.rtt), Some(MS));
    }

    #[test]
    fn zero_threshold_is_treated_as_one() {
        let mut d = FailureDetector::new(0);
        d.record_ack(1, Instant::now(), MS);
        assert_eq!(d.record_miss(1), Some(PeerState::Down));
    }
}
