//! The URL shortener: links live as records in their code's partition; each node keeps a
//! redirect cache, reserves blocks of codes, and counts clicks in memory.
//!
//! - **Shorten**: a code comes from a block of counter values this node reserved through Raft
//!   (one Raft write per block, none per shorten), through the cluster's keyed permutation. The
//!   link is created with create-if-absent in the code's partition, so a code never overwrites
//!   an alias or another code (a clash takes the next value).
//! - **Redirect**: from the cache (moka, W-TinyLFU). A mapping older than `cache_fresh_for` is
//!   checked again on use; loads are coalesced per code (one load per node however many wait),
//!   read from this node's replica of the partition when it has one, else from the leader. When
//!   the partition cannot answer, a cached mapping is served stale.
//! - **Clicks**: counted here, flushed to the partitions every second.

pub mod code;
pub mod http;
pub mod metrics;
pub mod state;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use rkyv::{Archive, Deserialize, Serialize};
use tracing::warn;

pub use self::code::Permutation;
pub use self::metrics::UrlMetrics;
use self::state::{Answer, Command, Query, Rejection, Reply};
pub use self::state::{ClickRec, UrlRec, Urls};
use super::client::{CallError, Client, Route};
use super::counters::{self, Counters};
use super::peer::{self, PeerMessage};
use super::{Consistency, Payload, ServiceId};
use crate::NodeId;
use crate::config::UrlsSection;
use crate::membership::Membership;
use crate::raft::ProposeError;
use crate::storage::records::RecordError;
use crate::transport::Transport;
use crate::util::lock;

/// Generated codes tried before giving up when each clashes with an existing link.
const CODE_ATTEMPTS: usize = 8;
/// A click flush round runs this often.
pub const CLICK_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Generated values looked at for a code of the partition a node writes to now.
const CODE_SEARCH: usize = 256;
/// How long a node hands out codes of one partition before the next it leads.
const AFFINITY_PERIOD: Duration = Duration::from_secs(1);
/// How long a cached "no such code" is trusted.
const MISSING_FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a deletion broadcast waits for each member.
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a shortener operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The alias is in use.
    #[error("the alias `{0}` is taken")]
    Taken(String),
    /// No such link.
    #[error("no link has the code `{0}`")]
    NotFound(String),
    /// The caller does not own the link.
    #[error("the link `{0}` belongs to another user")]
    NotOwner(String),
    /// The cluster could not answer (see the inner error for whether anything happened).
    #[error(transparent)]
    Cluster(#[from] CallError),
    /// Something that should not happen (a corrupt record, an exhausted code space).
    #[error("{0}")]
    Internal(String),
}

fn unexpected<T: std::fmt::Debug>(what: T) -> UrlError {
    UrlError::Internal(format!("unexpected answer {what:?}"))
}

/// What a cached code maps to, and when it was read.
#[derive(Debug)]
struct Cached {
    link: Option<UrlRec>,
    fetched: Instant,
}

impl Cached {
    /// Links are fresh for `fresh_for`; "no such code" for at most [`MISSING_FRESH_FOR`], so a
    /// code created elsewhere right after a lookup here is found soon.
    fn is_fresh(&self, fresh_for: Duration) -> bool {
        let limit = if self.link.is_some() { fresh_for } else { fresh_for.min(MISSING_FRESH_FOR) };
        self.fetched.elapsed() < limit
    }
}

/// A deletion, told to every member by the node that made it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UrlDeleted {
    /// The code.
    pub code: String,
    /// Its tombstone record, as stored.
    pub record: Vec<u8>,
}

impl PeerMessage for UrlDeleted {
    const SERVICE: ServiceId = <Urls as super::Service>::ID;
    const METHOD: &'static str = "url_deleted";
    type Reply = ();
}

/// How a redirect lookup was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Fresh in the cache.
    Hit,
    /// Loaded by this request.
    Miss,
    /// Loaded by a concurrent request this one waited for.
    Coalesced,
    /// The partition could not answer; a stale mapping was served.
    Stale,
}

impl CacheResult {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
        }
    }
}

/// Clicks of one code counted on this node since the last flush.
#[derive(Debug, Default)]
struct PendingClicks {
    days: HashMap<u32, u64>,
    referrers: HashMap<String, u64>,
    count: u64,
}

#[derive(Debug, Default)]
struct ClickBuffer {
    codes: HashMap<String, PendingClicks>,
    oldest: Option<Instant>,
}

