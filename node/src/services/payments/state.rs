//! Payments' replicated state, all in the partition of the payer (the caller's user id):
//!
//! - `p/{payment}`: the payment ([`PaymentRec`]); `r/{payment}/{refund}`: its refunds
//!   ([`RefundRec`]); `v/{payment}/{seq:010}`: its state changes ([`EventRec`]);
//! - `o/{owner}/{rev_created:020}/{payment}`: the owner's history, newest first;
//! - `q/{payment}` and `q/{payment}/{refund}`: what is pending at the gateway (the reconciler's
//!   work list);
//! - `k/{owner}/{key}`: idempotency records ([`IdemRec`]), with `x/{expires:020}/{owner}/{key}`
//!   in time order so expired ones are pruned by a bounded scan from the front;
//! - `w/{event}`: gateway webhook events applied (replay protection), expiring the same way
//!   under `y/{expires:020}/{event}`.
//!
//! Time comes only from commands (stamped by the proposing node). Outcomes are decided here, so
//! a late webhook and the reconciler racing on one payment apply it once ([`Command::Resolve`]
//! changes only a pending payment), and concurrent refunds never exceed the amount (each
//! reserves its amount when created).

use rkyv::{Archive, Deserialize, Serialize};

use crate::services::{Kv, KvRead, Payload, Service, ServiceId, StoreError, get};

/// Expired idempotency records or webhook marks one command prunes at most.
pub const PRUNE_PER_APPLY: usize = 16;
/// Payments one history page holds at most.
pub const MAX_PAGE: u32 = 100;
/// Pending items one reconciler query answers at most.
pub const MAX_PENDING: u32 = 256;

/// Where a payment stands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayStatus {
    /// Recorded; the gateway's answer is not known yet.
    Pending,
    /// Charged.
    Succeeded,
    /// Declined, or the gateway confirmed nothing was charged.
    Failed,
    /// The card needs authentication the API cannot give.
    RequiresAction,
}

impl PayStatus {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PayStatus::Pending => "pending",
            PayStatus::Succeeded => "succeeded",
            PayStatus::Failed => "failed",
            PayStatus::RequiresAction => "requires_action",
        }
    }

    /// The HTTP status of a create answering a payment in this state.
    pub fn http_status(self) -> u16 {
        match self {
            PayStatus::Pending => 202,
            PayStatus::Succeeded | PayStatus::RequiresAction => 201,
            PayStatus::Failed => 402,
        }
    }
}

/// A payment (`p/{id}`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PaymentRec {
    /// `pay_…`, also the gateway's idempotency key.
    pub id: String,
    /// The payer's user id.
    pub owner: String,
    /// Minor units.
    pub amount: u64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// The gateway token.
    pub payment_method: String,
    /// Free text.
    pub description: Option<String>,
    /// The caller's keys and values, sorted.
    pub metadata: Vec<(String, String)>,
    /// Where it stands.
    pub status: PayStatus,
    /// Refunded so far.
    pub amount_refunded: u64,
    /// Held by refunds still pending at the gateway.
    pub refund_reserved: u64,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Why it failed.
    pub failure_code: Option<String>,
    /// Why it failed, for people.
    pub failure_message: Option<String>,
    /// The gateway's id (`pi_…`), once known.
    pub gateway_ref: Option<String>,
    /// State changes recorded.
    pub events: u32,
}

/// Where a refund stands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// Amount reserved; the gateway's answer is not known yet.
    Pending,
    /// Refunded.
    Succeeded,
    /// The gateway refused it; the reservation is released.
    Failed,
}

impl RefundStatus {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }
}

/// A refund (`r/{payment}/{id}`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RefundRec {
    /// `re_…`, also the gateway's idempotency key.
    pub id: String,
    /// Its payment.
    pub payment_id: String,
    /// Minor units.
    pub amount: u64,
    /// Why.
    pub reason: Option<String>,
    /// Where it stands.
    pub status: RefundStatus,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Why it failed.
    pub failure_code: Option<String>,
}

