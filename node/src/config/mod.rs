//! Node configuration: TOML on disk, typed and validated here, nowhere else.
//!
//! Every field has a documented default (see `config/shoal.example.toml`). Relative paths are
//! resolved against the directory of the config file, so a cluster directory can be moved whole.

mod objects;
mod overrides;
mod payments;
mod ratelimit;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NodeId;
pub use objects::ObjectsSection;
pub use overrides::apply_override;
pub use payments::{DEFAULT_GATEWAY_KEY, DEFAULT_WEBHOOK_SECRET, MIN_IDEMPOTENCY_TTL, PaymentsSection};
pub use ratelimit::{Algorithm, MAX_LEASE_TTL, OnUnavailable, RateKey, RateLimitSection, RatePolicy, RoutePattern};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file (or `<override>`).
        path: PathBuf,
        /// The parser's description, naming the field.
        message: String,
    },
    /// A field holds a value that cannot work.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the bad field, e.g. `membership.down_after_missed`.
        field: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// A `--set KEY=VALUE` override is malformed.
    #[error("invalid override `{0}`: expected KEY=VALUE with a dotted key, e.g. log.filter=debug")]
    Override(String),
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_string(), reason: reason.into() }
}

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and data directory of this node.
    pub node: NodeSection,
    /// The client-facing HTTP server.
    #[serde(default)]
    pub http: HttpSection,
    /// The peer transport (QUIC between nodes).
    #[serde(default)]
    pub peer: PeerSection,
    /// Certificates for mutual TLS between nodes.
    pub tls: TlsSection,
    /// Bootstrap: founding members or a node to join through.
    pub cluster: ClusterSection,
    /// Heartbeats and failure detection.
    #[serde(default)]
    pub membership: MembershipSection,
    /// Raft groups: partitions, replication, timing.
    #[serde(default)]
    pub raft: RaftSection,
    /// Users and tokens.
    #[serde(default)]
    pub auth: AuthSection,
    /// The URL shortener.
    #[serde(default)]
    pub urls: UrlsSection,
    /// The rate limiter.
    #[serde(default)]
    pub ratelimit: RateLimitSection,
    /// Chat.
    #[serde(default)]
    pub chat: ChatSection,
    /// The S3 endpoint.
    #[serde(default)]
    pub s3: S3Section,
    /// Object storage (behind the S3 endpoint).
    #[serde(default)]
    pub objects: ObjectsSection,
    /// Payments.
    #[serde(default)]
    pub payments: PaymentsSection,
    /// Restart policy of the actor supervisor.
    #[serde(default)]
    pub supervisor: SupervisorSection,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// The placement driver.
    #[serde(default)]
    pub placement: PlacementSection,
    /// Switches for tests; all off by default.
    #[serde(default)]
    pub testing: TestingSection,
}

/// `[node]`: who this node is and where it keeps its data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id (≥ 1); must match the id in its certificate.
    pub id: NodeId,
    /// Directory for this node's durable state; created if missing.
    pub data_dir: PathBuf,
    /// Threads of the node's async runtime; 0 (the default) means one per core. Nodes sharing
    /// a machine (`shoal dev up`, the tests) do better with fewer: `dev up` gives each node
    /// its share of the cores.
    #[serde(default)]
    pub worker_threads: usize,
}

impl NodeSection {
    /// `worker_threads` for each of `nodes` nodes sharing this machine (`shoal dev up`, local
    /// benchmarks): an equal share of the cores, at least one. On 2 cores with 3 nodes, one
    /// thread each halved the thread switches per write and cut the servers' CPU per write by
    /// about a third (`docs/design.md`, "Where the CPU goes").
    pub fn shared_machine_workers(nodes: usize) -> usize {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (cores / nodes.max(1)).max(1)
    }
}

/// `[http]`: the client API, health and metrics endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach it (host:port); defaults to `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// A request taking longer than this is answered with 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests handled at once; more wait.
    pub max_in_flight: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            advertise: None,
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
        }
    }
}

