//! The cluster-wide rate limiter.
//!
//! Each key (`policy:user` or `policy:ip`) is owned, in memory, by the leader of the key's
//! partition, and decided there on the owner's monotonic clock, so the limit holds across every
//! node and clock skew cannot widen a window. Other nodes ask the owner over QUIC: checks bound
//! for one owner queue up while a call to it is in flight and go out together as the next call.
//! When the owner does not answer within `ratelimit.owner_timeout` (or no owner is known), the
//! policy's `on_unavailable` decides. A new owner after a failover starts with fresh state.
//!
//! Leases: a node sending many requests for a token-bucket key asks the owner for a few requests
//! ahead, sized to its recent demand, and admits them on its own within `ratelimit.lease_ttl`
//! of the latest moment the answer could arrive (`owner_timeout` after asking, so a slow answer
//! is not wasted), asking for more before they run out, one call at a time per key. The owner
//! counts a lease so that however the holder spends it within the span, nothing beyond the
//! limit is admitted ([`Limit::lease`]), and leases at most a share of what is left, so near the
//! limit every request is decided by the owner. Requests leased and never spent are lost to the
//! window: leases are sized to about half a span's demand to keep that small.

pub mod http;
pub mod math;
pub mod metrics;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkyv::{Archive, Deserialize, Serialize};

pub use self::math::{Algorithm, Decision, Limit, State};
pub use self::metrics::RateLimitMetrics;
use super::client::Client;
use super::peer::{self, PeerError, PeerMessage};
use super::{Payload, ServiceId};
use crate::NodeId;
pub use crate::config::{MAX_LEASE_TTL, RoutePattern};
use crate::config::{OnUnavailable, RateKey, RateLimitSection, RatePolicy};
use crate::storage::records::RecordError;
use crate::transport::Transport;
use crate::util::batcher::{Batcher, BatcherConfig};
use crate::util::lock;

/// The limiter's service id: it replicates nothing, but its peer messages carry it.
pub const ID: ServiceId = 4;

/// Checks one call to an owner carries at most.
const MAX_BATCH: usize = 512;
/// Checks that may wait per owner besides the call in flight; a check finding the queue full
/// is not queued (the policy's `on_unavailable` decides).
const QUEUE_CAPACITY: usize = MAX_BATCH * 8;
/// An owner's queue task ends after this long without checks.
const OWNER_IDLE: Duration = Duration::from_secs(60);
/// Idle keys are forgotten this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Requests one lease carries at most.
const MAX_LEASE: u64 = 4096;
/// One lease takes at most this fraction (1/n) of what a key has left.
const LEASE_SHARE: u64 = 8;
/// A node asks for a lease once it sends at least this many requests for a key per lease span.
const LEASE_DEMAND: u64 = 4;
/// One configured policy, ready to use.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its configuration.
    pub cfg: RatePolicy,
    /// Its arithmetic.
    pub limit: Limit,
    routes: Vec<RoutePattern>,
    except: Vec<RoutePattern>,
}

impl Policy {
    /// A configured policy (its routes were checked by `Config::validate`).
    pub fn new(cfg: &RatePolicy) -> Self {
        Self {
            limit: Limit { limit: cfg.limit, window_ns: duration_ns(cfg.window), algorithm: cfg.algorithm },
            routes: cfg.routes.iter().filter_map(|r| RoutePattern::parse(r).ok()).collect(),
            except: cfg.except.iter().filter_map(|r| RoutePattern::parse(r).ok()).collect(),
            cfg: cfg.clone(),
        }
    }

    /// Whether the policy covers a request with `method` to `route`.
    pub fn covers(&self, method: &str, route: &str) -> bool {
        self.routes.iter().any(|r| r.matches(method, route)) && !self.except.iter().any(|r| r.matches(method, route))
    }

    /// `RateLimit-Policy` item: `"name";q=limit;w=seconds`.
    pub fn header_item(&self) -> String {
        format!("\"{}\";q={};w={}", self.cfg.name, self.cfg.limit, self.cfg.window.as_secs().max(1))
    }
}

/// Who is asking, as the policies key requests.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The authenticated user's id, if any.
    pub user: Option<String>,
    /// The client's IP.
    pub ip: IpAddr,
}

impl Requester {
    fn key(&self, policy: &Policy) -> String {
        let who = match (policy.cfg.key, &self.user) {
            (RateKey::User, Some(user)) => format!("user:{user}"),
            _ => format!("ip:{}", self.ip),
        };
        format!("{}/{who}", policy.cfg.name)
    }
}