/// One state change of a payment (`v/{payment}/{seq}`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EventRec {
    /// Dense from 1.
    pub seq: u32,
    /// `payment.pending`, `payment.succeeded`, `refund.pending`, `refund.succeeded`, …
    pub kind: String,
    /// Unix milliseconds.
    pub at: u64,
    /// Who decided it.
    pub source: Source,
    /// The refund it concerns, if any.
    pub refund_id: Option<String>,
}

/// Who resolved an outcome.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The API request's own gateway call.
    Api,
    /// The reconciler asking the gateway.
    Reconciler,
    /// A gateway webhook.
    Webhook,
}

impl Source {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Reconciler => "reconciler",
            Source::Webhook => "webhook",
        }
    }
}

/// A stored answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// An idempotency record (`k/{owner}/{key}`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IdemRec {
    /// Hash of the request's method, path and parameters.
    pub fingerprint: String,
    /// The payment it created, and the refund if it created one.
    pub payment_id: String,
    /// The refund it created.
    pub refund_id: Option<String>,
    /// Until then the first request is taken to be running (409 `idempotency_key_in_use`).
    pub lease_until: u64,
    /// When the record is dropped (Unix milliseconds).
    pub expires_at: u64,
    /// The final answer, once the outcome is final.
    pub answer: Option<StoredAnswer>,
}

/// A new payment's fields.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    /// Its id (minted by the proposing node).
    pub id: String,
    /// Minor units.
    pub amount: u64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// The gateway token.
    pub payment_method: String,
    /// Free text.
    pub description: Option<String>,
    /// Sorted keys and values.
    pub metadata: Vec<(String, String)>,
}

/// The idempotency part of a create.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Idem {
    /// The caller (the key's scope, and the partition).
    pub owner: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// Hash of method, path and parameters.
    pub fingerprint: String,
    /// Unix milliseconds, stamped by the proposing node.
    pub now: u64,
    /// How long the first request holds the key (its deadline), milliseconds.
    pub lease_ms: u64,
    /// How long the record is kept, milliseconds.
    pub ttl_ms: u64,
}

/// An outcome the gateway reported.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Charged (or refunded).
    Succeeded {
        /// The gateway's id.
        gateway_ref: Option<String>,
    },
    /// Declined or refused (final).
    Failed {
        /// Stable code (`card_declined`, `gateway_unreachable`, …).
        code: String,
        /// A sentence.
        message: String,
        /// The gateway's id.
        gateway_ref: Option<String>,
    },
    /// Needs authentication (payments only).
    RequiresAction {
        /// The gateway's id.
        gateway_ref: Option<String>,
    },
}

/// Payments' commands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Records `payment` pending under the idempotency key, unless the key is known: answers
    /// [`Reply::Created`] or [`Reply::Known`].
    Create {
        /// The key and its scope.
        idem: Idem,
        /// The payment.
        payment: NewPayment,
    },
    /// Reserves and records a pending refund of `payment_id` under the idempotency key:
    /// answers [`Reply::RefundCreated`] or [`Reply::Known`].
    Refund {
        /// The key and its scope (the owner must own the payment).
        idem: Idem,
        /// The payment.
        payment_id: String,
        /// The refund's id (minted by the proposing node).
        refund_id: String,
        /// Minor units; `None`: all that is left.
        amount: Option<u64>,
        /// Why.
        reason: Option<String>,
    },
    /// Applies a gateway outcome to a pending payment (or refund, when `refund_id` is set);
    /// a resolved one is left as it is ([`Reply::Settled`]). `event` marks a webhook event
    /// as applied, so its replay changes nothing.
    Resolve {
        /// The payment.
        payment_id: String,
        /// The refund, when the outcome is a refund's.
        refund_id: Option<String>,
        /// What the gateway said.
        outcome: Outcome,
        /// Who decided.
        source: Source,
        /// The webhook event id, and until when to remember it.
        event: Option<(String, u64)>,
        /// Unix milliseconds.
        now: u64,
    },
}

