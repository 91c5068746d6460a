//! The services the cluster serves, one folder each, and the seam they stand on.
//!
//! A service is a [`Service`]: a stable id and name, typed and versioned (rkyv) commands,
//! replies, rejections, queries and answers, and a deterministic [`Service::apply`] /
//! [`Service::query`] against a [`Kv`] scoped to one partition and one service (unit-testable on
//! [`MemKv`](crate::storage::MemKv), without Raft or disk). Services reach Raft only through the
//! typed [`Client`] (`propose::<S>(route, command)`, `read::<S>(route, query, consistency)`);
//! HTTP handlers never build a Raft command.
//!
//! [`REGISTRY`] is the one list of services: storage applies their commands through it by id.
//! A service's runtime parts (its HTTP routes, peer messages, background tasks, config section
//! and metrics) live in its folder and are wired by [`Services`], built once per node.
//!
//! Adding a service: see "Adding a service" in `docs/design.md`.

pub mod actor;
pub mod api;
pub mod chat;
pub mod client;
pub mod counters;
pub mod objects;
pub mod payments;
pub mod peer;
pub mod ratelimit;
pub mod urls;
pub mod users;

use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

pub use self::client::{CallError, Client, Route};
use crate::NodeId;
use crate::config::{AuthSection, Config};
use crate::membership::Membership;
pub use crate::router::Consistency;
use crate::storage::records::{self, RecordError};
pub use crate::storage::{Dispatch, Handled, Kv, KvRead, ServiceId, StoreError};
use crate::transport::Transport;
use crate::transport::proto::{Response, RpcError, RpcErrorCode, ServiceCall};

/// A type that travels through Raft as a versioned rkyv record (`[format version][archive]`),
/// decoded through validation. Every rkyv type with validation is one.
pub trait Payload: Sized {
    /// Encodes it.
    fn encode(&self) -> Result<Vec<u8>, RecordError>;
    /// Decodes it (through validation).
    fn decode(bytes: &[u8]) -> Result<Self, RecordError>;
}

impl<T> Payload for T
where
    T: rkyv::Archive + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T::Archived:
        for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + rkyv::Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    fn encode(&self) -> Result<Vec<u8>, RecordError> {
        records::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        records::decode(bytes)
    }
}

/// The value under `key`, decoded (`None`: no such key).
pub fn get<T: Payload>(kv: &dyn KvRead, key: &[u8]) -> Result<Option<T>, StoreError> {
    Ok(kv.get(key)?.map(|b| T::decode(&b)).transpose()?)
}

/// The replicated part of a service: what its partition state is and how commands change it.
pub trait Service: Send + Sync + 'static {
    /// Stable id, stored in every log entry and row of the service: never reuse or change one.
    const ID: ServiceId;
    /// Name for logs and metrics.
    const NAME: &'static str;
    /// What changes state.
    type Command: Payload;
    /// A command's successful answer.
    type Reply: Payload;
    /// Why the state machine refused a command (nothing changed).
    type Rejection: Payload + std::fmt::Debug;
    /// What reads state.
    type Query: Payload;
    /// A query's answer.
    type Answer: Payload;

    /// Applies `command` to the partition's rows of this service. Deterministic: every replica
    /// runs it on the same state and must reach the same state and answer. `Err` only when
    /// storage fails (the group then stops and restarts from its log).
    fn apply(kv: &mut dyn Kv, command: Self::Command) -> Result<Result<Self::Reply, Self::Rejection>, StoreError>;

    /// Answers `query` from the partition's rows of this service.
    fn query(kv: &dyn KvRead, query: Self::Query) -> Result<Self::Answer, StoreError>;
}

/// Tag of an encoded outcome: a reply follows.
const REPLY: u8 = 0;
/// Tag of an encoded outcome: a rejection follows.
const REJECTION: u8 = 1;

/// Encodes what `apply` decided: `[tag][record]`.
pub(crate) fn encode_outcome<S: Service>(outcome: &Result<S::Reply, S::Rejection>) -> Result<Vec<u8>, RecordError> {
    let (tag, mut body) = match outcome {
        Ok(reply) => (REPLY, reply.encode()?),
        Err(rejection) => (REJECTION, rejection.encode()?),
    };
    body.insert(0, tag);
    Ok(body)
}

