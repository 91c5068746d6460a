//! Payments: idempotent charges and refunds through a Stripe-compatible gateway, never charged
//! twice.
//!
//! A payment, its refunds and the payer's idempotency keys live in the payer's partition
//! ([`state`]) and change only through Raft. A create is committed `pending` before the gateway
//! is called ([`gateway`], with Shoal's payment id as the gateway's idempotency key), and its
//! outcome is committed after; whatever is still pending (a timeout, a 5xx, a node that died in
//! between) is finished by the [`reconciler`] on the partition's leader, and gateway webhooks
//! ([`PaymentsService::webhook`]) may report an outcome first. The state machine applies each
//! outcome once. See "Payments" in `docs/design.md`.

pub mod cards;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod reconciler;
pub mod state;
pub mod view;

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use self::gateway::{Gateway, GatewayError, META_OWNER, META_PAYMENT_ID, META_REFUND_ID};
pub use self::metrics::PaymentMetrics;
use self::state::{
    Answer, Command, EventRec, Idem, KnownKey, NewPayment, Outcome, PaymentRec, Query, RefundRec, Rejection, Reply,
    Source,
};
pub use self::state::{PayStatus, Payments};
use super::Consistency;
use super::client::{CallError, Client};
use crate::config::PaymentsSection;
use crate::util::webhook_signature;

/// Why a payments operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// The key was used with other parameters.
    #[error("this Idempotency-Key was used with other parameters")]
    KeyReused,
    /// The key's first request is still running.
    #[error("a request with this Idempotency-Key is still running")]
    KeyInUse,
    /// No such payment of the caller.
    #[error("no such payment")]
    NotFound,
    /// The payment was not charged.
    #[error("only a succeeded payment can be refunded; this one is {0}")]
    NotRefundable(String),
    /// More than what is left.
    #[error("at most {available} can still be refunded")]
    RefundExceeds {
        /// What is left.
        available: u64,
    },
    /// A webhook's signature does not verify.
    #[error("the webhook signature does not verify: {0}")]
    BadSignature(webhook_signature::SignatureError),
    /// A webhook body that is not an event.
    #[error("the webhook body is not a gateway event")]
    BadEvent,
    /// The cluster could not answer.
    #[error(transparent)]
    Cluster(#[from] CallError),
    /// An answer of the wrong kind.
    #[error("{0}")]
    Internal(String),
}

fn unexpected<T: std::fmt::Debug>(what: T) -> PayError {
    PayError::Internal(format!("unexpected answer {what:?}"))
}

impl From<Rejection> for PayError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::KeyReused => PayError::KeyReused,
            Rejection::KeyInUse => PayError::KeyInUse,
            Rejection::NoPayment => PayError::NotFound,
            Rejection::NotRefundable { status } => PayError::NotRefundable(status),
            Rejection::RefundExceeds { available } => PayError::RefundExceeds { available },
            Rejection::IdTaken => PayError::Internal("a minted id collided; retry".into()),
        }
    }
}

/// An answer to a create: HTTP status, JSON body, and whether it is a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Sent again for a known key (`Idempotent-Replayed: true`).
    pub replayed: bool,
}

/// What recording an outcome found.
// Moved out at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Recorded {
    /// Recorded now: the records as they now are.
    Now(PaymentRec, Option<RefundRec>),
    /// Resolved before (by another reporter): the records as they are.
    Before(PaymentRec, Option<RefundRec>),
    /// The webhook event was applied before.
    Replayed,
}

/// What a verified webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// An outcome was recorded.
    Applied,
    /// Replayed, or the outcome was already recorded.
    Unchanged,
    /// Not a Shoal payment, or a type not handled.
    Ignored,
}

impl WebhookOutcome {
    /// Metric label and answer body.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Applied => "applied",
            WebhookOutcome::Unchanged => "unchanged",
            WebhookOutcome::Ignored => "ignored",
        }
    }
}