/// Payments' command answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A new pending payment: call the gateway now.
    Created(PaymentRec),
    /// A new pending refund: call the gateway now.
    RefundCreated {
        /// The refund.
        refund: RefundRec,
        /// Its payment, with the amount reserved.
        payment: PaymentRec,
    },
    /// The key was used before with the same parameters.
    Known(KnownKey),
    /// The outcome was applied; the payment and refund as they now are.
    Resolved {
        /// The payment.
        payment: PaymentRec,
        /// The refund, when one was resolved.
        refund: Option<RefundRec>,
    },
    /// Already resolved before this command: nothing changed; the records as they are (so the
    /// caller needs no read to answer).
    Settled {
        /// The payment.
        payment: PaymentRec,
        /// The refund, when the command named one.
        refund: Option<RefundRec>,
    },
    /// The webhook event was applied before: nothing changed.
    Unchanged,
}

/// What a known idempotency key answers.
// Decoded once per call and moved out at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum KnownKey {
    /// The stored final answer.
    Stored(StoredAnswer),
    /// The first request's payment, still pending after its request ended: answer it as it is.
    Pending {
        /// The payment.
        payment: PaymentRec,
        /// The refund, for a refund key.
        refund: Option<RefundRec>,
    },
}

/// Why a command changed nothing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The key was used with other parameters.
    #[error("the idempotency key was used with other parameters")]
    KeyReused,
    /// The key's first request is still running.
    #[error("the idempotency key's first request is still running")]
    KeyInUse,
    /// No such payment (or not the caller's).
    #[error("no such payment")]
    NoPayment,
    /// The payment was not charged.
    #[error("the payment is {status}, not succeeded")]
    NotRefundable {
        /// Its status.
        status: String,
    },
    /// More than what is left.
    #[error("at most {available} can be refunded")]
    RefundExceeds {
        /// What is left to refund.
        available: u64,
    },
    /// An id already taken (a minted id collided).
    #[error("the id is taken")]
    IdTaken,
}

/// Something the reconciler must ask the gateway about.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PendingItem {
    /// The payment.
    pub payment: PaymentRec,
    /// The refund, when it is a refund that is pending.
    pub refund: Option<RefundRec>,
}

/// Payments' queries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// One payment with its refunds.
    Get {
        /// The payment.
        id: String,
    },
    /// The owner's payments, newest first, after the payment `after`.
    List {
        /// The owner.
        owner: String,
        /// Cursor: a payment id of the owner.
        after: Option<String>,
        /// Page size (capped at [`MAX_PAGE`]).
        limit: u32,
    },
    /// A payment's state changes, oldest first.
    Events {
        /// The payment.
        id: String,
    },
    /// What is pending at the gateway in this partition, after the `after` key.
    Pending {
        /// Cursor (a `q/` key).
        after: Option<String>,
        /// Page size (capped at [`MAX_PENDING`]).
        limit: u32,
    },
}

/// Payments' query answers.
// Decoded once per call and moved out at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A payment and its refunds (`None`: no such payment).
    Payment(Option<(PaymentRec, Vec<RefundRec>)>),
    /// A page of payments, and whether more follow.
    Page {
        /// Newest first.
        payments: Vec<PaymentRec>,
        /// More follow.
        has_more: bool,
    },
    /// State changes (`None`: no such payment).
    Events(Option<Vec<EventRec>>),
    /// Pending items, and the cursor of the next page.
    Pending {
        /// Items.
        items: Vec<PendingItem>,
        /// Where the next page starts.
        next: Option<String>,
    },
}

/// See the module docs.
#[derive(Debug)]
pub struct Payments;

fn payment_key(id: &str) -> Vec<u8> {
    format!("p/{id}").into_bytes()
}

fn refund_key(payment: &str, refund: &str) -> Vec<u8> {
    format!("r/{payment}/{refund}").into_bytes()
}

fn event_key(payment: &str, seq: u32) -> Vec<u8> {
    format!("v/{payment}/{seq:010}").into_bytes()
}

fn owner_key(owner: &str, created_at: u64, payment: &str) -> Vec<u8> {
    format!("o/{owner}/{:020}/{payment}", u64::MAX - created_at).into_bytes()
}

fn pending_key(payment: &str, refund: Option<&str>) -> Vec<u8> {
    match refund {
        Some(r) => format!("q/{payment}/{r}").into_bytes(),
        None => format!("q/{payment}").into_bytes(),
    }
}

fn idem_key(owner: &str, key: &str) -> Vec<u8> {
    format!("k/{owner}/{key}").into_bytes()
}

