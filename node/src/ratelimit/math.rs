//! Rate-limit arithmetic on a caller-supplied clock (nanoseconds of a monotonic clock), so it is
//! pure and testable on made-up time.
//!
//! - **Token bucket as GCRA** (generic cell rate algorithm): one timestamp per key, the
//!   theoretical arrival time (TAT). Each admitted request pushes it one emission interval
//!   `T = window / limit` later; a request is refused when that would put it more than `window`
//!   ahead of now. So `limit` requests fit in a burst, and the bucket refills at one per `T`.
//! - **Sliding window as a log**: the admission times of the last `window`. A request is
//!   admitted only while fewer than `limit` admissions lie in `(now - window, now]`, so no window
//!   of that length ever holds more than `limit` admissions. It costs up to `limit` timestamps
//!   per key, which is why the configuration caps its limit.

use std::collections::VecDeque;

/// Which algorithm a policy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// GCRA.
    TokenBucket,
    /// Exact sliding window (a log of admissions).
    SlidingWindow,
}

/// What a check decided, with what the response headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Admitted (and counted).
    pub allowed: bool,
    /// Requests the key may still make right now.
    pub remaining: u64,
    /// Nanoseconds until the key is back to its full quota.
    pub reset_ns: u64,
    /// When refused: nanoseconds until a request would be admitted.
    pub retry_after_ns: u64,
}

/// The limiter state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// GCRA: the theoretical arrival time.
    Gcra {
        /// Nanoseconds.
        tat: u64,
    },
    /// Sliding window: admission times, oldest first.
    Log {
        /// Nanoseconds.
        admitted: VecDeque<u64>,
    },
}

/// One policy's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests per window (≥ 1).
    pub limit: u64,
    /// Window length in nanoseconds (≥ 1).
    pub window_ns: u64,
    /// The algorithm.
    pub algorithm: Algorithm,
}

impl Limit {
    /// The state of a key never seen.
    pub fn fresh(&self) -> State {
        match self.algorithm {
            Algorithm::TokenBucket => State::Gcra { tat: 0 },
            Algorithm::SlidingWindow => State::Log { admitted: VecDeque::new() },
        }
    }

    /// GCRA's emission interval (at least 1 ns).
    fn interval(&self) -> u64 {
        (self.window_ns / self.limit.max(1)).max(1)
    }

    /// Decides a request at `now`; `consume` false only looks (nothing is counted).
    pub fn check(&self, state: &mut State, now: u64, consume: bool) -> Decision {
        match state {
            State::Gcra { tat } => {
                let t = self.interval();
                let base = (*tat).max(now);
                let next = base + t;
                // Admitting would put the TAT more than a window ahead: refuse.
                if next - now > self.window_ns {
                    let retry = next - now - self.window_ns;
                    return Decision { allowed: false, remaining: 0, reset_ns: base - now, retry_after_ns: retry };
                }
                let after = if consume { next } else { base };
                if consume {
                    *tat = next;
                }
                let used = after - now;
                Decision { allowed: true, remaining: (self.window_ns - used) / t, reset_ns: used, retry_after_ns: 0 }
            }
            State::Log { admitted } => {
                // Admissions at or before now - window are outside (now - window, now].
                while admitted.front().is_some_and(|&a| a + self.window_ns <= now) {
                    admitted.pop_front();
                }
                let count = admitted.len() as u64;
                if count >= self.limit {
                    let oldest = admitted.front().copied().unwrap_or(now);
                    let retry = oldest + self.window_ns - now;
                    let newest = admitted.back().copied().unwrap_or(now);
                    return Decision {
                        allowed: false,
                        remaining: 0,
                        reset_ns: newest + self.window_ns - now,
                        retry_after_ns: retry,
                    };
                }
                if consume {
                    admitted.push_back(now);
                }
                let used = admitted.len() as u64;
                let reset = admitted.back().map(|&n| n + self.window_ns - now).unwrap_or(0);
                Decision { allowed: true, remaining: self.limit - used, reset_ns: reset, retry_after_ns: 0 }
            }
        }
    }