/// A new id: `prefix_` and 24 hex digits (milliseconds, then random), so ids sort by time.
pub fn mint_id(prefix: &str) -> String {
    format!("{prefix}_{:012x}{:012x}", super::urls::now_ms(), rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Payments on one node: configuration, the gateway and instruments.
pub struct PaymentsService {
    cfg: PaymentsSection,
    client: Client,
    gateway: Arc<dyn Gateway>,
    metrics: PaymentMetrics,
}

impl std::fmt::Debug for PaymentsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentsService").finish_non_exhaustive()
    }
}

impl PaymentsService {
    /// Payments over `client` and `gateway`.
    pub fn new(cfg: PaymentsSection, metrics: PaymentMetrics, client: Client, gateway: Arc<dyn Gateway>) -> Self {
        Self { cfg, client, gateway, metrics }
    }

    /// The configuration.
    pub fn config(&self) -> &PaymentsSection {
        &self.cfg
    }

    /// The instruments.
    pub fn metrics(&self) -> &PaymentMetrics {
        &self.metrics
    }

    fn idem(&self, owner: &str, key: &str, fingerprint: String) -> Idem {
        // The first request holds the key for as long as it can run: its gateway call and the
        // two proposals around it.
        let lease = self.cfg.gateway_timeout + std::time::Duration::from_secs(5);
        Idem {
            owner: owner.to_owned(),
            key: key.to_owned(),
            fingerprint,
            now: super::urls::now_ms(),
            lease_ms: lease.as_millis() as u64,
            ttl_ms: self.cfg.idempotency_ttl.as_millis() as u64,
        }
    }