fn idem_expiry_key(expires_at: u64, owner: &str, key: &str) -> Vec<u8> {
    format!("x/{expires_at:020}/{owner}/{key}").into_bytes()
}

fn seen_key(event: &str) -> Vec<u8> {
    format!("w/{event}").into_bytes()
}

fn seen_expiry_key(expires_at: u64, event: &str) -> Vec<u8> {
    format!("y/{expires_at:020}/{event}").into_bytes()
}

/// The time in an `x/` or `y/` key.
fn expiry_time(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.get(2..22)?).ok()?.parse().ok()
}

/// Drops up to [`PRUNE_PER_APPLY`] expired entries of the expiry index `prefix` (`x/` or `y/`)
/// and the records they name, when those did not get a later expiry since.
fn prune(kv: &mut dyn Kv, prefix: &[u8], now: u64) -> Result<(), StoreError> {
    for (key, _) in kv.scan(prefix, None, PRUNE_PER_APPLY)? {
        let Some(at) = expiry_time(&key) else {
            kv.delete(&key);
            continue;
        };
        if at > now {
            break;
        }
        kv.delete(&key);
        let Some(rest) = key.get(23..).and_then(|r| std::str::from_utf8(r).ok()) else { continue };
        if prefix == b"x/" {
            let Some((owner, k)) = rest.split_once('/') else { continue };
            let record = idem_key(owner, k);
            if get::<IdemRec>(kv, &record)?.is_some_and(|r| r.expires_at == at) {
                kv.delete(&record);
            }
        } else {
            let record = seen_key(rest);
            if get::<u64>(kv, &record)?.is_some_and(|expires| expires == at) {
                kv.delete(&record);
            }
        }
    }
    Ok(())
}

/// What a known key answers, or why it is refused; `None`: the key is free.
fn known(kv: &dyn KvRead, idem: &Idem) -> Result<Option<Result<Reply, Rejection>>, StoreError> {
    let Some(rec) = get::<IdemRec>(kv, &idem_key(&idem.owner, &idem.key))? else { return Ok(None) };
    if rec.expires_at <= idem.now {
        return Ok(None);
    }
    if rec.fingerprint != idem.fingerprint {
        return Ok(Some(Err(Rejection::KeyReused)));
    }
    if let Some(answer) = rec.answer {
        return Ok(Some(Ok(Reply::Known(KnownKey::Stored(answer)))));
    }
    if idem.now < rec.lease_until {
        return Ok(Some(Err(Rejection::KeyInUse)));
    }
    let Some(payment) = get::<PaymentRec>(kv, &payment_key(&rec.payment_id))? else {
        return Err(StoreError::Db(format!("idempotency record names the missing payment {}", rec.payment_id)));
    };
    let refund = match &rec.refund_id {
        Some(r) => get::<RefundRec>(kv, &refund_key(&rec.payment_id, r))?,
        None => None,
    };
    Ok(Some(Ok(Reply::Known(KnownKey::Pending { payment, refund }))))
}

fn put_idem(
    kv: &mut dyn Kv,
    idem: &Idem,
    payment_id: &str,
    refund_id: Option<&str>,
    answer: Option<StoredAnswer>,
) -> Result<(), StoreError> {
    let expires_at = idem.now.saturating_add(idem.ttl_ms);
    let rec = IdemRec {
        fingerprint: idem.fingerprint.clone(),
        payment_id: payment_id.to_owned(),
        refund_id: refund_id.map(str::to_owned),
        lease_until: idem.now.saturating_add(idem.lease_ms),
        expires_at,
        answer,
    };
    kv.put(&idem_key(&idem.owner, &idem.key), rec.encode()?);
    kv.put(&idem_expiry_key(expires_at, &idem.owner, &idem.key), Vec::new());
    Ok(())
}

/// The idempotency key of the request that created a payment or refund: `(owner, key)` is
/// kept on the payment's and refund's event rows, so resolving finds it.
fn idem_of(kv: &dyn KvRead, owner: &str, key: &str) -> Result<Option<IdemRec>, StoreError> {
    get::<IdemRec>(kv, &idem_key(owner, key))
}

