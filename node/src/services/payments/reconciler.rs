//! The reconciler: on every node, for the partitions that node leads, finishes what is pending
//! at the gateway. It asks the gateway again by Shoal's own id (the same create or refund with
//! the same `Idempotency-Key`, which replays the gateway's stored answer or performs the call
//! once), with exponential backoff and jitter. After `payments.reconcile_attempts` attempts
//! without an answer it looks the payment (or refund) up at the gateway by our id: `failed` with
//! `gateway_unreachable` only when the gateway confirms it has no such payment (refund); while
//! the gateway cannot confirm anything, it stays pending and is retried at the longest delay.
//!
//! Retry counts live in memory: a new leader starts counting again (a crash between "pending"
//! and "recorded" is found on the new leader's first scan).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::gateway::Lookup;
use super::state::{Answer, MAX_PENDING, Outcome, PendingItem, Query, Source};
use super::{Payments, PaymentsService};
use crate::services::{Consistency, Route};
use crate::util::Backoff;
use crate::util::backoff::jittered;

/// Pending items retried at once.
const CONCURRENCY: usize = 16;

/// One pending item's retry schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts made.
    pub attempts: u32,
    /// Not before then.
    pub next_at: Instant,
}

/// What the reconciler does with a pending item now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not yet: its own request may still be calling the gateway, or its retry is not due.
    Wait,
    /// Ask the gateway again.
    Retry,
    /// Ask again, and if that fails too, ask whether anything was charged.
    RetryThenLookup,
}

/// The step for an item created `age` ago with retry state `retry` (`None`: not tried yet).
pub fn step(age: Duration, retry: Option<&Retry>, now: Instant, grace: Duration, max_attempts: u32) -> Step {
    if age < grace {
        return Step::Wait;
    }
    match retry {
        Some(r) if r.next_at > now => Step::Wait,
        Some(r) if r.attempts + 1 >= max_attempts => Step::RetryThenLookup,
        None if max_attempts <= 1 => Step::RetryThenLookup,
        _ => Step::Retry,
    }
}

/// The schedule after a failed attempt number `attempts` (1-based).
pub fn after_failure(attempts: u32, now: Instant, backoff: &Backoff) -> Retry {
    Retry { attempts, next_at: now + jittered(backoff.delay_for(attempts.saturating_sub(1))) }
}

fn item_key(item: &PendingItem) -> String {
    match &item.refund {
        Some(r) => format!("{}/{}", item.payment.id, r.id),
        None => item.payment.id.clone(),
    }
}