    /// Calls the gateway, timing it.
    async fn timed<T>(
        &self,
        op: &str,
        call: impl std::future::Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.gateway_seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.gateway_errors.with_label_values(&[op]).inc();
        }
        result
    }

    /// Records `outcome` for a pending payment (or refund).
    async fn resolve(
        &self,
        owner: &str,
        payment_id: &str,
        refund_id: Option<&str>,
        outcome: Outcome,
        source: Source,
        event: Option<(String, u64)>,
    ) -> Result<Recorded, PayError> {
        let command = Command::Resolve {
            payment_id: payment_id.to_owned(),
            refund_id: refund_id.map(str::to_owned),
            outcome,
            source,
            event,
            now: super::urls::now_ms(),
        };
        match self.client.propose::<Payments>(owner, &command).await? {
            Ok(Reply::Resolved { payment, refund }) => {
                match &refund {
                    Some(r) => self.metrics.refunds.with_label_values(&[r.status.as_str()]).inc(),
                    None => self.metrics.payments.with_label_values(&[payment.status.as_str()]).inc(),
                }
                Ok(Recorded::Now(payment, refund))
            }
            Ok(Reply::Settled { payment, refund }) => Ok(Recorded::Before(payment, refund)),
            Ok(Reply::Unchanged) => Ok(Recorded::Replayed),
            Err(r) => Err(r.into()),
            Ok(other) => Err(unexpected(other)),
        }
    }

    /// Whether this node's replica already shows the payment (or refund) resolved. Resolution
    /// is final, so a replica behind the leader can only err towards "not yet", which costs a
    /// proposal that finds it resolved; never a lost outcome.
    async fn settled_here(&self, owner: &str, payment_id: &str, refund_id: Option<&str>) -> bool {
        let query = Query::Get { id: payment_id.to_owned() };
        match self.client.read::<Payments>(owner, &query, Consistency::Local).await {
            Ok(Answer::Payment(Some((p, refunds)))) => match refund_id {
                None => p.status != PayStatus::Pending,
                Some(id) => refunds.iter().any(|r| r.id == id && r.status != state::RefundStatus::Pending),
            },
            _ => false,
        }
    }

    /// Charges `new` for `owner` under `key` (the request's `fingerprint`): pending committed
    /// first, then the gateway, then the outcome. 201 / 402 / 202 (pending) with the payment,
    /// or the key's earlier answer.
    pub async fn create(
        &self,
        owner: &str,
        key: &str,
        fingerprint: String,
        new: NewPayment,
    ) -> Result<Answered, PayError> {
        let command = Command::Create { idem: self.idem(owner, key, fingerprint), payment: new };
        let payment = match self.client.propose::<Payments>(owner, &command).await? {
            Ok(Reply::Created(p)) => p,
            Ok(Reply::Known(known)) => return Ok(replay(known)),
            Err(r) => return Err(r.into()),
            Ok(other) => return Err(unexpected(other)),
        };
        let outcome = match self.timed("charge", self.gateway.charge(&payment)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(payment = %payment.id, error = %e, "gateway outcome unknown; the payment stays pending");
                self.metrics.payments.with_label_values(&["pending"]).inc();
                return Ok(fresh(&payment));
            }
        };
        match self.resolve(owner, &payment.id, None, outcome, Source::Api, None).await {
            // Recorded now, or a webhook or the reconciler recorded it first: answer what was
            // recorded.
            Ok(Recorded::Now(p, _) | Recorded::Before(p, _)) => Ok(fresh(&p)),
            Ok(Recorded::Replayed) => Ok(fresh(&self.get(owner, &payment.id).await?.0)),
            Err(e) => {
                tracing::warn!(payment = %payment.id, error = %e, "outcome not recorded; the reconciler will");
                Ok(fresh(&payment))
            }
        }
    }

    /// Refunds `amount` (all that is left when `None`) of the caller's payment under `key`.
    pub async fn refund(
        &self,
        owner: &str,
        key: &str,
        fingerprint: String,
        payment_id: &str,
        amount: Option<u64>,
        reason: Option<String>,
    ) -> Result<Answered, PayError> {
        let command = Command::Refund {
            idem: self.idem(owner, key, fingerprint),
            payment_id: payment_id.to_owned(),
            refund_id: mint_id("re"),
            amount,
            reason,
        };
        let (refund, payment) = match self.client.propose::<Payments>(owner, &command).await? {
            Ok(Reply::RefundCreated { refund, payment }) => (refund, payment),
            Ok(Reply::Known(known)) => return Ok(replay(known)),
            Err(r) => return Err(r.into()),
            Ok(other) => return Err(unexpected(other)),
        };
        let outcome = match self.timed("refund", self.gateway.refund(&payment, &refund)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(refund = %refund.id, error = %e, "gateway outcome unknown; the refund stays pending");
                return Ok(fresh_refund(&refund));
            }
        };
        match self.resolve(owner, payment_id, Some(&refund.id), outcome, Source::Api, None).await {
            Ok(Recorded::Now(_, Some(r)) | Recorded::Before(_, Some(r))) => Ok(fresh_refund(&r)),
            Ok(_) => {
                let (_, refunds) = self.get(owner, payment_id).await?;
                let r = refunds.into_iter().find(|r| r.id == refund.id).unwrap_or(refund);
                Ok(fresh_refund(&r))
            }
            Err(e) => {
                tracing::warn!(refund = %refund.id, error = %e, "outcome not recorded; the reconciler will");
                Ok(fresh_refund(&refund))
            }
        }
    }

    /// The caller's payment with its refunds (linearizable).
    pub async fn get(&self, owner: &str, id: &str) -> Result<(PaymentRec, Vec<RefundRec>), PayError> {
        let query = Query::Get { id: id.to_owned() };
        match self.client.read::<Payments>(owner, &query, Consistency::Linearizable).await? {
            Answer::Payment(Some((p, refunds))) if p.owner == owner => Ok((p, refunds)),
            Answer::Payment(_) => Err(PayError::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// The caller's payments, newest first, after the payment `after`.
    pub async fn list(
        &self,
        owner: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<PaymentRec>, bool), PayError> {
        let query = Query::List { owner: owner.to_owned(), after, limit };
        match self.client.read::<Payments>(owner, &query, Consistency::Linearizable).await? {
            Answer::Page { payments, has_more } => Ok((payments, has_more)),
            other => Err(unexpected(other)),
        }
    }

    /// The caller's payment's state changes, oldest first.
    pub async fn events(&self, owner: &str, id: &str) -> Result<Vec<EventRec>, PayError> {
        self.get(owner, id).await?;
        let query = Query::Events { id: id.to_owned() };
        match self.client.read::<Payments>(owner, &query, Consistency::Linearizable).await? {
            Answer::Events(Some(events)) => Ok(events),
            Answer::Events(None) => Err(PayError::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// A gateway webhook: verifies `signature` over `payload`, then applies the event once.
    pub async fn webhook(&self, signature: &str, payload: &[u8]) -> Result<WebhookOutcome, PayError> {
        let now = super::urls::now_ms() / 1000;
        let tolerance = self.cfg.webhook_tolerance.as_secs();
        webhook_signature::verify(self.cfg.webhook_secret.as_bytes(), signature, payload, now, tolerance)
            .map_err(PayError::BadSignature)?;
        let event: Value = serde_json::from_slice(payload).map_err(|_| PayError::BadEvent)?;
        let (Some(event_id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
            return Err(PayError::BadEvent);
        };
        let object = &event["data"]["object"];
        let metadata = &object["metadata"];
        let (Some(owner), Some(payment_id)) = (metadata[META_OWNER].as_str(), metadata[META_PAYMENT_ID].as_str())
        else {
            return Ok(WebhookOutcome::Ignored);
        };
        // Remembered past the signature tolerance, so a replay inside it is always caught.
        let remember_until = (now + 2 * tolerance + 3600) * 1000;
        let mut outcome = WebhookOutcome::Unchanged;
        match kind {
            "payment_intent.succeeded" | "payment_intent.payment_failed" => {
                let Some(result) = gateway::intent_outcome(object) else { return Ok(WebhookOutcome::Ignored) };
                if self.settled_here(owner, payment_id, None).await {
                    return Ok(WebhookOutcome::Unchanged);
                }
                let event = Some((event_id.to_owned(), remember_until));
                if let Recorded::Now(..) = self.resolve(owner, payment_id, None, result, Source::Webhook, event).await?
                {
                    outcome = WebhookOutcome::Applied;
                }
            }
            "charge.refunded" => {
                let refunds = object["refunds"]["data"].as_array().cloned().unwrap_or_default();
                for refund in refunds {
                    let Some(refund_id) = refund["metadata"][META_REFUND_ID].as_str() else { continue };
                    let result = match refund["status"].as_str() {
                        Some("succeeded") => {
                            Outcome::Succeeded { gateway_ref: refund["id"].as_str().map(String::from) }
                        }
                        Some("failed" | "canceled") => Outcome::Failed {
                            code: "refund_failed".into(),
                            message: "The gateway could not refund.".into(),
                            gateway_ref: None,
                        },
                        _ => continue,
                    };
                    if self.settled_here(owner, payment_id, Some(refund_id)).await {
                        continue;
                    }
                    let event = Some((format!("{event_id}/{refund_id}"), remember_until));
                    let recorded =
                        self.resolve(owner, payment_id, Some(refund_id), result, Source::Webhook, event).await?;
                    if let Recorded::Now(..) = recorded {
                        outcome = WebhookOutcome::Applied;
                    }
                }
            }
            _ => return Ok(WebhookOutcome::Ignored),
        }
        Ok(outcome)
    }
}

fn fresh(p: &PaymentRec) -> Answered {
    Answered { status: p.status.http_status(), body: view::payment_json(p), replayed: false }
}

fn fresh_refund(r: &RefundRec) -> Answered {
    let status = match r.status {
        state::RefundStatus::Pending => 202,
        state::RefundStatus::Succeeded => 201,
        state::RefundStatus::Failed => 402,
    };
    Answered { status, body: view::refund_json(r), replayed: false }
}

fn replay(known: KnownKey) -> Answered {
    let answered = match known {
        KnownKey::Stored(a) => Answered { status: a.status, body: a.body, replayed: true },
        KnownKey::Pending { refund: Some(r), .. } => fresh_refund(&r),
        KnownKey::Pending { payment, refund: None } => fresh(&payment),
    };
    Answered { replayed: true, ..answered }
}
