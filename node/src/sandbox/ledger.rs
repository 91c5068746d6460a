//! The sandbox gateway's books, without I/O: PaymentIntents, charges, refunds, events, the
//! idempotency records and the fault counters. The HTTP layer ([`super::http`]) parses requests
//! into these calls, holds the lock only around them and does every wait (latency, hangs) outside.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

/// Most idempotency records kept (a development tool: past this, the oldest are dropped).
pub const MAX_IDEMPOTENCY_RECORDS: usize = 1_000_000;
/// Largest amount Stripe takes, in minor units (eight digits).
pub const MAX_AMOUNT: u64 = 99_999_999;
/// Most metadata keys on one object (Stripe's limit).
pub const MAX_METADATA_KEYS: usize = 50;

/// A Stripe-shaped error: HTTP status and `{"error": {...}}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeError {
    /// HTTP status.
    pub status: u16,
    /// The `error` object (boxed: errors travel in `Result`s).
    pub error: Box<ErrorObject>,
}

/// Stripe's `error` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorObject {
    /// `invalid_request_error`, `card_error`, `idempotency_error`, `api_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Machine-readable code (`card_declined`, `parameter_unknown`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// For card declines: why the issuer declined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<&'static str>,
    /// The parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// A sentence for people.
    pub message: String,
    /// For card declines: the charge that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    /// For card declines: the PaymentIntent as it now is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Box<Intent>>,
}

impl StripeError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            error: Box::new(ErrorObject {
                kind: "invalid_request_error",
                code: Some(code),
                decline_code: None,
                param: param.map(str::to_owned),
                message: message.into(),
                charge: None,
                payment_intent: None,
            }),
        }
    }

    /// A 404 `resource_missing`.
    pub fn missing(param: &str, what: &str, id: &str) -> Self {
        Self { status: 404, ..Self::invalid("resource_missing", Some(param), format!("No such {what}: '{id}'")) }
    }

    /// An `api_error` with this status (injected faults).
    pub fn api(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            error: Box::new(ErrorObject {
                kind: "api_error",
                code: None,
                decline_code: None,
                param: None,
                message: message.into(),
                charge: None,
                payment_intent: None,
            }),
        }
    }

    fn idempotency(status: u16, code: &'static str, message: &str) -> Self {
        Self {
            status,
            error: Box::new(ErrorObject { kind: "idempotency_error", ..*Self::invalid(code, None, message).error }),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        serde_json::json!({ "error": self.error })
    }
}

/// A PaymentIntent's status (the subset the sandbox reaches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Charged.
    Succeeded,
    /// Declined: a new payment method is needed.
    RequiresPaymentMethod,
    /// The card asks for authentication (3-D Secure).
    RequiresAction,
}

/// A PaymentIntent, in Stripe's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intent {
    /// `pi_…`.
    pub id: String,
    /// Always `payment_intent`.
    pub object: &'static str,
    /// Minor units.
    pub amount: u64,
    /// What was charged.
    pub amount_received: u64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Where it stands.
    pub status: IntentStatus,
    /// Unix seconds.
    pub created: u64,
    /// Free text.
    pub description: Option<String>,
    /// The caller's keys and values.
    pub metadata: BTreeMap<String, String>,
    /// The test token it was confirmed with.
    pub payment_method: String,
    /// The charge of its confirmation, if one was attempted.
    pub latest_charge: Option<String>,
    /// Why the last attempt failed.
    pub last_payment_error: Option<ErrorObject>,
    /// Always false.
    pub livemode: bool,
}

/// A charge, in Stripe's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Charge {
    /// `ch_…`.
    pub id: String,
    /// Always `charge`.
    pub object: &'static str,
    /// Minor units.
    pub amount: u64,
    /// What was captured (the amount when it succeeded, else 0).
    pub amount_captured: u64,
    /// What was refunded so far.
    pub amount_refunded: u64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    /// Whether money moved.
    pub paid: bool,
    /// Whether it was captured.
    pub captured: bool,
    /// Whether it is fully refunded.
    pub refunded: bool,
    /// Its PaymentIntent.
    pub payment_intent: String,
    /// The test token.
    pub payment_method: String,
    /// Unix seconds.
    pub created: u64,
    /// Free text.
    pub description: Option<String>,
    /// Copied from the PaymentIntent.
    pub metadata: BTreeMap<String, String>,
    /// Why it failed.
    pub failure_code: Option<&'static str>,
    /// Why it failed, for people.
    pub failure_message: Option<&'static str>,
}