/// A new link as the API asks for it.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// Target URL (already checked).
    pub url: String,
    /// Requested alias (already checked), else a generated code.
    pub alias: Option<String>,
    /// Expiry, Unix milliseconds.
    pub expires_ms: u64,
}

/// The shortener of one node. Shared by HTTP actor restarts, so its cache and reserved codes
/// outlive them.
pub struct UrlService {
    cfg: UrlsSection,
    client: Client,
    metrics: UrlMetrics,
    transport: Arc<Transport>,
    membership: Arc<Membership>,
    cache: Cache<String, Arc<Cached>>,
    codes: Mutex<Vec<Range<u64>>>,
    /// Held while a block of codes is being reserved (one reservation at a time).
    reserving: tokio::sync::Mutex<()>,
    permutation: OnceLock<Permutation>,
    clicks: Mutex<ClickBuffer>,
}

impl std::fmt::Debug for UrlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlService").field("cached", &self.cache.entry_count()).finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Whether `link` redirects at `now_ms`: `Err("deleted" | "expired")` when it no longer does.
pub fn live(link: &UrlRec, now_ms: u64) -> Result<(), &'static str> {
    if link.deleted_ms != 0 {
        Err("deleted")
    } else if link.expires_ms <= now_ms {
        Err("expired")
    } else {
        Ok(())
    }
}