fn add_event(
    kv: &mut dyn Kv,
    payment: &mut PaymentRec,
    kind: &str,
    at: u64,
    source: Source,
    refund_id: Option<&str>,
) -> Result<(), StoreError> {
    payment.events += 1;
    let event =
        EventRec { seq: payment.events, kind: kind.to_owned(), at, source, refund_id: refund_id.map(str::to_owned) };
    kv.put(&event_key(&payment.id, payment.events), event.encode()?);
    Ok(())
}

/// Where a payment's creating key is remembered: `i/{payment}` → `(owner, key)`.
fn creator_key(id: &str) -> Vec<u8> {
    format!("i/{id}").into_bytes()
}

fn create(kv: &mut dyn Kv, idem: Idem, new: NewPayment) -> Result<Result<Reply, Rejection>, StoreError> {
    prune(kv, b"x/", idem.now)?;
    if let Some(answer) = known(kv, &idem)? {
        return Ok(answer);
    }
    if kv.get(&payment_key(&new.id))?.is_some() {
        return Ok(Err(Rejection::IdTaken));
    }
    let mut payment = PaymentRec {
        id: new.id,
        owner: idem.owner.clone(),
        amount: new.amount,
        currency: new.currency,
        payment_method: new.payment_method,
        description: new.description,
        metadata: new.metadata,
        status: PayStatus::Pending,
        amount_refunded: 0,
        refund_reserved: 0,
        created_at: idem.now,
        failure_code: None,
        failure_message: None,
        gateway_ref: None,
        events: 0,
    };
    add_event(kv, &mut payment, "payment.pending", idem.now, Source::Api, None)?;
    put_idem(kv, &idem, &payment.id, None, None)?;
    kv.put(&creator_key(&payment.id), (idem.owner.clone(), idem.key.clone()).encode()?);
    kv.put(&owner_key(&payment.owner, payment.created_at, &payment.id), Vec::new());
    kv.put(&pending_key(&payment.id, None), Vec::new());
    kv.put(&payment_key(&payment.id), payment.encode()?);
    Ok(Ok(Reply::Created(payment)))
}

fn refund(
    kv: &mut dyn Kv,
    idem: Idem,
    payment_id: String,
    refund_id: String,
    amount: Option<u64>,
    reason: Option<String>,
) -> Result<Result<Reply, Rejection>, StoreError> {
    prune(kv, b"x/", idem.now)?;
    if let Some(answer) = known(kv, &idem)? {
        return Ok(answer);
    }
    let Some(mut payment) = get::<PaymentRec>(kv, &payment_key(&payment_id))? else {
        return Ok(Err(Rejection::NoPayment));
    };
    if payment.owner != idem.owner {
        return Ok(Err(Rejection::NoPayment));
    }
    if payment.status != PayStatus::Succeeded {
        return Ok(Err(Rejection::NotRefundable { status: payment.status.as_str().to_owned() }));
    }
    let available = payment.amount - payment.amount_refunded - payment.refund_reserved;
    let amount = amount.unwrap_or(available);
    if amount == 0 || amount > available {
        return Ok(Err(Rejection::RefundExceeds { available }));
    }
    let key = refund_key(&payment_id, &refund_id);
    if kv.get(&key)?.is_some() {
        return Ok(Err(Rejection::IdTaken));
    }
    let rec = RefundRec {
        id: refund_id,
        payment_id,
        amount,
        reason,
        status: RefundStatus::Pending,
        created_at: idem.now,
        failure_code: None,
    };
    payment.refund_reserved += amount;
    add_event(kv, &mut payment, "refund.pending", idem.now, Source::Api, Some(&rec.id))?;
    put_idem(kv, &idem, &payment.id, Some(&rec.id), None)?;
    kv.put(&creator_key(&format!("{}/{}", payment.id, rec.id)), (idem.owner.clone(), idem.key.clone()).encode()?);
    kv.put(&pending_key(&payment.id, Some(&rec.id)), Vec::new());
    kv.put(&key, rec.encode()?);
    kv.put(&payment_key(&payment.id), payment.encode()?);
    Ok(Ok(Reply::RefundCreated { refund: rec, payment }))
}