/// A refund, in Stripe's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refund {
    /// `re_…`.
    pub id: String,
    /// Always `refund`.
    pub object: &'static str,
    /// Minor units.
    pub amount: u64,
    /// The refunded charge.
    pub charge: String,
    /// Its PaymentIntent.
    pub payment_intent: String,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Always `succeeded` in the sandbox.
    pub status: &'static str,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// The caller's keys and values.
    pub metadata: BTreeMap<String, String>,
}

/// An event, as sent to the webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `evt_…`.
    pub id: String,
    /// Always `event`.
    pub object: &'static str,
    /// `payment_intent.succeeded`, `payment_intent.payment_failed`, `charge.refunded`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// `{"object": <the intent or charge>}`.
    pub data: Value,
    /// Always false.
    pub livemode: bool,
}

/// What a test token does on confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    /// Charged.
    Succeeds,
    /// Declined with this `code` and `decline_code`.
    Declines {
        /// Stripe's error code.
        code: &'static str,
        /// The issuer's reason.
        decline_code: &'static str,
    },
    /// Needs 3-D Secure.
    RequiresAction,
}

/// What Stripe's test token `token` does (`None`: no such payment method).
pub fn card(token: &str) -> Option<Card> {
    let declined = |decline_code| Card::Declines { code: "card_declined", decline_code };
    Some(match token {
        "pm_card_visa"
        | "pm_card_visa_debit"
        | "pm_card_mastercard"
        | "pm_card_mastercard_debit"
        | "pm_card_amex"
        | "pm_card_discover"
        | "pm_card_diners"
        | "pm_card_jcb"
        | "pm_card_unionpay"
        | "pm_card_us" => Card::Succeeds,
        "pm_card_chargeDeclined" => declined("generic_decline"),
        "pm_card_chargeDeclinedInsufficientFunds" => declined("insufficient_funds"),
        "pm_card_chargeDeclinedLostCard" => declined("lost_card"),
        "pm_card_chargeDeclinedStolenCard" => declined("stolen_card"),
        "pm_card_chargeDeclinedFraudulent" => declined("fraudulent"),
        "pm_card_chargeDeclinedExpiredCard" => Card::Declines { code: "expired_card", decline_code: "expired_card" },
        "pm_card_chargeDeclinedIncorrectCvc" => Card::Declines { code: "incorrect_cvc", decline_code: "incorrect_cvc" },
        "pm_card_chargeDeclinedProcessingError" => {
            Card::Declines { code: "processing_error", decline_code: "processing_error" }
        }
        "pm_card_authenticationRequired" | "pm_card_threeDSecure2Required" => Card::RequiresAction,
        _ => return None,
    })
}

fn decline_message(code: &str) -> &'static str {
    match code {
        "expired_card" => "Your card has expired.",
        "incorrect_cvc" => "Your card's security code is incorrect.",
        "processing_error" => "An error occurred while processing your card. Try again in a little bit.",
        _ => "Your card was declined.",
    }
}