/// Decodes what `apply` decided.
pub(crate) fn decode_outcome<S: Service>(bytes: &[u8]) -> Result<Result<S::Reply, S::Rejection>, RecordError> {
    match bytes.split_first() {
        Some((&REPLY, body)) => Ok(Ok(S::Reply::decode(body)?)),
        Some((&REJECTION, body)) => Ok(Err(S::Rejection::decode(body)?)),
        Some(_) => Err(RecordError::Corrupt),
        None => Err(RecordError::Empty),
    }
}

/// The byte-level face of one service, for the registry.
trait Entry: Send + Sync {
    fn id(&self) -> ServiceId;
    fn apply(&self, kv: &mut dyn Kv, command: &[u8]) -> Result<Handled, StoreError>;
    fn query(&self, kv: &dyn KvRead, query: &[u8]) -> Result<Handled, StoreError>;
}

/// [`Entry`] of service `S`.
struct Typed<S>(PhantomData<fn() -> S>);

impl<S: Service> Entry for Typed<S> {
    fn id(&self) -> ServiceId {
        S::ID
    }

    fn apply(&self, kv: &mut dyn Kv, command: &[u8]) -> Result<Handled, StoreError> {
        let Ok(command) = S::Command::decode(command) else { return Ok(Handled::BadPayload) };
        let outcome = S::apply(kv, command)?;
        Ok(Handled::Done(encode_outcome::<S>(&outcome)?))
    }

    fn query(&self, kv: &dyn KvRead, query: &[u8]) -> Result<Handled, StoreError> {
        let Ok(query) = S::Query::decode(query) else { return Ok(Handled::BadPayload) };
        let answer = S::query(kv, query)?;
        Ok(Handled::Done(answer.encode()?))
    }
}

/// Every service of this build: the one registry. A new service adds its line here (and, if
/// it has runtime parts, a field in [`Services`]).
static REGISTRY: &[&dyn Entry] = &[
    &Typed::<users::Users>(PhantomData),
    &Typed::<counters::Counters>(PhantomData),
    &Typed::<urls::Urls>(PhantomData),
    &Typed::<chat::Chat>(PhantomData),
    &Typed::<objects::Objects>(PhantomData),
    &Typed::<payments::Payments>(PhantomData),
];

/// The registry as storage's [`Dispatch`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Registry;

impl Registry {
    /// The registry as storage takes it.
    pub fn dispatch() -> Arc<dyn Dispatch> {
        Arc::new(Registry)
    }

    fn find(service: ServiceId) -> Option<&'static dyn Entry> {
        REGISTRY.iter().copied().find(|e| e.id() == service)
    }
}

impl Dispatch for Registry {
    fn apply(&self, service: ServiceId, kv: &mut dyn Kv, command: &[u8]) -> Result<Handled, StoreError> {
        match Self::find(service) {
            Some(entry) => entry.apply(kv, command),
            None => Ok(Handled::UnknownService),
        }
    }

    fn query(&self, service: ServiceId, kv: &dyn KvRead, query: &[u8]) -> Result<Handled, StoreError> {
        match Self::find(service) {
            Some(entry) => entry.query(kv, query),
            None => Ok(Handled::UnknownService),
        }
    }
}

/// Every service's HTTP routes, each declared with its OpenAPI description next to its handler
/// (a route cannot exist without it). Free of node state, so the description can be built
/// without a running node.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<Ctx> {
    utoipa_axum::router::OpenApiRouter::new()
        .merge(users::http::routes())
        .merge(counters::http::routes())
        .merge(urls::http::routes())
        .merge(ratelimit::http::routes())
        .merge(chat::http::routes())
        .merge(objects::http::routes())
        .merge(payments::http::routes())
}