/// Stores the final answer on the key that created `creator` (`payment` or `payment/refund`).
fn finish_key(kv: &mut dyn Kv, creator: &str, answer: StoredAnswer) -> Result<(), StoreError> {
    let Some((owner, key)) = get::<(String, String)>(kv, &creator_key(creator))? else { return Ok(()) };
    if let Some(mut rec) = idem_of(kv, &owner, &key)? {
        rec.answer = Some(answer);
        kv.put(&idem_key(&owner, &key), rec.encode()?);
    }
    kv.delete(&creator_key(creator));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    kv: &mut dyn Kv,
    payment_id: String,
    refund_id: Option<String>,
    outcome: Outcome,
    source: Source,
    event: Option<(String, u64)>,
    now: u64,
) -> Result<Result<Reply, Rejection>, StoreError> {
    prune(kv, b"y/", now)?;
    if let Some((id, _)) = &event
        && kv.get(&seen_key(id))?.is_some()
    {
        return Ok(Ok(Reply::Unchanged));
    }
    let Some(mut payment) = get::<PaymentRec>(kv, &payment_key(&payment_id))? else {
        return Ok(Err(Rejection::NoPayment));
    };
    let reply = match refund_id {
        None => {
            if payment.status != PayStatus::Pending {
                Reply::Settled { payment, refund: None }
            } else {
                let (status, kind, gateway_ref) = match outcome {
                    Outcome::Succeeded { gateway_ref } => (PayStatus::Succeeded, "payment.succeeded", gateway_ref),
                    Outcome::RequiresAction { gateway_ref } => {
                        (PayStatus::RequiresAction, "payment.requires_action", gateway_ref)
                    }
                    Outcome::Failed { code, message, gateway_ref } => {
                        payment.failure_code = Some(code);
                        payment.failure_message = Some(message);
                        (PayStatus::Failed, "payment.failed", gateway_ref)
                    }
                };
                payment.status = status;
                payment.gateway_ref = gateway_ref.or(payment.gateway_ref.take());
                add_event(kv, &mut payment, kind, now, source, None)?;
                kv.delete(&pending_key(&payment.id, None));
                let body = super::view::payment_json(&payment);
                finish_key(kv, &payment.id, StoredAnswer { status: status.http_status(), body })?;
                kv.put(&payment_key(&payment.id), payment.encode()?);
                Reply::Resolved { payment, refund: None }
            }
        }
        Some(refund_id) => {
            let key = refund_key(&payment_id, &refund_id);
            let Some(mut refund) = get::<RefundRec>(kv, &key)? else { return Ok(Err(Rejection::NoPayment)) };
            if refund.status != RefundStatus::Pending {
                Reply::Settled { payment, refund: Some(refund) }
            } else {
                payment.refund_reserved = payment.refund_reserved.saturating_sub(refund.amount);
                let kind = match outcome {
                    Outcome::Succeeded { .. } => {
                        payment.amount_refunded += refund.amount;
                        refund.status = RefundStatus::Succeeded;
                        "refund.succeeded"
                    }
                    Outcome::Failed { code, .. } => {
                        refund.status = RefundStatus::Failed;
                        refund.failure_code = Some(code);
                        "refund.failed"
                    }
                    Outcome::RequiresAction { .. } => {
                        refund.status = RefundStatus::Failed;
                        refund.failure_code = Some("requires_action".to_owned());
                        "refund.failed"
                    }
                };
                add_event(kv, &mut payment, kind, now, source, Some(&refund.id))?;
                kv.delete(&pending_key(&payment.id, Some(&refund.id)));
                let status = if refund.status == RefundStatus::Succeeded { 201 } else { 402 };
                let body = super::view::refund_json(&refund);
                finish_key(kv, &format!("{}/{}", payment.id, refund.id), StoredAnswer { status, body })?;
                kv.put(&key, refund.encode()?);
                kv.put(&payment_key(&payment.id), payment.encode()?);
                Reply::Resolved { payment, refund: Some(refund) }
            }
        }
    };
    if let Some((id, expires_at)) = event {
        kv.put(&seen_key(&id), expires_at.encode()?);
        kv.put(&seen_expiry_key(expires_at, &id), Vec::new());
    }
    Ok(Ok(reply))
}

