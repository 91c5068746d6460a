//! The sandbox payment gateway (`shoal gateway-sandbox`): a local stand-in for Stripe that speaks
//! the subset Shoal's payments adapter uses, so development clusters, cluster tests and the
//! benchmark charge something real without the network.
//!
//! - `POST /v1/payment_intents` (`confirm=true`), `POST /v1/refunds`,
//!   `GET /v1/payment_intents/{id}`, `GET /v1/payment_intents/search?query=metadata['K']:'V'`,
//!   `GET /v1/charges` and `GET /v1/refunds` (Stripe's list shape, newest first, filtered by
//!   `payment_intent`), `GET /v1/events/{id}`; form-encoded
//!   bodies, `Authorization: Bearer <api key>`, `Idempotency-Key` honoured as Stripe does
//!   (same key and parameters: the stored answer again with `Idempotent-Replayed: true`; other
//!   parameters: 400 `idempotency_error`; while the first runs: 409 `idempotency_key_in_use`).
//! - Stripe's test tokens: `pm_card_visa` succeeds, `pm_card_chargeDeclined…` decline (402),
//!   `pm_card_authenticationRequired` needs action ([`ledger::card`] lists them).
//! - Signed webhooks (`Stripe-Signature`, [`crate::util::webhook_signature`]) to one endpoint.
//! - Faults from flags or `POST /_sandbox/faults` ([`ledger::Faults`]): latency, 500s, timeouts
//!   before and after charging, dropped webhooks; `GET /_sandbox/stats` counts what happened.
//!   The control endpoints take the same API key as the rest (401 without it).
//!
//! Everything is in memory: a restart forgets every charge.

pub mod http;
pub mod ledger;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use self::ledger::{Event, Faults, Ledger, Stored};
use crate::util::{Backoff, lock, webhook_signature};

/// The API key the sandbox takes when none is given (the nodes' default `payments.gateway_key`).
pub const DEFAULT_API_KEY: &str = crate::config::DEFAULT_GATEWAY_KEY;
/// Webhook deliveries in flight at once.
const MAX_DELIVERIES: usize = 64;
/// Attempts per webhook delivery.
const DELIVERY_ATTEMPTS: u32 = 3;
/// Timeout of one delivery attempt.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the sandbox sends its events.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The endpoint, e.g. `http://127.0.0.1:7000/v1/payments/webhooks/gateway`.
    pub url: reqwest::Url,
    /// The signing secret (`whsec_…`).
    pub secret: String,
}

/// How a sandbox runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The API key callers must present as `Authorization: Bearer`.
    pub api_key: String,
    /// Where to send events (none: events are only listed).
    pub webhook: Option<WebhookTarget>,
    /// Faults from the start.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Self { api_key: DEFAULT_API_KEY.to_owned(), webhook: None, faults: Faults::default() }
    }
}

/// A counter of the sandbox's stats.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the sandbox did since it started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Charges that succeeded.
    pub charges_succeeded: Count,
    /// Charges that were declined.
    pub charges_declined: Count,
    /// PaymentIntents left needing authentication.
    pub requires_action: Count,
    /// Refunds made.
    pub refunds: Count,
    /// Injected 500s.
    pub injected_errors: Count,
    /// Injected timeouts.
    pub injected_timeouts: Count,
    /// Webhook events delivered (2xx).
    pub webhooks_delivered: Count,
    /// Webhook events dropped by a fault.
    pub webhooks_dropped: Count,
    /// Webhook events given up after every attempt.
    pub webhooks_failed: Count,
}

impl Stats {
    fn count_intent(&self, answer: &Stored) {
        match (answer.status, answer.body.get("status").and_then(Value::as_str)) {
            (402, _) => self.charges_declined.inc(),
            (_, Some("succeeded")) => self.charges_succeeded.inc(),
            _ => self.requires_action.inc(),
        }
    }

    fn snapshot(&self) -> Value {
        json!({
            "charges_succeeded": self.charges_succeeded.get(),
            "charges_declined": self.charges_declined.get(),
            "requires_action": self.requires_action.get(),
            "refunds": self.refunds.get(),
            "injected_errors": self.injected_errors.get(),
            "injected_timeouts": self.injected_timeouts.get(),
            "webhooks_delivered": self.webhooks_delivered.get(),
            "webhooks_dropped": self.webhooks_dropped.get(),
            "webhooks_failed": self.webhooks_failed.get(),
        })
    }
}

/// A running sandbox's state.
pub struct Sandbox {
    api_key: String,
    ledger: Mutex<Ledger>,
    webhook: Option<WebhookTarget>,
    client: reqwest::Client,
    deliveries: Arc<Semaphore>,
    stats: Stats,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox with empty books.
    pub fn new(options: Options) -> Arc<Self> {
        let nonce: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(6).map(char::from).collect();
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new(Self {
            api_key: options.api_key,
            ledger: Mutex::new(Ledger::new(&nonce, options.faults)),
            webhook: options.webhook,
            client,
            deliveries: Arc::new(Semaphore::new(MAX_DELIVERIES)),
            stats: Stats::default(),
        })
    }

    /// Sends `event` in the background (unless a fault drops it), retrying with backoff.
    fn send_event(self: &Arc<Self>, event: Event) {
        if self.webhook.is_none() {
            return;
        }
        if ledger::take(&mut lock(&self.ledger).faults.drop_webhooks_next) {
            self.stats.webhooks_dropped.inc();
            tracing::info!(event = %event.id, "sandbox dropped a webhook event (injected)");
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_permit) = Arc::clone(&me.deliveries).acquire_owned().await else { return };
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
            for attempt in 1..=DELIVERY_ATTEMPTS {
                match me.deliver_once(&event).await {
                    Ok(status) if (200..300).contains(&status) => {
                        me.stats.webhooks_delivered.inc();
                        return;
                    }
                    Ok(status) => tracing::warn!(event = %event.id, attempt, status, "webhook endpoint refused"),
                    Err(error) => tracing::warn!(event = %event.id, attempt, %error, "webhook delivery failed"),
                }
                if attempt < DELIVERY_ATTEMPTS {
                    tokio::time::sleep(crate::util::backoff::jittered(backoff.next_delay())).await;
                }
            }
            me.stats.webhooks_failed.inc();
        });
    }

    /// One signed POST of `event`; answers the endpoint's status.
    async fn deliver_once(&self, event: &Event) -> Result<u16, String> {
        let Some(target) = &self.webhook else { return Err("the sandbox has no webhook endpoint".into()) };
        let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let signature = webhook_signature::header(target.secret.as_bytes(), http::now_secs(), &payload);
        let response = self
            .client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(payload)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    }
}

/// Serves the sandbox on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = http::router(Sandbox::new(options));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// `shoal gateway-sandbox`: binds `listen`, prints the URL it serves on (one line on stdout, so a
/// parent that asked for port 0 learns the port) and serves until `shutdown` completes.
pub async fn run(
    listen: SocketAddr,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("sandbox gateway listening on http://{addr}");
    tracing::info!(%addr, webhook = options.webhook.as_ref().map(|w| w.url.as_str()), "sandbox gateway up");
    serve(listener, options, shutdown).await
}

#[cfg(test)]
mod tests;