/// `[peer]`: the QUIC transport between nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PeerSection {
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address other nodes dial (host:port); defaults to `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Largest RPC frame accepted, in bytes; longer length prefixes are refused before reading.
    pub max_frame_bytes: u32,
    /// Deadline of every RPC call, connecting included.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// Deadline of a connection handshake.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Calls in flight to one peer at once (both directions are capped).
    pub max_in_flight_per_peer: u32,
    /// QUIC keep-alive period; must be below `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// A connection silent for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// First delay before redialling a peer that could not be reached.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_min: Duration,
    /// Longest delay between redials.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
}

impl Default for PeerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            advertise: None,
            max_frame_bytes: 16 * 1024 * 1024,
            rpc_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_in_flight_per_peer: 512,
            keep_alive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(1),
        }
    }
}

/// `[tls]`: PEM files made by `shoal certs init`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster CA certificate; peers must present a certificate it signed.
    pub ca_cert: PathBuf,
    /// This node's certificate (its subject names the node id).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// One founding member of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberAddr {
    /// Node id.
    pub id: NodeId,
    /// Its QUIC address (host:port).
    pub peer_addr: String,
    /// Its HTTP address (host:port).
    pub http_addr: String,
}

/// `[cluster]`: how this node finds the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The founding nodes; identical on each of them.
    pub initial_members: Vec<MemberAddr>,
    /// Peer addresses of existing members to join through, for a node not among the founders.
    pub join: Vec<String>,
}

/// `[membership]`: heartbeats and the failure detector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipSection {
    /// How often every peer is probed.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Consecutive missed heartbeats after which a peer is marked down.
    pub down_after_missed: u32,
}

impl Default for MembershipSection {
    fn default() -> Self {
        Self { heartbeat_interval: Duration::from_millis(500), down_after_missed: 4 }
    }
}

impl MembershipSection {
    /// The longest time a dead peer can still be reported up.
    pub fn detection_time(&self) -> Duration {
        self.heartbeat_interval * (self.down_after_missed + 1)
    }
}

/// `[raft]`: the meta group and the partition groups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Partition groups (P). Fixed when the cluster is created; must be the same on every node.
    pub partitions: u64,
    /// Voters per partition group (R), capped by the number of founders.
    pub replication_factor: usize,
    /// Heartbeat period: each period, every group this node leads sends its followers a
    /// heartbeat, all groups at once.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Shortest election timeout.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    /// Longest election timeout.
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// A snapshot is taken after this many entries since the last one; older logs are purged.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the last snapshot, so a briefly lagging follower catches up
    /// from the log instead of a snapshot.
    pub keep_logs_after_snapshot: u64,
    /// Most commands the batching proposer packs into one log entry.
    pub max_batch: usize,
    /// Batch proposals (default). `false` proposes every command as its own log entry, for
    /// measuring what batching buys.
    pub batching: bool,
    /// Idle groups go quiet (default): a leader stops heartbeating a group with nothing left to
    /// replicate, and one small message per peer and heartbeat interval keeps all such groups'
    /// followers from electing. `false` heartbeats every group always.
    pub quiescence: bool,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            partitions: 16,
            replication_factor: 3,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(800),
            snapshot_after_entries: 10_000,
            keep_logs_after_snapshot: 1_000,
            max_batch: 1024,
            batching: true,
            quiescence: true,
        }
    }
}

/// `[auth]`: sign-up and the admin token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Anyone may create a user with `POST /v1/users`; when false, the admin token is required.
    pub open_signup: bool,
    /// Bearer token with every right (at least 16 characters); unset: no admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self { open_signup: true, admin_token: None }
    }
}

/// `[urls]`: the URL shortener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UrlsSection {
    /// Base of the short links this node hands out (`{base_url}/{code}`); unset: this node's
    /// HTTP address. Links to it are refused as targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Mappings each node's redirect cache holds.
    pub cache_capacity: u64,
    /// A cached link older than this is checked against its partition again on its next use
    /// (and served stale if the partition cannot answer). Deletions are pushed to every member
    /// at once; this bounds how long a member that missed one may still redirect.
    #[serde(with = "humantime_serde")]
    pub cache_fresh_for: Duration,
    /// Codes a node reserves from the cluster at once (one Raft write per block).
    pub code_block: u64,
    /// Lifetime of a link created without `expires_at`.
    #[serde(with = "humantime_serde")]
    pub default_retention: Duration,
}