/// What the wiring place hands every service when it builds them.
pub struct Platform<'a> {
    /// The node configuration (each service reads its own section).
    pub config: &'a Config,
    /// The typed Raft client.
    pub client: Client,
    /// The peer transport (services' peer messages).
    pub transport: &'a Arc<Transport>,
    /// The membership view.
    pub membership: &'a Arc<Membership>,
    /// The node's metrics registry (each service registers its own instruments).
    pub registry: &'a prometheus::Registry,
    /// The S3 endpoint's socket, bound by the wiring place (`s3.listen`; `None`: no endpoint).
    pub s3_listener: Option<std::net::TcpListener>,
}

/// A service's background task, run and restarted by the supervisor's services actor.
pub struct Task {
    /// Name for logs.
    pub name: &'static str,
    /// Starts one run of the task (it runs until the node stops; returning is a failure).
    pub start: Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Every service's runtime on this node, built once by the wiring place; HTTP actor restarts
/// share it (caches, owned keys and reserved codes outlive them). The state of every service
/// route.
pub struct Services {
    /// The typed Raft client.
    pub client: Client,
    /// `[auth]`.
    pub auth: Arc<AuthSection>,
    /// The membership view.
    pub membership: Arc<Membership>,
    /// The URL shortener.
    pub urls: Arc<urls::UrlService>,
    /// The rate limiter.
    pub ratelimit: Arc<ratelimit::Limiter>,
    /// Chat.
    pub chat: Arc<chat::ChatService>,
    /// Object storage and its S3 endpoint.
    pub objects: Arc<objects::ObjectService>,
    /// Payments.
    pub payments: Arc<payments::PaymentsService>,
    /// Base of the short links this node hands out (`urls.base_url`, else its HTTP address).
    pub short_base: Arc<str>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// The state of every service route.
pub type Ctx = Arc<Services>;

impl Services {
    /// Builds every service of this node.
    pub fn new(p: Platform<'_>) -> prometheus::Result<Arc<Self>> {
        crate::transport::proto::name_service_methods(peer::method_of);
        let c = p.config;
        let urls = urls::UrlService::new(
            c.urls.clone(),
            urls::UrlMetrics::new(p.registry)?,
            p.client.clone(),
            Arc::clone(p.transport),
            Arc::clone(p.membership),
        );
        let ratelimit = ratelimit::Limiter::new(
            c.ratelimit.clone(),
            c.node.id,
            Arc::clone(p.transport),
            p.client.clone(),
            ratelimit::RateLimitMetrics::new(p.registry)?,
        );
        let chat = chat::ChatService::new(
            c.chat.clone(),
            chat::ChatMetrics::new(p.registry)?,
            p.client.clone(),
            Arc::clone(p.transport),
            Arc::clone(p.membership),
        );
        let objects = objects::ObjectService::new(
            c.objects.clone(),
            c.node.id,
            &c.node.data_dir,
            p.client.clone(),
            Arc::clone(p.transport),
            objects::ObjectMetrics::new(p.registry)?,
            p.s3_listener,
        );
        let gateway = payments::gateway::StripeGateway::new(
            &c.payments.gateway_url,
            &c.payments.gateway_key,
            c.payments.gateway_timeout,
        );
        let payments = payments::PaymentsService::new(
            c.payments.clone(),
            payments::PaymentMetrics::new(p.registry)?,
            p.client.clone(),
            gateway,
        );
        let short_base =
            c.urls.base_url.clone().unwrap_or_else(|| format!("http://{}", c.advertised_http_addr())).into();
        Ok(Arc::new(Self {
            client: p.client,
            auth: Arc::new(c.auth.clone()),
            membership: Arc::clone(p.membership),
            urls,
            ratelimit,
            chat: Arc::new(chat),
            objects,
            payments: Arc::new(payments),
            short_base,
        }))
    }