/// One policy's outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The owner decided.
    Decided(Decision),
    /// The owner could not answer; `admitted` is the policy's `on_unavailable`.
    Unavailable {
        /// Whether the request is admitted anyway.
        admitted: bool,
    },
}

impl Outcome {
    /// Whether the request may go on.
    pub fn admitted(&self) -> bool {
        match self {
            Outcome::Decided(d) => d.allowed,
            Outcome::Unavailable { admitted } => *admitted,
        }
    }
}

/// A check sent to a key's owner.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RateCheck {
    /// Policy name.
    pub policy: String,
    /// The key (`policy/user:…` or `policy/ip:…`).
    pub key: String,
    /// false: only look.
    pub consume: bool,
    /// Requests the caller would like leased besides (0: none).
    pub lease: u64,
    /// How long the caller may spend a lease, in nanoseconds.
    pub lease_ttl_ns: u64,
}

/// Checks for one owner, decided in order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RateChecks {
    /// The checks.
    pub checks: Vec<RateCheck>,
}

/// An owner's answer to one [`RateCheck`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RateAnswer {
    /// Decided on the owner's clock.
    Decided {
        /// Admitted.
        allowed: bool,
        /// Requests left now.
        remaining: u64,
        /// Nanoseconds until the quota is full again.
        reset_ns: u64,
        /// When refused: nanoseconds until a request would be admitted.
        retry_after_ns: u64,
        /// Requests leased to the caller, to spend within its lease span (not in `remaining`).
        leased: u64,
        /// The owner's clock when it decided, in nanoseconds (orders answers from one owner).
        at_ns: u64,
    },
    /// The callee does not lead the key's partition (any more).
    NotOwner,
    /// The callee has no such policy.
    UnknownPolicy,
}

/// Answers to [`RateChecks`], in order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RateAnswers {
    /// The answers.
    pub answers: Vec<RateAnswer>,
}

impl RateAnswer {
    /// The decision in an owner's answer, if it decided.
    fn decision(&self) -> Option<Decision> {
        match *self {
            RateAnswer::Decided { allowed, remaining, reset_ns, retry_after_ns, .. } => {
                Some(Decision { allowed, remaining, reset_ns, retry_after_ns })
            }
            RateAnswer::NotOwner | RateAnswer::UnknownPolicy => None,
        }
    }
}

impl PeerMessage for RateChecks {
    const SERVICE: ServiceId = ID;
    const METHOD: &'static str = "ratelimit";
    type Reply = RateAnswers;
}

/// The queues of checks bound for other owners: one call in flight per owner, each carrying
/// what queued meanwhile (up to [`MAX_BATCH`]); checks whose caller gave up are left out.
type Owners = Batcher<NodeId, RateCheck, RateAnswer, Arc<PeerError>>;

/// Requests an owner leased to this node, to spend before `expires`.
#[derive(Debug)]
struct Grant {
    left: u64,
    expires: Instant,
}

/// What this node holds for one key another node owns: its leases, and the key's recent demand
/// here, which sizes the next lease.
#[derive(Debug)]
struct Held {
    owner: NodeId,
    /// Oldest first.
    grants: VecDeque<Grant>,
    /// The owner's `remaining` and `reset_ns` at its latest answer (leases not counted), when
    /// that came, and the owner's clock when it decided.
    remaining: u64,
    reset_ns: u64,
    answered: Instant,
    decided_ns: u64,
    /// A call asking for a lease is out (one at a time per key).
    refilling: bool,
    /// Requests in the current lease span (from `span_start`) and in the one before.
    span_start: Instant,
    uses: u64,
    prev_uses: u64,
}

impl Held {
    fn new(owner: NodeId, now: Instant) -> Self {
        Self {
            owner,
            grants: VecDeque::new(),
            remaining: 0,
            reset_ns: 0,
            answered: now,
            decided_ns: 0,
            refilling: false,
            span_start: now,
            uses: 0,
            prev_uses: 0,
        }
    }

    /// Counts one request for the key.
    fn note(&mut self, now: Instant, ttl: Duration) {
        let since = now.saturating_duration_since(self.span_start);
        if since >= ttl {
            self.prev_uses = if since < ttl * 2 { self.uses } else { 0 };
            self.uses = 0;
            self.span_start = now;
        }
        self.uses += 1;
    }