impl Default for UrlsSection {
    fn default() -> Self {
        Self {
            base_url: None,
            cache_capacity: 100_000,
            cache_fresh_for: Duration::from_secs(10),
            code_block: 10_000,
            default_retention: Duration::from_secs(5 * 365 * 24 * 3600),
        }
    }
}

/// `[chat]`: one-on-one conversations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChatSection {
    /// Longest message body accepted, in bytes of UTF-8 (each message is one Raft command).
    pub max_body_bytes: usize,
    /// Longest WebSocket frame a client may send; a longer one closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Events one WebSocket session may have queued; a session that falls further behind is
    /// closed with 1013 and resyncs when it reconnects.
    pub session_queue: usize,
    /// How often a node pings its WebSocket sessions and tells the users' owners who is live.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A user with no live session for this long is offline; a session silent this long (no
    /// frame, no pong) is closed.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
}

/// Default of `chat.max_body_bytes`.
pub const DEFAULT_CHAT_MAX_BODY_BYTES: usize = 4096;
/// Largest `chat.max_body_bytes` allowed.
pub const MAX_CHAT_BODY_BYTES: usize = 64 * 1024;
/// Room a `send` frame needs besides its body (type, recipient, client_msg_id, quoting).
pub const CHAT_FRAME_OVERHEAD: usize = 512;
/// Largest `chat.max_frame_bytes` allowed.
pub const MAX_CHAT_FRAME_BYTES: usize = 1024 * 1024;

impl Default for ChatSection {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_CHAT_MAX_BODY_BYTES,
            max_frame_bytes: 16 * 1024,
            session_queue: 4096,
            heartbeat: Duration::from_secs(10),
            offline_after: Duration::from_secs(30),
        }
    }
}

/// `[s3]`: the S3-compatible endpoint, a listener of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// Address the S3 endpoint binds (none: no S3 endpoint on this node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// `[supervisor]`: restarts of failed actors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSection {
    /// Delay before the first restart of a failed actor; doubles per consecutive failure.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_min: Duration,
    /// Longest delay before a restart.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    /// Restarts of one actor allowed within `restart_window`; one more stops the node (exit 1).
    pub max_restarts: u32,
    /// The window `max_restarts` is counted in.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self {
            restart_backoff_min: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(5),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// `[shutdown]`: what SIGTERM does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// In-flight requests get this long to finish before they are cut off.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        Self { drain_timeout: Duration::from_secs(10) }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `RUST_LOG`-style filter; the `RUST_LOG` environment variable wins when set.
    pub filter: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { filter: "info,openraft=error".to_string(), format: LogFormat::Text }
    }
}

/// `[placement]`: the placement driver on the meta leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementSection {
    /// How often the driver compares the layout with member health and group memberships.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A member unreachable this long is dead: its replicas move to spare nodes, if any.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// Hand partition leadership back to each partition's preferred leader (spread over the
    /// nodes) when it is up and caught up, e.g. after a restarted node has caught up.
    pub balance_leaders: bool,
}

impl Default for PlacementSection {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), dead_after: Duration::from_secs(60), balance_leaders: true }
    }
}

/// `[testing]`: never enable in production.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TestingSection {
    /// Enables `POST /v1/testing/faults/{actor}`, which makes a named actor fail.
    pub fault_injection: bool,
}