    /// Serves a peer's message for one of the services.
    pub fn on_peer(self: &Arc<Self>, from: NodeId, call: ServiceCall) -> BoxFuture<'static, Response> {
        let me = Arc::clone(self);
        Box::pin(async move {
            let answer = match call.service {
                ratelimit::ID => me.ratelimit.on_peer(from, &call.payload),
                s if s == urls::Urls::ID => me.urls.on_peer(from, &call.payload).await,
                s if s == chat::Chat::ID => me.chat.on_peer(from, &call.payload),
                s if s == objects::Objects::ID => me.objects.on_peer(&call.payload).await,
                other => {
                    let message = format!("no service with id {other} takes peer messages");
                    return Response::Error(RpcError { code: RpcErrorCode::Refused, message });
                }
            };
            match answer {
                Ok(bytes) => Response::Service(bytes),
                Err(e) => Response::Error(RpcError { code: RpcErrorCode::BadFrame, message: e.to_string() }),
            }
        })
    }

    /// Every service's background tasks.
    pub fn tasks(self: &Arc<Self>) -> Vec<Task> {
        let limiter = Arc::clone(&self.ratelimit);
        let urls = Arc::clone(&self.urls);
        let chat = Arc::clone(&self.chat);
        let presence = Arc::clone(&self.chat);
        let objects = Arc::clone(&self.objects);
        let resync = Arc::clone(&self.objects);
        let gc = Arc::clone(&self.objects);
        let scrub = Arc::clone(&self.objects);
        let payments = Arc::clone(&self.payments);
        vec![
            Task { name: "chat_pusher", start: Box::new(move || Box::pin(chat.pusher().run())) },
            Task { name: "chat_presence", start: Box::new(move || Box::pin(Arc::clone(presence.presence()).run())) },
            Task { name: "ratelimit_sweeper", start: Box::new(move || Box::pin(Arc::clone(&limiter).run_sweeper())) },
            Task {
                name: "urls_click_flusher",
                start: Box::new(move || Box::pin(Arc::clone(&urls).run_click_flusher())),
            },
            Task { name: "objects_s3_endpoint", start: Box::new(move || Box::pin(Arc::clone(&objects).run_s3())) },
            Task { name: "objects_resync", start: Box::new(move || Box::pin(Arc::clone(&resync).run_resync())) },
            Task { name: "objects_gc", start: Box::new(move || Box::pin(Arc::clone(&gc).run_gc())) },
            Task { name: "objects_scrub", start: Box::new(move || Box::pin(Arc::clone(&scrub).run_scrub())) },
            Task {
                name: "payments_reconciler",
                start: Box::new(move || Box::pin(Arc::clone(&payments).run_reconciler())),
            },
        ]
    }

    /// Work to finish before the Raft groups stop on a graceful shutdown (clicks counted here
    /// reach their partitions).
    pub async fn drain(&self) {
        self.urls.flush_clicks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ids_are_unique() {
        // The rate limiter has peer messages only, but its id is taken all the same.
        let mut ids: Vec<ServiceId> = REGISTRY.iter().map(|e| e.id()).chain([ratelimit::ID]).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "two services share an id");
    }

    #[test]
    fn unknown_services_and_bad_payloads_are_refused_without_a_change() {
        let mut kv = crate::storage::MemKv::default();
        assert_eq!(Registry.apply(999, &mut kv, b"\x01").expect("apply"), Handled::UnknownService);
        assert_eq!(Registry.apply(counters::Counters::ID, &mut kv, b"\x01junk").expect("apply"), Handled::BadPayload);
        assert_eq!(Registry.query(counters::Counters::ID, &kv, b"").expect("query"), Handled::BadPayload);
        assert!(kv.0.is_empty());
    }

    #[test]
    fn outcomes_round_trip() {
        let ok: Result<u64, counters::Rejection> = Ok(7);
        let bytes = encode_outcome::<counters::Counters>(&ok).expect("encode");
        assert_eq!(decode_outcome::<counters::Counters>(&bytes).expect("decode"), ok);
        let no: Result<u64, counters::Rejection> = Err(counters::Rejection::Overflow);
        let bytes = encode_outcome::<counters::Counters>(&no).expect("encode");
        assert_eq!(decode_outcome::<counters::Counters>(&bytes).expect("decode"), no);
        assert!(decode_outcome::<counters::Counters>(&[9, 1]).is_err());
    }
}