/// `POST /v1/payment_intents`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateIntent {
    /// Minor units.
    pub amount: u64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// A test token.
    pub payment_method: String,
    /// Free text.
    pub description: Option<String>,
    /// Keys and values.
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/refunds`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRefund {
    /// `pi_…` or `ch_…`.
    pub target: RefundTarget,
    /// Minor units; `None`: what is left.
    pub amount: Option<u64>,
    /// Why.
    pub reason: Option<String>,
    /// Keys and values.
    pub metadata: BTreeMap<String, String>,
}

/// What a refund names.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundTarget {
    /// A PaymentIntent id.
    Intent(String),
    /// A charge id.
    Charge(String),
}

/// A stored answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

/// An idempotency record.
#[derive(Debug, Clone)]
enum KeyState {
    /// The first request is running.
    InFlight { fingerprint: String },
    /// The first request's answer.
    Done { fingerprint: String, answer: Stored },
}

/// What an idempotency key says about a new request.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// A new key (or no key): run the request, then [`Ledger::finish`] or [`Ledger::abandon`].
    Run,
    /// The key's stored answer.
    Replay(Stored),
}

/// Faults to inject, set by flags or `POST /_sandbox/faults`. Counters count down per request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every API answer, in milliseconds.
    pub latency_ms: u64,
    /// The next N API requests answer 500 and do nothing.
    pub fail_next: u32,
    /// The next N charge or refund requests hang (see `hang_ms`) and do nothing.
    pub timeout_before_charge_next: u32,
    /// The next N charge or refund requests do their work, then hang (see `hang_ms`).
    pub timeout_after_charge_next: u32,
    /// The next N webhook events are not sent (they stay listed and can be resent).
    pub drop_webhooks_next: u32,
    /// How long an injected timeout hangs before answering 504, in milliseconds (0: 30 s).
    pub hang_ms: u64,
}

/// Takes one from `counter` if it is positive.
pub fn take(counter: &mut u32) -> bool {
    let hit = *counter > 0;
    *counter = counter.saturating_sub(1);
    hit
}

/// Everything the sandbox knows.
#[derive(Debug)]
pub struct Ledger {
    /// Distinguishes this run's ids from another run's.
    nonce: String,
    next_id: u64,
    intents: HashMap<String, Intent>,
    charges: HashMap<String, Charge>,
    /// Charge ids, oldest first.
    charge_order: Vec<String>,
    refunds: HashMap<String, Refund>,
    /// Refund ids, oldest first.
    refund_order: Vec<String>,
    events: HashMap<String, Event>,
    keys: HashMap<String, KeyState>,
    /// Keys, oldest first, to drop past [`MAX_IDEMPOTENCY_RECORDS`].
    key_order: std::collections::VecDeque<String>,
    /// What to inject.
    pub faults: Faults,
}

impl Ledger {
    /// Empty books; `nonce` goes into every id.
    pub fn new(nonce: &str, faults: Faults) -> Self {
        Self {
            nonce: nonce.to_owned(),
            next_id: 0,
            intents: HashMap::new(),
            charges: HashMap::new(),
            charge_order: Vec::new(),
            refunds: HashMap::new(),
            refund_order: Vec::new(),
            events: HashMap::new(),
            keys: HashMap::new(),
            key_order: std::collections::VecDeque::new(),
            faults,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}{:010}", self.nonce, self.next_id)
    }

    /// Checks `key` (scoped to the API key by the caller) for a request with `fingerprint`
    /// (method, path and sorted parameters): a replay, a conflict, or go ahead (the key is then
    /// in flight).
    pub fn begin(&mut self, key: Option<&str>, fingerprint: &str) -> Result<Begin, StripeError> {
        let Some(key) = key else { return Ok(Begin::Run) };
        match self.keys.get(key) {
            Some(KeyState::InFlight { .. }) => Err(StripeError::idempotency(
                409,
                "idempotency_key_in_use",
                "There is currently another in-progress request using this Idempotent Key (that probably means \
                 you submitted twice, and the other request is still going through).",
            )),
            Some(KeyState::Done { fingerprint: first, .. }) if first != fingerprint => Err(StripeError::idempotency(
                400,
                "idempotency_key_reused",
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            )),
            Some(KeyState::Done { answer, .. }) => Ok(Begin::Replay(answer.clone())),
            None => {
                self.keys.insert(key.to_owned(), KeyState::InFlight { fingerprint: fingerprint.to_owned() });
                self.key_order.push_back(key.to_owned());
                while self.key_order.len() > MAX_IDEMPOTENCY_RECORDS {
                    if let Some(old) = self.key_order.pop_front() {
                        self.keys.remove(&old);
                    }
                }
                Ok(Begin::Run)
            }
        }
    }

    /// Stores the answer of the request that holds `key`.
    pub fn finish(&mut self, key: Option<&str>, answer: &Stored) {
        let Some(key) = key else { return };
        if let Some(state) = self.keys.get_mut(key) {
            let fingerprint = match state {
                KeyState::InFlight { fingerprint } | KeyState::Done { fingerprint, .. } => std::mem::take(fingerprint),
            };
            *state = KeyState::Done { fingerprint, answer: answer.clone() };
        }
    }

    /// Forgets `key`: its request did nothing (an injected fault before any work).
    pub fn abandon(&mut self, key: Option<&str>) {
        if let Some(key) = key
            && matches!(self.keys.get(key), Some(KeyState::InFlight { .. }))
        {
            self.keys.remove(key);
        }
    }

    /// Creates and confirms a PaymentIntent. Answers the stored answer (200 with the intent, or
    /// 402 with the decline) and the event to send, if any.
    pub fn create_intent(&mut self, req: CreateIntent, now: u64) -> Result<(Stored, Option<Event>), StripeError> {
        let Some(card) = card(&req.payment_method) else {
            return Err(StripeError::invalid(
                "resource_missing",
                Some("payment_method"),
                format!("No such PaymentMethod: '{}'", req.payment_method),
            ));
        };
        let id = self.id("pi");
        let mut intent = Intent {
            id: id.clone(),
            object: "payment_intent",
            amount: req.amount,
            amount_received: 0,
            currency: req.currency,
            status: IntentStatus::RequiresAction,
            created: now,
            description: req.description,
            metadata: req.metadata,
            payment_method: req.payment_method,
            latest_charge: None,
            last_payment_error: None,
            livemode: false,
        };
        if card == Card::RequiresAction {
            self.intents.insert(id, intent.clone());
            return Ok((Stored { status: 200, body: to_value(&intent) }, None));
        }
        let charge_id = self.id("ch");
        let mut charge = Charge {
            id: charge_id.clone(),
            object: "charge",
            amount: intent.amount,
            amount_captured: 0,
            amount_refunded: 0,
            currency: intent.currency.clone(),
            status: "failed",
            paid: false,
            captured: false,
            refunded: false,
            payment_intent: id.clone(),
            payment_method: intent.payment_method.clone(),
            created: now,
            description: intent.description.clone(),
            metadata: intent.metadata.clone(),
            failure_code: None,
            failure_message: None,
        };
        intent.latest_charge = Some(charge_id.clone());
        let (answer, kind) = match card {
            Card::Declines { code, decline_code } => {
                let message = decline_message(code);
                charge.failure_code = Some(code);
                charge.failure_message = Some(message);
                intent.status = IntentStatus::RequiresPaymentMethod;
                let error = ErrorObject {
                    kind: "card_error",
                    code: Some(code),
                    decline_code: Some(decline_code),
                    param: None,
                    message: message.to_owned(),
                    charge: Some(charge_id.clone()),
                    payment_intent: None,
                };
                intent.last_payment_error = Some(error.clone());
                let error = ErrorObject { payment_intent: Some(Box::new(intent.clone())), ..error };
                (Stored { status: 402, body: serde_json::json!({ "error": error }) }, "payment_intent.payment_failed")
            }
            Card::Succeeds | Card::RequiresAction => {
                charge.status = "succeeded";
                charge.paid = true;
                charge.captured = true;
                charge.amount_captured = charge.amount;
                intent.status = IntentStatus::Succeeded;
                intent.amount_received = intent.amount;
                (Stored { status: 200, body: to_value(&intent) }, "payment_intent.succeeded")
            }
        };
        let event = self.event(kind, to_value(&intent), now);
        self.charges.insert(charge_id.clone(), charge);
        self.charge_order.push(charge_id);
        self.intents.insert(id, intent);
        Ok((answer, Some(event)))
    }

    /// Refunds part or all of a succeeded charge.
    pub fn create_refund(&mut self, req: CreateRefund, now: u64) -> Result<(Stored, Option<Event>), StripeError> {
        let charge_id = match &req.target {
            RefundTarget::Charge(id) => id.clone(),
            RefundTarget::Intent(id) => {
                let intent =
                    self.intents.get(id).ok_or_else(|| StripeError::missing("payment_intent", "payment_intent", id))?;
                match (&intent.latest_charge, intent.status) {
                    (Some(ch), IntentStatus::Succeeded) => ch.clone(),
                    _ => {
                        return Err(StripeError::invalid(
                            "charge_not_refundable",
                            Some("payment_intent"),
                            format!("PaymentIntent {id} does not have a successful charge to refund."),
                        ));
                    }
                }
            }
        };
        let refund_id = self.id("re");
        let charge =
            self.charges.get_mut(&charge_id).ok_or_else(|| StripeError::missing("charge", "charge", &charge_id))?;
        if !charge.paid {
            return Err(StripeError::invalid(
                "charge_not_refundable",
                Some("charge"),
                format!("Charge {charge_id} has no captured amount to refund."),
            ));
        }
        let left = charge.amount - charge.amount_refunded;
        if left == 0 {
            return Err(StripeError::invalid(
                "charge_already_refunded",
                Some("charge"),
                format!("Charge {charge_id} has already been refunded."),
            ));
        }
        let amount = req.amount.unwrap_or(left);
        if amount > left {
            return Err(StripeError::invalid(
                "amount_too_large",
                Some("amount"),
                format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"),
            ));
        }
        charge.amount_refunded += amount;
        charge.refunded = charge.amount_refunded == charge.amount;
        let refund = Refund {
            id: refund_id.clone(),
            object: "refund",
            amount,
            charge: charge_id,
            payment_intent: charge.payment_intent.clone(),
            currency: charge.currency.clone(),
            status: "succeeded",
            reason: req.reason,
            created: now,
            metadata: req.metadata,
        };
        let mut charge = to_value(&*charge);
        let answer = Stored { status: 200, body: to_value(&refund) };
        self.refunds.insert(refund_id.clone(), refund);
        self.refund_order.push(refund_id);
        // As Stripe's older API versions do, the charge lists its refunds, so the endpoint
        // learns which refunds the event reports.
        let mut refunds: Vec<&Refund> = self.refunds.values().filter(|r| charge["id"] == r.charge.as_str()).collect();
        refunds.sort_by(|a, b| b.id.cmp(&a.id));
        charge["refunds"] = serde_json::json!({ "object": "list", "has_more": false, "data": refunds });
        let event = self.event("charge.refunded", charge, now);
        Ok((answer, Some(event)))
    }

    fn event(&mut self, kind: &'static str, object: Value, now: u64) -> Event {
        let event = Event {
            id: self.id("evt"),
            object: "event",
            kind,
            created: now,
            data: serde_json::json!({ "object": object }),
            livemode: false,
        };
        self.events.insert(event.id.clone(), event.clone());
        event
    }

    /// A PaymentIntent by id.
    pub fn intent(&self, id: &str) -> Result<&Intent, StripeError> {
        self.intents.get(id).ok_or_else(|| StripeError::missing("intent", "payment_intent", id))
    }

    /// The PaymentIntents whose metadata `key` is `value`, newest first (Stripe's search).
    pub fn search_intents(&self, key: &str, value: &str) -> Vec<&Intent> {
        let mut found: Vec<&Intent> =
            self.intents.values().filter(|i| i.metadata.get(key).is_some_and(|v| v == value)).collect();
        found.sort_by(|a, b| b.id.cmp(&a.id));
        found
    }

    /// A page of charges, newest first, after `starting_after` (a charge id), optionally only
    /// those of one PaymentIntent. Answers the page and whether more follow.
    pub fn charges(
        &self,
        limit: usize,
        starting_after: Option<&str>,
        payment_intent: Option<&str>,
    ) -> Result<(Vec<&Charge>, bool), StripeError> {
        let mut newest_first = self.charge_order.iter().rev();
        if let Some(after) = starting_after {
            if !self.charges.contains_key(after) {
                return Err(StripeError::missing("starting_after", "charge", after));
            }
            for id in newest_first.by_ref() {
                if id == after {
                    break;
                }
            }
        }
        let mut page = Vec::with_capacity(limit);
        let mut more = false;
        for charge in newest_first.filter_map(|id| self.charges.get(id)) {
            if payment_intent.is_some_and(|pi| pi != charge.payment_intent) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(charge);
        }
        Ok((page, more))
    }

    /// A page of refunds, newest first, after `starting_after` (a refund id), optionally only
    /// those of one PaymentIntent or charge (Stripe's `GET /v1/refunds`). Answers the page and
    /// whether more follow.
    pub fn refunds(
        &self,
        limit: usize,
        starting_after: Option<&str>,
        payment_intent: Option<&str>,
        charge: Option<&str>,
    ) -> Result<(Vec<&Refund>, bool), StripeError> {
        let mut newest_first = self.refund_order.iter().rev();
        if let Some(after) = starting_after {
            if !self.refunds.contains_key(after) {
                return Err(StripeError::missing("starting_after", "refund", after));
            }
            for id in newest_first.by_ref() {
                if id == after {
                    break;
                }
            }
        }
        let mut page = Vec::with_capacity(limit);
        let mut more = false;
        for refund in newest_first.filter_map(|id| self.refunds.get(id)) {
            if payment_intent.is_some_and(|pi| pi != refund.payment_intent)
                || charge.is_some_and(|c| c != refund.charge)
            {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(refund);
        }
        Ok((page, more))
    }

    /// An event by id.
    pub fn event_by_id(&self, id: &str) -> Result<&Event, StripeError> {
        self.events.get(id).ok_or_else(|| StripeError::missing("event", "event", id))
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