    /// Leases up to `want` requests to another node, which may then admit them at any moment of
    /// the next `ttl_ns` without asking; returns how many were leased. Only a token bucket
    /// leases (a sliding window stays exact, request by request). The lease is checked as if
    /// its requests all came now and counted as if they all came at the end of the span, so
    /// however the holder spends them within it, the bucket never admits more than it would
    /// have admitted request by request. At most `1 / share` of what is left goes into one
    /// lease, so close to the limit every request is decided by the owner.
    pub fn lease(&self, state: &mut State, now: u64, want: u64, ttl_ns: u64, share: u64) -> u64 {
        let State::Gcra { tat } = state else { return 0 };
        let t = self.interval();
        let base = (*tat).max(now.saturating_add(ttl_ns));
        let used = base - now;
        if used >= self.window_ns {
            return 0;
        }
        let granted = want.min((self.window_ns - used) / t / share.max(1));
        if granted > 0 {
            *tat = base + granted * t;
        }
        granted
    }

    /// Whether `state` is as good as fresh at `now` (it may be forgotten).
    pub fn is_idle(&self, state: &State, now: u64) -> bool {
        match state {
            State::Gcra { tat } => *tat <= now,
            State::Log { admitted } => admitted.back().is_none_or(|&a| a + self.window_ns <= now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limit(n: u64, window_s: u64, algorithm: Algorithm) -> Limit {
        Limit { limit: n, window_ns: window_s * SEC, algorithm }
    }

    #[test]
    fn token_bucket_admits_a_burst_of_limit_then_one_per_interval() {
        let l = limit(10, 60, Algorithm::TokenBucket);
        let mut s = l.fresh();
        let now = 1_000 * SEC;
        for i in 0..10 {
            let d = l.check(&mut s, now, true);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let d = l.check(&mut s, now, true);
        assert!(!d.allowed);
        // One token comes back every 6 s.
        assert_eq!(d.retry_after_ns, 6 * SEC);
        assert_eq!(d.reset_ns, 60 * SEC);
        assert!(!l.check(&mut s, now + 6 * SEC - 1, true).allowed);
        let d = l.check(&mut s, now + 6 * SEC, true);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // A full window later the whole burst is back.
        let later = now + 6 * SEC + 60 * SEC;
        assert_eq!(l.check(&mut s, later, false).remaining, 10);
        assert!(l.is_idle(&s, later));
    }

    #[test]
    fn looking_does_not_consume() {
        for algorithm in [Algorithm::TokenBucket, Algorithm::SlidingWindow] {
            let l = limit(3, 10, algorithm);
            let mut s = l.fresh();
            for _ in 0..5 {
                let d = l.check(&mut s, SEC, false);
                assert!(d.allowed);
                assert_eq!(d.remaining, 3, "{algorithm:?}");
            }
            assert_eq!(l.check(&mut s, SEC, true).remaining, 2, "{algorithm:?}");
        }
    }

    #[test]
    fn sliding_window_refuses_until_the_oldest_admission_leaves() {
        let l = limit(3, 10, Algorithm::SlidingWindow);
        let mut s = l.fresh();
        for t in [0, 1, 2] {
            assert!(l.check(&mut s, 100 * SEC + t * SEC, true).allowed);
        }
        let d = l.check(&mut s, 105 * SEC, true);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, 5 * SEC);
        assert!(!l.check(&mut s, 110 * SEC - 1, true).allowed);
        assert!(l.check(&mut s, 110 * SEC, true).allowed);
        assert!(!l.is_idle(&s, 115 * SEC));
        assert!(l.is_idle(&s, 122 * SEC));
    }

    /// A small deterministic generator (no test may depend on luck).
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn a_sliding_window_never_admits_more_than_the_limit_in_any_window() {
        for (seed, n, window_s) in [(1u64, 5u64, 10u64), (7, 1, 3), (42, 20, 60), (99, 3, 1)] {
            let l = limit(n, window_s, Algorithm::SlidingWindow);
            let mut s = l.fresh();
            let mut rng = seed;
            let mut now = SEC;
            let mut admitted = Vec::new();
            for _ in 0..5_000 {
                // Bursts and pauses: gaps from 0 to a fifth of the window.
                now += xorshift(&mut rng) % (l.window_ns / 5 + 1);
                if l.check(&mut s, now, true).allowed {
                    admitted.push(now);
                }
            }
            assert!(admitted.len() as u64 > n, "the test must exercise refusals and admissions");
            // Every window (a, a + window] starting just after an admission holds ≤ n.
            for (i, &start) in admitted.iter().enumerate() {
                let inside = admitted[i..].iter().take_while(|&&t| t < start + l.window_ns).count() as u64;
                assert!(inside <= n, "seed {seed}: {inside} admissions within one window, limit {n}");
            }
        }
    }

    /// Replays admissions (sorted) through a fresh bucket: every one must be admitted.
    fn conforms(l: &Limit, admitted: &mut [u64]) -> Result<(), String> {
        admitted.sort_unstable();
        let mut s = l.fresh();
        for (i, &at) in admitted.iter().enumerate() {
            if !l.check(&mut s, at, true).allowed {
                return Err(format!("admission {i} of {} at {at} ns exceeds the limit", admitted.len()));
            }
        }
        Ok(())
    }

    #[test]
    fn leased_requests_spent_anywhere_within_their_lease_never_exceed_the_limit() {
        let ttl = SEC / 20;
        let cases =
            [(3u64, 100u64, 1u64, 1u64, false), (3, 100, 1, 1, true), (11, 200, 1, 2, false), (5, 1000, 10, 8, true)];
        for (seed, n, window_s, share, at_the_end) in cases {
            let l = limit(n, window_s, Algorithm::TokenBucket);
            let mut s = l.fresh();
            let mut rng = seed;
            let mut now = SEC;
            let (mut admitted, mut leased, mut exact) = (Vec::new(), 0u64, 0u64);
            for step in 0..20_000 {
                // Now and then a pause long enough for the bucket to fill up again.
                now += if step % 500 == 0 { l.window_ns } else { xorshift(&mut rng) % (ttl / 4 + 1) };
                if xorshift(&mut rng) % 3 == 0 {
                    let granted = l.lease(&mut s, now, 1 + xorshift(&mut rng) % 64, ttl, share);
                    leased += granted;
                    // The holder spends them as adversarially as it likes: all at the last
                    // moment, or anywhere in the span.
                    for _ in 0..granted {
                        admitted.push(if at_the_end { now + ttl } else { now + xorshift(&mut rng) % (ttl + 1) });
                    }
                } else if l.check(&mut s, now, true).allowed {
                    exact += 1;
                    admitted.push(now);
                }
            }
            assert!(leased > n && exact > n, "seed {seed}: leases {leased} and checks {exact} must both admit");
            conforms(&l, &mut admitted).unwrap_or_else(|e| panic!("seed {seed}, at the end {at_the_end}: {e}"));
        }
    }

    #[test]
    fn a_lease_is_at_most_a_share_of_what_is_left_and_a_sliding_window_leases_none() {
        let l = limit(100, 1, Algorithm::TokenBucket);
        let mut s = l.fresh();
        // 100 left, less the 5 the lease span costs (50 ms at one per 10 ms): 95 / 4 = 23.
        assert_eq!(l.lease(&mut s, SEC, 1_000, SEC / 20, 4), 23);
        assert_eq!(l.check(&mut s, SEC, false).remaining, 100 - 5 - 23);
        assert_eq!(l.lease(&mut s, SEC, 3, SEC / 20, 4), 3);
        // Close to the limit nothing more is leased; requests are still decided one by one.
        for _ in 0..66 {
            assert!(l.check(&mut s, SEC, true).allowed);
        }
        assert_eq!(l.lease(&mut s, SEC, 10, SEC / 20, 4), 0);
        assert!(l.check(&mut s, SEC, true).allowed);
        let w = limit(100, 1, Algorithm::SlidingWindow);
        assert_eq!(w.lease(&mut w.fresh(), SEC, 10, SEC / 20, 1), 0);
    }

    #[test]
    fn a_token_bucket_never_admits_more_than_limit_plus_refill() {
        let l = limit(10, 10, Algorithm::TokenBucket);
        let mut s = l.fresh();
        let mut rng = 5u64;
        let mut now = SEC;
        let mut admitted = Vec::new();
        for _ in 0..5_000 {
            now += xorshift(&mut rng) % (SEC / 2);
            if l.check(&mut s, now, true).allowed {
                admitted.push(now);
            }
        }
        // In any span d, at most limit + d / interval admissions.
        for (i, &start) in admitted.iter().enumerate() {
            for &end in admitted[i..].iter().take(40) {
                let count = admitted[i..].iter().take_while(|&&t| t <= end).count() as u64;
                assert!(count <= 10 + (end - start) / l.interval(), "{count} admissions in {}ns", end - start);
            }
        }
    }
}