fn refunds_of(kv: &dyn KvRead, payment: &str) -> Result<Vec<RefundRec>, StoreError> {
    let prefix = format!("r/{payment}/").into_bytes();
    let rows = kv.scan(&prefix, None, usize::MAX)?;
    rows.iter().map(|(_, v)| Ok(RefundRec::decode(v)?)).collect()
}

fn list(kv: &dyn KvRead, owner: &str, after: Option<String>, limit: u32) -> Result<Answer, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let prefix = format!("o/{owner}/").into_bytes();
    let cursor = match after {
        Some(id) => match get::<PaymentRec>(kv, &payment_key(&id))? {
            Some(p) if p.owner == owner => Some(owner_key(owner, p.created_at, &p.id)),
            _ => return Ok(Answer::Page { payments: Vec::new(), has_more: false }),
        },
        None => None,
    };
    let rows = kv.scan(&prefix, cursor.as_deref(), limit + 1)?;
    let has_more = rows.len() > limit;
    let mut payments = Vec::with_capacity(limit);
    for (key, _) in rows.into_iter().take(limit) {
        let id = key.rsplit(|b| *b == b'/').next().unwrap_or_default();
        if let Some(p) = get::<PaymentRec>(kv, &[b"p/", id].concat())? {
            payments.push(p);
        }
    }
    Ok(Answer::Page { payments, has_more })
}

fn pending(kv: &dyn KvRead, after: Option<String>, limit: u32) -> Result<Answer, StoreError> {
    let limit = limit.clamp(1, MAX_PENDING) as usize;
    let rows = kv.scan(b"q/", after.as_deref().map(str::as_bytes), limit + 1)?;
    let next = (rows.len() > limit).then(|| rows.get(limit - 1).map(|(k, _)| String::from_utf8_lossy(k).into_owned()));
    let mut items = Vec::new();
    for (key, _) in rows.into_iter().take(limit) {
        let rest = String::from_utf8_lossy(&key[2..]).into_owned();
        let (payment_id, refund_id) = match rest.split_once('/') {
            Some((p, r)) => (p.to_owned(), Some(r.to_owned())),
            None => (rest, None),
        };
        let Some(payment) = get::<PaymentRec>(kv, &payment_key(&payment_id))? else { continue };
        let refund = match refund_id {
            Some(r) => get::<RefundRec>(kv, &refund_key(&payment_id, &r))?,
            None => None,
        };
        items.push(PendingItem { payment, refund });
    }
    Ok(Answer::Pending { items, next: next.flatten() })
}

impl Service for Payments {
    const ID: ServiceId = 6;
    const NAME: &'static str = "payments";
    type Command = Command;
    type Reply = Reply;
    type Rejection = Rejection;
    type Query = Query;
    type Answer = Answer;

    fn apply(kv: &mut dyn Kv, command: Command) -> Result<Result<Reply, Rejection>, StoreError> {
        match command {
            Command::Create { idem, payment } => create(kv, idem, payment),
            Command::Refund { idem, payment_id, refund_id, amount, reason } => {
                refund(kv, idem, payment_id, refund_id, amount, reason)
            }
            Command::Resolve { payment_id, refund_id, outcome, source, event, now } => {
                resolve(kv, payment_id, refund_id, outcome, source, event, now)
            }
        }
    }

    fn query(kv: &dyn KvRead, query: Query) -> Result<Answer, StoreError> {
        match query {
            Query::Get { id } => {
                let Some(p) = get::<PaymentRec>(kv, &payment_key(&id))? else { return Ok(Answer::Payment(None)) };
                let refunds = refunds_of(kv, &id)?;
                Ok(Answer::Payment(Some((p, refunds))))
            }
            Query::List { owner, after, limit } => list(kv, &owner, after, limit),
            Query::Events { id } => {
                if kv.get(&payment_key(&id))?.is_none() {
                    return Ok(Answer::Events(None));
                }
                let rows = kv.scan(format!("v/{id}/").as_bytes(), None, usize::MAX)?;
                let events = rows.iter().map(|(_, v)| Ok(EventRec::decode(v)?)).collect::<Result<_, StoreError>>()?;
                Ok(Answer::Events(Some(events)))
            }
            Query::Pending { after, limit } => pending(kv, after, limit),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