impl UrlService {
    /// A shortener with an empty cache.
    pub fn new(
        cfg: UrlsSection,
        metrics: UrlMetrics,
        client: Client,
        transport: Arc<Transport>,
        membership: Arc<Membership>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            transport,
            membership,
            cache: Cache::builder().max_capacity(cfg.cache_capacity).build(),
            cfg,
            metrics,
            codes: Mutex::new(Vec::new()),
            reserving: tokio::sync::Mutex::new(()),
            permutation: OnceLock::new(),
            clicks: Mutex::new(ClickBuffer::default()),
        })
    }

    /// The instruments.
    pub fn metrics(&self) -> &UrlMetrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &UrlsSection {
        &self.cfg
    }

    /// Creates a link owned by `owner`; answers its code.
    pub async fn create(self: &Arc<Self>, owner: &str, new: NewLink) -> Result<String, UrlError> {
        let rec = UrlRec {
            url: new.url,
            owner: owner.to_string(),
            created_ms: now_ms(),
            expires_ms: new.expires_ms,
            deleted_ms: 0,
        };
        if let Some(alias) = new.alias {
            return match self.create_at(&alias, rec).await? {
                true => Ok(alias),
                false => Err(UrlError::Taken(alias)),
            };
        }
        for _ in 0..CODE_ATTEMPTS {
            let code = self.next_code().await?;
            if self.create_at(&code, rec.clone()).await? {
                return Ok(code);
            }
            // An alias (or, after a key change, a code) holds it already: take the next one.
        }
        Err(UrlError::Internal(format!("{CODE_ATTEMPTS} generated codes in a row were taken")))
    }

    /// Create-if-absent of `code` in its partition: false when the code exists.
    async fn create_at(&self, code: &str, link: UrlRec) -> Result<bool, UrlError> {
        let command = Command::Create { code: code.to_string(), link };
        match self.client.propose::<Urls>(code, &command).await? {
            Ok(_) => {
                // A cached "no such code" must not outlive the creation here.
                self.cache.invalidate(code).await;
                Ok(true)
            }
            Err(Rejection::Exists) => Ok(false),
            Err(other) => Err(unexpected(other)),
        }
    }

    /// The next generated code (not reserved, not yet created).
    /// Write affinity: a node hands out codes of one partition it leads at a time, moving to
    /// the next one it leads every [`AFFINITY_PERIOD`]. Its creates then need no forwarding hop,
    /// and concurrent ones share log entries of that one partition, where spreading them over
    /// every partition left about two per entry. Other values are skipped (the code space is
    /// 3.5 × 10^12; a node that leads nothing, or a search longer than [`CODE_SEARCH`] values,
    /// takes whatever comes).
    async fn next_code(self: &Arc<Self>) -> Result<String, UrlError> {
        let permutation = self.permutation().await?;
        let led = self.client.led_partitions();
        let period = AFFINITY_PERIOD.as_millis() as u64;
        let target = (!led.is_empty()).then(|| led[((now_ms() / period) as usize) % led.len()]);
        let mut tries = 0;
        loop {
            let value = self.next_value().await?;
            let code = permutation
                .code(value)
                .ok_or_else(|| UrlError::Internal("every 7-character code has been handed out".into()))?;
            if code::is_reserved(&code) {
                continue;
            }
            tries += 1;
            if tries >= CODE_SEARCH || target.is_none_or(|t| self.client.partition_of(&code) == t) {
                return Ok(code);
            }
        }
    }

    /// The next value of a reserved block; reserves a block when none is left, and the next
    /// one in the background once half of the last is used.
    async fn next_value(self: &Arc<Self>) -> Result<u64, UrlError> {
        loop {
            {
                let mut blocks = lock(&self.codes);
                if let Some(block) = blocks.first_mut() {
                    let value = block.start;
                    block.start += 1;
                    if block.is_empty() {
                        blocks.remove(0);
                    }
                    let left: u64 = blocks.iter().map(|b| b.end - b.start).sum();
                    if left < self.cfg.code_block / 2 {
                        let me = Arc::clone(self);
                        tokio::spawn(async move {
                            if let Ok(_guard) = me.reserving.try_lock()
                                && let Err(e) = me.reserve().await
                            {
                                warn!(error = %e, "cannot reserve a block of short codes ahead");
                            }
                        });
                    }
                    return Ok(value);
                }
            }
            let _guard = self.reserving.lock().await;
            if lock(&self.codes).is_empty() {
                self.reserve().await?;
            }
        }
    }

    /// Reserves one block of values (caller holds `reserving`), unless enough are left.
    async fn reserve(&self) -> Result<(), UrlError> {
        let left: u64 = lock(&self.codes).iter().map(|b| b.end - b.start).sum();
        if left >= self.cfg.code_block / 2 && left > 0 {
            return Ok(());
        }
        let count = self.cfg.code_block;
        let command = counters::Command::Reserve { name: code::CODE_COUNTER.into(), count };
        let first = match self.client.propose::<Counters>(code::CODE_COUNTER, &command).await? {
            Ok(first) => first,
            Err(rejection) => return Err(UrlError::Internal(format!("cannot reserve codes: {rejection}"))),
        };
        self.metrics.code_blocks.inc();
        lock(&self.codes).push(first..first + count);
        Ok(())
    }

    /// The cluster's code permutation: its key is in meta state, set once by whichever node
    /// needs it first.
    async fn permutation(&self) -> Result<&Permutation, UrlError> {
        if let Some(p) = self.permutation.get() {
            return Ok(p);
        }
        let key = match self.client.read::<Urls>(Route::Meta, &Query::CodeKey, Consistency::Local).await? {
            Answer::CodeKey(Some(key)) => key,
            Answer::CodeKey(None) => {
                let fresh: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
                // The first key proposed wins; every node gets that one back.
                match self.client.propose::<Urls>(Route::Meta, &Command::SetCodeKey { key: fresh }).await? {
                    Ok(Reply::CodeKey(key)) => key,
                    other => return Err(unexpected(other)),
                }
            }
            other => return Err(unexpected(other)),
        };
        Ok(self.permutation.get_or_init(|| Permutation::new(&key)))
    }

    /// The link of `code` for a redirect, through the cache.
    pub async fn resolve(&self, code: &str) -> Result<Option<UrlRec>, UrlError> {
        let fresh_for = self.cfg.cache_fresh_for;
        if let Some(c) = self.cache.get(code).await
            && c.is_fresh(fresh_for)
        {
            self.metrics.cache.with_label_values(&[CacheResult::Hit.label()]).inc();
            return Ok(c.link.clone());
        }
        // Loads of one code are serialised per key: whoever waited behind a load finds it fresh.
        let mut loaded = false;
        let computed = self
            .cache
            .entry_by_ref(code)
            .and_try_compute_with(|existing| {
                let loaded = &mut loaded;
                async move {
                    if let Some(e) = &existing
                        && e.value().is_fresh(fresh_for)
                    {
                        return Ok(Op::Nop);
                    }
                    *loaded = true;
                    match self.load(code).await {
                        Ok(link) => {
                            self.metrics.loads.with_label_values(&["ok"]).inc();
                            Ok(Op::Put(Arc::new(Cached { link, fetched: Instant::now() })))
                        }
                        Err(e) => {
                            self.metrics.loads.with_label_values(&["error"]).inc();
                            match existing {
                                Some(_) => Ok(Op::Nop),
                                None => Err(e),
                            }
                        }
                    }
                }
            })
            .await;
        let (entry, result) = match computed {
            Ok(CompResult::Inserted(e) | CompResult::ReplacedWith(e)) => (e, CacheResult::Miss),
            Ok(CompResult::Unchanged(e)) if loaded => (e, CacheResult::Stale),
            Ok(CompResult::Unchanged(e)) => (e, CacheResult::Coalesced),
            Ok(other) => return Err(UrlError::Internal(format!("unexpected cache outcome {other:?}"))),
            Err(e) => return Err(e),
        };
        self.metrics.cache.with_label_values(&[result.label()]).inc();
        Ok(entry.into_value().link.clone())
    }

    /// Reads `code` from this node's replica when it hosts the partition and has the link;
    /// otherwise (not hosted, or perhaps not applied here yet) from the partition's leader.
    async fn load(&self, code: &str) -> Result<Option<UrlRec>, UrlError> {
        let query = Query::Link { code: code.to_string() };
        if let Answer::Link(Some(link)) = self.client.read::<Urls>(code, &query, Consistency::Local).await? {
            return Ok(Some(link));
        }
        self.read(code).await
    }

    /// The link of `code` as its partition's leader has it (linearizable).
    async fn read(&self, code: &str) -> Result<Option<UrlRec>, UrlError> {
        let query = Query::Link { code: code.to_string() };
        match self.client.read::<Urls>(code, &query, Consistency::Linearizable).await? {
            Answer::Link(link) => Ok(link),
            other => Err(unexpected(other)),
        }
    }

    /// The link of `code` and its clicks, for its owner (`None` owner: an admin).
    pub async fn describe(&self, code: &str, owner: Option<&str>) -> Result<(UrlRec, ClickRec), UrlError> {
        let link = self.read(code).await?.ok_or_else(|| UrlError::NotFound(code.into()))?;
        if owner.is_some_and(|o| o != link.owner) {
            return Err(UrlError::NotOwner(code.into()));
        }
        let query = Query::Clicks { code: code.to_string() };
        match self.client.read::<Urls>(code, &query, Consistency::Linearizable).await? {
            Answer::Clicks(clicks) => Ok((link, clicks)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the link of `code` for its owner (`None` owner: an admin). The code keeps a
    /// tombstone (410, never handed out again). Other nodes stop redirecting within
    /// `cache_fresh_for`.
    pub async fn delete(&self, code: &str, owner: Option<&str>) -> Result<(), UrlError> {
        let mut tombstone = None;
        for _ in 0..CODE_ATTEMPTS {
            let expected = self.read(code).await?.ok_or_else(|| UrlError::NotFound(code.into()))?;
            if owner.is_some_and(|o| o != expected.owner) {
                return Err(UrlError::NotOwner(code.into()));
            }
            if expected.deleted_ms != 0 {
                tombstone = Some(expected);
                break;
            }
            let link = UrlRec { deleted_ms: now_ms(), ..expected.clone() };
            let command = Command::Replace { code: code.to_string(), expected, link: link.clone() };
            match self.client.propose::<Urls>(code, &command).await? {
                Ok(_) => {
                    tombstone = Some(link);
                    break;
                }
                // Changed between the read and the write: read again.
                Err(Rejection::Changed) => continue,
                Err(other) => return Err(unexpected(other)),
            }
        }
        let tombstone = tombstone.ok_or_else(|| UrlError::Internal(format!("{code} kept changing")))?;
        self.cache_deleted(code, tombstone.clone()).await;
        self.broadcast_deleted(code, &tombstone).await;
        Ok(())
    }

    /// Caches the tombstone of a deleted link. Deletion is final, so the tombstone never goes
    /// stale; it goes through the per-code compute lock, so a load in flight cannot put the
    /// live link back over it.
    pub async fn cache_deleted(&self, code: &str, tombstone: UrlRec) {
        let cached = Arc::new(Cached { link: Some(tombstone), fetched: Instant::now() });
        self.cache.entry_by_ref(code).and_compute_with(|_| async move { Op::Put(cached) }).await;
    }

    /// Tells every other member that `code` is deleted, so their caches answer 410 at once
    /// rather than after `cache_fresh_for`. A member that misses it (unreachable now) learns on
    /// its next revalidation.
    async fn broadcast_deleted(&self, code: &str, tombstone: &UrlRec) {
        let Ok(record) = tombstone.encode() else { return };
        let me = self.membership.node_id();
        let peers: Vec<NodeId> = self.membership.view().into_iter().map(|m| m.id).filter(|id| *id != me).collect();
        let sends = peers.into_iter().map(|peer| {
            let message = UrlDeleted { code: code.to_string(), record: record.clone() };
            async move {
                if let Err(e) = peer::call(&self.transport, peer, &message, BROADCAST_TIMEOUT).await {
                    warn!(peer, code, error = %e, "could not tell a member that a link was deleted; it revalidates later");
                }
            }
        });
        futures::future::join_all(sends).await;
    }

    /// A peer message (a deletion another node broadcast).
    pub async fn on_peer(&self, _from: NodeId, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
        self.on_deleted(UrlDeleted::decode(payload)?).await;
        ().encode()
    }

    /// A deletion another node broadcast.
    pub async fn on_deleted(&self, message: UrlDeleted) {
        match UrlRec::decode(&message.record) {
            Ok(tombstone) if tombstone.deleted_ms != 0 => self.cache_deleted(&message.code, tombstone).await,
            _ => self.cache.invalidate(&message.code).await,
        }
    }

    /// Counts one click of `code` (flushed within [`CLICK_FLUSH_INTERVAL`]).
    pub fn click(&self, code: &str, referrer_host: Option<String>) {
        let day = (now_ms() / 86_400_000) as u32;
        let mut buf = lock(&self.clicks);
        buf.oldest.get_or_insert_with(Instant::now);
        let pending = buf.codes.entry(code.to_string()).or_default();
        pending.count += 1;
        *pending.days.entry(day).or_default() += 1;
        if let Some(host) = referrer_host {
            *pending.referrers.entry(host).or_default() += 1;
        }
        self.metrics.clicks_unflushed.inc();
    }

    /// Sends every click counted so far to the links' partitions, one command per code (the
    /// partitions' proposers batch them into log entries). Clicks whose command was not
    /// proposed are kept for the next round; a command with an unknown outcome is not retried
    /// (it may have been applied), so its clicks may be lost, never counted twice.
    pub async fn flush_clicks(&self) {
        let (codes, oldest) = {
            let mut buf = lock(&self.clicks);
            (std::mem::take(&mut buf.codes), buf.oldest.take())
        };
        if codes.is_empty() {
            return;
        }
        if let Some(oldest) = oldest {
            self.metrics.click_flush_lag.set(oldest.elapsed().as_secs_f64());
        }
        self.metrics.click_flush_codes.observe(codes.len() as f64);
        let sends = codes.into_iter().map(|(code, pending)| async move {
            let command = Command::AddClicks {
                code: code.clone(),
                days: pending.days.iter().map(|(d, n)| (*d, *n)).collect(),
                referrers: pending.referrers.iter().map(|(h, n)| (h.clone(), *n)).collect(),
            };
            let result = self.client.propose::<Urls>(code.as_str(), &command).await;
            (code, pending, result)
        });
        for (code, pending, result) in futures::future::join_all(sends).await {
            let outcome = match result {
                Ok(_) => "ok",
                Err(
                    CallError::Starting
                    | CallError::Cluster(ProposeError::NoLeader { .. } | ProposeError::NotLeader { .. }),
                ) => {
                    let mut buf = lock(&self.clicks);
                    buf.oldest.get_or_insert_with(Instant::now);
                    let back = buf.codes.entry(code).or_default();
                    back.count += pending.count;
                    for (d, n) in pending.days {
                        *back.days.entry(d).or_default() += n;
                    }
                    for (h, n) in pending.referrers {
                        *back.referrers.entry(h).or_default() += n;
                    }
                    self.metrics.click_flushes.with_label_values(&["retried"]).inc();
                    continue;
                }
                Err(e) => {
                    warn!(code, clicks = pending.count, error = %e, "clicks may be lost: their flush had an unknown outcome");
                    "lost"
                }
            };
            self.metrics.click_flushes.with_label_values(&[outcome]).inc();
            self.metrics.clicks_unflushed.sub(pending.count as i64);
        }
    }

    /// Flushes clicks every [`CLICK_FLUSH_INTERVAL`] while the node runs.
    pub async fn run_click_flusher(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CLICK_FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush_clicks().await;
        }
    }
}