impl PaymentsService {
    /// One gateway attempt for `item`; answers whether its outcome is now recorded.
    async fn reconcile(&self, item: &PendingItem, lookup: bool) -> bool {
        self.metrics.retries.inc();
        let p = &item.payment;
        let result = match &item.refund {
            Some(r) => self.timed("refund", self.gateway.refund(p, r)).await,
            None => self.timed("charge", self.gateway.charge(p)).await,
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) if lookup => {
                let found = match &item.refund {
                    Some(r) => self.timed("lookup_refund", self.gateway.lookup_refund(p, r)).await,
                    None => self.timed("lookup", self.gateway.lookup(p)).await,
                };
                match found {
                    Ok(Lookup::Found(outcome)) => outcome,
                    Ok(Lookup::NotFound) => Outcome::Failed {
                        code: "gateway_unreachable".into(),
                        message: match item.refund {
                            Some(_) => "The gateway could not be reached and confirms nothing was refunded.".into(),
                            None => "The gateway could not be reached and confirms nothing was charged.".into(),
                        },
                        gateway_ref: None,
                    },
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        };
        let refund_id = item.refund.as_ref().map(|r| r.id.as_str());
        match self.resolve(&p.owner, &p.id, refund_id, outcome, Source::Reconciler, None).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(payment = %p.id, error = %e, "reconciler could not record an outcome");
                false
            }
        }
    }

    /// Every pending item of partition `group` (empty when it cannot be read now).
    async fn pending_in(&self, group: u64) -> Vec<PendingItem> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let query = Query::Pending { after: after.take(), limit: MAX_PENDING };
            // This node leads the partition: its own replica has every applied entry, and a
            // read-index round every tick would keep idle (quiet) groups heartbeating. A stale
            // view costs nothing: one just committed is seen next tick, and a deposed leader
            // reconciling too is harmless (gateway idempotency keys, outcomes applied once).
            match self.client.read::<Payments>(Route::Partition(group), &query, Consistency::Local).await {
                Ok(Answer::Pending { items, next }) => {
                    all.extend(items);
                    match next {
                        Some(n) => after = Some(n),
                        None => return all,
                    }
                }
                Ok(_) | Err(_) => return all,
            }
        }
    }

    /// Runs the reconciler until the node stops.
    pub async fn run_reconciler(self: Arc<Self>) {
        let backoff = Backoff::new(self.cfg.reconcile_backoff_min, self.cfg.reconcile_backoff_max);
        let grace = self.cfg.gateway_timeout + Duration::from_secs(1);
        let mut tracked: HashMap<String, Retry> = HashMap::new();
        let mut tick = tokio::time::interval(self.cfg.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now_ms = super::super::urls::now_ms();
            let now = Instant::now();
            let mut seen = HashSet::new();
            let mut oldest = 0;
            let mut due = Vec::new();
            for group in self.client.led_partitions() {
                for item in self.pending_in(group).await {
                    let created = item.refund.as_ref().map_or(item.payment.created_at, |r| r.created_at);
                    let age = Duration::from_millis(now_ms.saturating_sub(created));
                    oldest = oldest.max(age.as_secs());
                    let key = item_key(&item);
                    let step = step(age, tracked.get(&key), now, grace, self.cfg.reconcile_attempts);
                    seen.insert(key.clone());
                    if step != Step::Wait {
                        due.push((key, item, step == Step::RetryThenLookup));
                    }
                }
            }
            self.metrics.pending.set(seen.len() as i64);
            self.metrics.oldest_pending_seconds.set(oldest as i64);
            tracked.retain(|k, _| seen.contains(k));
            let me = &self;
            let results: Vec<(String, bool)> = futures::stream::iter(due)
                .map(|(key, item, lookup)| async move { (key, me.reconcile(&item, lookup).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let now = Instant::now();
            for (key, resolved) in results {
                if resolved {
                    tracked.remove(&key);
                } else {
                    let attempts = tracked.get(&key).map_or(0, |r| r.attempts) + 1;
                    tracked.insert(key, after_failure(attempts, now, &backoff));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(11);

    #[test]
    fn a_fresh_item_waits_for_its_own_request() {
        let now = Instant::now();
        assert_eq!(step(Duration::from_secs(3), None, now, GRACE, 8), Step::Wait);
        assert_eq!(step(Duration::from_secs(12), None, now, GRACE, 8), Step::Retry);
    }

    #[test]
    fn retries_back_off_and_the_last_one_asks_what_was_charged() {
        let now = Instant::now();
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let r = after_failure(1, now, &backoff);
        let delay = r.next_at - now;
        assert!(delay >= Duration::from_millis(400) && delay < Duration::from_millis(600), "{delay:?}");
        assert_eq!(step(GRACE, Some(&r), now, GRACE, 8), Step::Wait);
        assert_eq!(step(GRACE, Some(&r), r.next_at, GRACE, 8), Step::Retry);
        let r = after_failure(7, now, &backoff);
        let delay = r.next_at - now;
        assert!(delay >= Duration::from_millis(24_000) && delay < Duration::from_millis(36_000), "{delay:?}");
        assert_eq!(step(GRACE, Some(&r), r.next_at, GRACE, 8), Step::RetryThenLookup);
        // Past the bound it keeps asking (at the longest delay) until the gateway confirms.
        let r = after_failure(20, now, &backoff);
        assert!(r.next_at - now < Duration::from_secs(37));
        assert_eq!(step(GRACE, Some(&r), r.next_at, GRACE, 8), Step::RetryThenLookup);
    }
}