impl Config {
    /// Reads, parses and validates `path`; relative paths inside are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_overrides(path, &[])
    }

    /// Like [`Config::load`], with `KEY=VALUE` overrides applied before parsing.
    pub fn load_with_overrides(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let mut config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without resolving paths; for tests and generated configs.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: "<inline>".into(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Makes every relative path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.node.data_dir, &mut self.tls.ca_cert, &mut self.tls.cert, &mut self.tls.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The address peers dial to reach this node.
    pub fn advertised_peer_addr(&self) -> String {
        self.peer.advertise.clone().unwrap_or_else(|| self.peer.listen.to_string())
    }

    /// The address clients use to reach this node's HTTP API.
    pub fn advertised_http_addr(&self) -> String {
        self.http.advertise.clone().unwrap_or_else(|| self.http.listen.to_string())
    }

    /// Checks every value that parsing alone cannot; the error names the bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.id == 0 {
            return Err(invalid("node.id", "must be at least 1"));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "must not be empty"));
        }
        let h = &self.http;
        if h.body_limit_bytes == 0 {
            return Err(invalid("http.body_limit_bytes", "must be greater than 0"));
        }
        nonzero("http.request_timeout", h.request_timeout)?;
        if h.max_in_flight == 0 {
            return Err(invalid("http.max_in_flight", "must be greater than 0"));
        }
        if let Some(a) = &h.advertise {
            host_port("http.advertise", a)?;
        }
        let p = &self.peer;
        if !(1024..=256 * 1024 * 1024).contains(&p.max_frame_bytes) {
            return Err(invalid("peer.max_frame_bytes", "must be between 1024 and 268435456"));
        }
        nonzero("peer.rpc_timeout", p.rpc_timeout)?;
        nonzero("peer.connect_timeout", p.connect_timeout)?;
        nonzero("peer.keep_alive_interval", p.keep_alive_interval)?;
        nonzero("peer.reconnect_backoff_min", p.reconnect_backoff_min)?;
        if p.max_in_flight_per_peer == 0 {
            return Err(invalid("peer.max_in_flight_per_peer", "must be greater than 0"));
        }
        if p.keep_alive_interval >= p.idle_timeout {
            return Err(invalid(
                "peer.keep_alive_interval",
                "must be shorter than peer.idle_timeout, or idle connections are dropped",
            ));
        }
        if p.reconnect_backoff_max < p.reconnect_backoff_min {
            return Err(invalid("peer.reconnect_backoff_max", "must be at least peer.reconnect_backoff_min"));
        }
        if p.listen == h.listen {
            return Err(invalid("peer.listen", "must differ from http.listen"));
        }
        if let Some(a) = &p.advertise {
            host_port("peer.advertise", a)?;
        }
        let m = &self.membership;
        nonzero("membership.heartbeat_interval", m.heartbeat_interval)?;
        if m.down_after_missed == 0 {
            return Err(invalid("membership.down_after_missed", "must be at least 1"));
        }
        let r = &self.raft;
        if !(1..=1024).contains(&r.partitions) {
            return Err(invalid("raft.partitions", "must be between 1 and 1024"));
        }
        if !(1..=7).contains(&r.replication_factor) {
            return Err(invalid("raft.replication_factor", "must be between 1 and 7"));
        }
        nonzero("raft.heartbeat_interval", r.heartbeat_interval)?;
        if r.election_timeout_min <= r.heartbeat_interval * 2 {
            return Err(invalid("raft.election_timeout_min", "must exceed twice raft.heartbeat_interval"));
        }
        if r.election_timeout_max <= r.election_timeout_min {
            return Err(invalid("raft.election_timeout_max", "must exceed raft.election_timeout_min"));
        }
        if r.snapshot_after_entries < 100 {
            return Err(invalid("raft.snapshot_after_entries", "must be at least 100"));
        }
        if r.max_batch == 0 {
            return Err(invalid("raft.max_batch", "must be at least 1"));
        }
        nonzero("placement.interval", self.placement.interval)?;
        if self.placement.dead_after < self.membership.heartbeat_interval * 2 {
            return Err(invalid("placement.dead_after", "must be at least two membership heartbeat intervals"));
        }
        if self.auth.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(invalid("auth.admin_token", "must be at least 16 characters"));
        }
        let u = &self.urls;
        if let Some(base) = &u.base_url
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(invalid("urls.base_url", "must start with http:// or https://"));
        }
        if u.cache_capacity == 0 {
            return Err(invalid("urls.cache_capacity", "must be at least 1"));
        }
        nonzero("urls.cache_fresh_for", u.cache_fresh_for)?;
        if !(1..=1_000_000).contains(&u.code_block) {
            return Err(invalid("urls.code_block", "must be between 1 and 1000000"));
        }
        nonzero("urls.default_retention", u.default_retention)?;
        ratelimit::validate(&self.ratelimit)?;
        payments::validate(&self.payments)?;
        if !(1..=MAX_CHAT_BODY_BYTES).contains(&self.chat.max_body_bytes) {
            return Err(invalid("chat.max_body_bytes", format!("must be between 1 and {MAX_CHAT_BODY_BYTES}")));
        }
        let least = self.chat.max_body_bytes + CHAT_FRAME_OVERHEAD;
        if !(least..=MAX_CHAT_FRAME_BYTES).contains(&self.chat.max_frame_bytes) {
            return Err(invalid(
                "chat.max_frame_bytes",
                format!(
                    "must be between chat.max_body_bytes + {CHAT_FRAME_OVERHEAD} ({least}) and {MAX_CHAT_FRAME_BYTES}"
                ),
            ));
        }
        if !(16..=1_000_000).contains(&self.chat.session_queue) {
            return Err(invalid("chat.session_queue", "must be between 16 and 1000000"));
        }
        if self.chat.heartbeat < Duration::from_millis(100) {
            return Err(invalid("chat.heartbeat", "must be at least 100ms"));
        }
        if self.chat.offline_after < self.chat.heartbeat * 2 {
            return Err(invalid("chat.offline_after", "must be at least twice chat.heartbeat"));
        }
        objects::validate(&self.objects)?;
        if let Some(s3) = self.s3.listen
            && (s3 == self.http.listen || s3 == self.peer.listen)
        {
            return Err(invalid("s3.listen", "must differ from http.listen and peer.listen"));
        }
        let s = &self.supervisor;
        nonzero("supervisor.restart_backoff_min", s.restart_backoff_min)?;
        if s.restart_backoff_max < s.restart_backoff_min {
            return Err(invalid("supervisor.restart_backoff_max", "must be at least supervisor.restart_backoff_min"));
        }
        nonzero("supervisor.restart_window", s.restart_window)?;
        nonzero("shutdown.drain_timeout", self.shutdown.drain_timeout)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid("log.filter", format!("not a valid filter: {e}")));
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if c.initial_members.is_empty() && c.join.is_empty() {
            return Err(invalid(
                "cluster.initial_members",
                "list the founding members, or set cluster.join to join an existing cluster",
            ));
        }
        let mut ids = BTreeSet::new();
        let mut peers = BTreeSet::new();
        for (i, m) in c.initial_members.iter().enumerate() {
            let field = format!("cluster.initial_members[{i}]");
            if m.id == 0 {
                return Err(invalid(&format!("{field}.id"), "must be at least 1"));
            }
            if !ids.insert(m.id) {
                return Err(invalid(&format!("{field}.id"), format!("node {} is listed twice", m.id)));
            }
            host_port(&format!("{field}.peer_addr"), &m.peer_addr)?;
            host_port(&format!("{field}.http_addr"), &m.http_addr)?;
            if !peers.insert(m.peer_addr.clone()) {
                return Err(invalid(
                    &format!("{field}.peer_addr"),
                    format!("{} is used by another member", m.peer_addr),
                ));
            }
        }
        for (i, a) in c.join.iter().enumerate() {
            host_port(&format!("cluster.join[{i}]"), a)?;
        }
        if let Some(me) = c.initial_members.iter().find(|m| m.id == self.node.id) {
            if me.peer_addr != self.advertised_peer_addr() {
                return Err(invalid(
                    "cluster.initial_members",
                    format!(
                        "node {} is listed with peer_addr {} but advertises {}",
                        me.id,
                        me.peer_addr,
                        self.advertised_peer_addr()
                    ),
                ));
            }
        } else if c.join.is_empty() {
            return Err(invalid(
                "cluster.join",
                format!(
                    "node {} is not among cluster.initial_members, so it needs an address to join through",
                    self.node.id
                ),
            ));
        }
        Ok(())
    }
}

fn nonzero(field: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() { Err(invalid(field, "must be longer than 0")) } else { Ok(()) }
}

/// Accepts `host:port` with a non-empty host and a port in 1..=65535.
fn host_port(field: &str, value: &str) -> Result<(), ConfigError> {
    let bad = || invalid(field, format!("`{value}` is not host:port"));
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