    /// Requests to ask for: about half a span's demand, so a lease is spent well before it
    /// expires; none for a key this node seldom sends.
    fn want(&self) -> u64 {
        let demand = self.uses.max(self.prev_uses);
        if demand < LEASE_DEMAND { 0 } else { (demand / 2).min(MAX_LEASE) }
    }

    /// Admits one request from a lease, if one is left; also says how many are left after it.
    fn take(&mut self, now: Instant) -> Option<(Decision, u64)> {
        self.grants.retain(|g| g.expires > now && g.left > 0);
        let left = self.grants.iter().map(|g| g.left).sum::<u64>().checked_sub(1)?;
        if let Some(grant) = self.grants.front_mut() {
            grant.left -= 1;
        }
        let since = duration_ns(now.saturating_duration_since(self.answered));
        let decision = Decision {
            allowed: true,
            remaining: self.remaining + left,
            reset_ns: self.reset_ns.saturating_sub(since),
            retry_after_ns: 0,
        };
        Some((decision, left))
    }

    /// Takes in the owner's answer to a call sent at `sent` that asked for a lease spanning
    /// `span`.
    fn answered(&mut self, answer: &RateAnswer, sent: Instant, span: Duration) {
        if let RateAnswer::Decided { remaining, reset_ns, leased, at_ns, .. } = *answer {
            // Answers to concurrent calls may be taken in any order; an older one's `remaining`
            // still counts leases a newer one granted.
            if at_ns >= self.decided_ns {
                (self.remaining, self.reset_ns, self.answered, self.decided_ns) =
                    (remaining, reset_ns, Instant::now(), at_ns);
            }
            // The span runs from before the owner granted it, so it ends no later than the
            // owner counted it to.
            if leased > 0 {
                self.grants.push_back(Grant { left: leased, expires: sent + span });
            }
        }
    }
}

/// The limiter of one node: the policies, the keys this node owns, and the queues to other
/// owners.
pub struct Limiter {
    cfg: RateLimitSection,
    policies: Vec<Policy>,
    node_id: NodeId,
    client: Client,
    origin: Instant,
    owned: Mutex<HashMap<String, State>>,
    held: Arc<Mutex<HashMap<String, Held>>>,
    owners: Owners,
    metrics: RateLimitMetrics,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("policies", &self.policies.len()).finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter with the configured policies.
    pub fn new(
        cfg: RateLimitSection,
        node_id: NodeId,
        transport: Arc<Transport>,
        client: Client,
        metrics: RateLimitMetrics,
    ) -> Arc<Self> {
        let timeout = cfg.owner_timeout;
        let config =
            BatcherConfig { max_batch: MAX_BATCH, capacity: QUEUE_CAPACITY, idle: OWNER_IDLE, skip_abandoned: true };
        let batch_checks = metrics.batch_checks.clone();
        let owners = Batcher::new(config, move |owner, checks| {
            let transport = Arc::clone(&transport);
            async move {
                let answers = peer::call(&transport, owner, &RateChecks { checks }, timeout).await.map_err(Arc::new)?;
                Ok(answers.answers)
            }
        })
        .with_observer(move |_, checks| batch_checks.observe(checks as f64));
        Arc::new(Self {
            policies: cfg.policies.iter().map(Policy::new).collect(),
            cfg,
            node_id,
            client,
            origin: Instant::now(),
            owned: Mutex::new(HashMap::new()),
            held: Arc::new(Mutex::new(HashMap::new())),
            owners,
            metrics,
        })
    }

    /// Whether the limiter is on.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// Every policy.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policies covering a request (`route`: its template, else its path).
    pub fn covering(&self, method: &str, route: &str) -> Vec<&Policy> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        self.policies.iter().filter(|p| p.covers(method, route)).collect()
    }

    fn now_ns(&self) -> u64 {
        duration_ns(self.origin.elapsed())
    }

    /// Checks (and with `consume`, counts) a request against each of `policies`.
    pub async fn check(&self, policies: &[&Policy], who: &Requester, consume: bool) -> Vec<Outcome> {
        let checks = policies.iter().map(|p| async move {
            let start = Instant::now();
            let key = who.key(p);
            let (decision, place) = self.ask_owner(p, key, consume).await;
            self.metrics.check_seconds.with_label_values(&[place]).observe(start.elapsed().as_secs_f64());
            let outcome = match decision {
                Some(d) => Outcome::Decided(d),
                None => Outcome::Unavailable { admitted: p.cfg.on_unavailable == OnUnavailable::Open },
            };
            if consume {
                let label = match outcome {
                    Outcome::Decided(d) if d.allowed => "allowed",
                    Outcome::Decided(_) => "limited",
                    Outcome::Unavailable { admitted: true } => "unavailable_open",
                    Outcome::Unavailable { admitted: false } => "unavailable_closed",
                };
                self.metrics.decisions.with_label_values(&[&p.cfg.name, label]).inc();
            }
            outcome
        });
        futures::future::join_all(checks).await
    }

    /// Decides here when this node owns the key, else from a lease this node holds, else asks
    /// the owner; `None` when nobody decided in time. Also says where it was decided (for
    /// metrics).
    async fn ask_owner(&self, policy: &Policy, key: String, consume: bool) -> (Option<Decision>, &'static str) {
        let owner = match self.client.leader_of_key(&key) {
            Some(owner) if owner == self.node_id => {
                return (self.decide(policy, &key, consume, 0, 0).decision(), "local");
            }
            Some(owner) => owner,
            None => return (None, "none"),
        };
        let ttl = self.lease_ttl(policy, consume);
        let span = self.lease_span(ttl);
        let mut want = 0;
        if !ttl.is_zero() {
            let now = Instant::now();
            let (taken, refill) = {
                let mut held = lock(&self.held);
                let h = held.entry(key.clone()).or_insert_with(|| Held::new(owner, now));
                if h.owner != owner {
                    *h = Held::new(owner, now);
                }
                h.note(now, ttl);
                let taken = h.take(now);
                // One call asking for a lease at a time: requests that find none left while
                // one is on its way ask the owner plainly, or every one of them would be
                // leased as much, most of which would expire unspent. Ask for more once a
                // quarter of what is wanted is left.
                want = if h.refilling { 0 } else { h.want() };
                let refill = taken.is_some_and(|(_, left)| want > 0 && left <= want / 4);
                if taken.is_none() || refill {
                    h.refilling |= want > 0;
                } else {
                    want = 0;
                }
                (taken, refill)
            };
            if let Some((decision, _)) = taken {
                if refill {
                    self.refill(owner, policy, key, want, span);
                }
                return (Some(decision), "lease");
            }
        }
        let sent = Instant::now();
        let check = RateCheck {
            policy: policy.cfg.name.clone(),
            key: key.clone(),
            consume,
            lease: want,
            lease_ttl_ns: duration_ns(span),
        };
        let answer = call_through(&self.owners, owner, check, self.cfg.owner_timeout).await;
        if !ttl.is_zero()
            && let Some(h) = lock(&self.held).get_mut(&key)
        {
            if want > 0 {
                h.refilling = false;
            }
            if let Some(a) = &answer
                && h.owner == owner
            {
                h.answered(a, sent, span);
            }
        }
        (answer.as_ref().and_then(RateAnswer::decision), "remote")
    }

    /// A policy's lease span for a request (zero: no lease).
    fn lease_ttl(&self, policy: &Policy, consume: bool) -> Duration {
        if consume && policy.limit.algorithm == Algorithm::TokenBucket { self.cfg.lease_ttl } else { Duration::ZERO }
    }

    /// How long a lease asked for now may be spent, counted from when the call is sent: its
    /// `ttl` after the latest moment the answer is taken in (the owner timeout), so a slow
    /// answer still leaves `ttl` to spend it. The owner counts the lease over the same span
    /// (capped alike at [`MAX_LEASE_TTL`]).
    fn lease_span(&self, ttl: Duration) -> Duration {
        if ttl.is_zero() { ttl } else { (ttl + self.cfg.owner_timeout).min(MAX_LEASE_TTL) }
    }

    /// Asks `owner` for `want` more requests of `key`, in the background.
    fn refill(&self, owner: NodeId, policy: &Policy, key: String, want: u64, span: Duration) {
        let (held, timeout) = (Arc::clone(&self.held), self.cfg.owner_timeout);
        let check = RateCheck {
            policy: policy.cfg.name.clone(),
            key: key.clone(),
            consume: false,
            lease: want,
            lease_ttl_ns: duration_ns(span),
        };
        let sent = Instant::now();
        // Queued here (a full queue: no refill this time), answered in the background.
        let reply = self.owners.try_enqueue(owner, check).ok();
        tokio::spawn(async move {
            let answer = match reply {
                Some(reply) => tokio::time::timeout(timeout, reply).await.ok().and_then(Result::ok),
                None => None,
            };
            if let Some(h) = lock(&held).get_mut(&key) {
                h.refilling = false;
                if let Some(a) = &answer
                    && h.owner == owner
                {
                    h.answered(a, sent, span);
                }
            }
        });
    }

    /// Decides `key` on this node's clock, leasing the caller up to `lease` requests besides
    /// when the request is admitted.
    fn decide(&self, policy: &Policy, key: &str, consume: bool, lease: u64, lease_ttl_ns: u64) -> RateAnswer {
        let now = self.now_ns();
        let mut owned = lock(&self.owned);
        let mut fresh = None;
        let state = match owned.get_mut(key) {
            Some(state) => state,
            None => fresh.insert(policy.limit.fresh()),
        };
        let mut d = policy.limit.check(state, now, consume);
        let mut leased = 0;
        if lease > 0 && d.allowed {
            let ttl = lease_ttl_ns.min(duration_ns(MAX_LEASE_TTL));
            leased = policy.limit.lease(state, now, lease.min(MAX_LEASE), ttl, LEASE_SHARE);
            if leased > 0 {
                self.metrics.leased.inc_by(leased);
                let after = policy.limit.check(state, now, false);
                (d.remaining, d.reset_ns) = (after.remaining, after.reset_ns);
            }
        }
        if let Some(state) = fresh
            && (consume || leased > 0)
        {
            owned.insert(key.to_string(), state);
            self.metrics.keys.set(owned.len() as i64);
        }
        RateAnswer::Decided {
            allowed: d.allowed,
            remaining: d.remaining,
            reset_ns: d.reset_ns,
            retry_after_ns: d.retry_after_ns,
            leased,
            at_ns: now,
        }
    }

    /// A peer message (checks another node sends to this owner).
    pub fn on_peer(&self, _from: NodeId, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
        self.serve(RateChecks::decode(payload)?).encode()
    }

    /// Serves checks sent by another node: decided here while this node leads each key's
    /// partition.
    pub fn serve(&self, checks: RateChecks) -> RateAnswers {
        let answers = checks
            .checks
            .into_iter()
            .map(|c| {
                let Some(policy) = self.policies.iter().find(|p| p.cfg.name == c.policy) else {
                    return RateAnswer::UnknownPolicy;
                };
                let owner = self.client.leader_of_key(&c.key);
                if owner != Some(self.node_id) {
                    return RateAnswer::NotOwner;
                }
                self.decide(policy, &c.key, c.consume, c.lease, c.lease_ttl_ns)
            })
            .collect();
        RateAnswers { answers }
    }

    /// Forgets keys whose state is as good as fresh, every [`SWEEP_EVERY`].
    pub async fn run_sweeper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            let now = self.now_ns();
            let mut owned = lock(&self.owned);
            owned.retain(|key, state| {
                let policy =
                    key.split_once('/').and_then(|(name, _)| self.policies.iter().find(|p| p.cfg.name == name));
                policy.is_some_and(|p| !p.limit.is_idle(state, now))
            });
            self.metrics.keys.set(owned.len() as i64);
            drop(owned);
            let mut held = lock(&self.held);
            held.retain(|_, h| h.refilling || h.span_start.elapsed() < SWEEP_EVERY);
        }
    }
}

/// Nanoseconds, saturating.
fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Sends one check through an owner's queue; `None` when the queue is full or the owner did not
/// answer within `timeout`.
async fn call_through(owners: &Owners, owner: NodeId, check: RateCheck, timeout: Duration) -> Option<RateAnswer> {
    let reply = owners.try_enqueue(owner, check).ok()?;
    tokio::time::timeout(timeout, reply).await.ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policies_cover_the_api_redirects_and_the_cluster_view_apart() {
        let cfg = RateLimitSection::default();
        let policies: Vec<Policy> = cfg.policies.iter().map(Policy::new).collect();
        let names = |method: &str, route: &str| -> Vec<String> {
            policies.iter().filter(|p| p.covers(method, route)).map(|p| p.cfg.name.clone()).collect()
        };
        assert_eq!(names("POST", "/v1/urls"), vec!["api"]);
        assert_eq!(names("GET", "/v1/counters/{name}"), vec!["api"]);
        assert_eq!(names("GET", "/v1/cluster"), vec!["cluster_view"]);
        assert_eq!(names("GET", "/{code}"), vec!["redirects"]);
        assert!(names("GET", "/metrics").is_empty());
        assert!(names("GET", "/healthz").is_empty());
    }
}
