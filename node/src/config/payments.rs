//! `[payments]`: the payments service's gateway, limits and reconciler, validated here with every
//! other section. The service itself is `crate::services::payments`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// The shortest `payments.idempotency_ttl` (Stripe keeps keys at least 24 h).
pub const MIN_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The default `payments.gateway_key`: the sandbox gateway's default API key.
pub const DEFAULT_GATEWAY_KEY: &str = "sk_test_shoal_sandbox";

/// The default `payments.webhook_secret`, which `shoal dev up` gives its sandbox gateway too.
pub const DEFAULT_WEBHOOK_SECRET: &str = "whsec_shoal_dev";

/// `[payments]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsSection {
    /// Base URL of the Stripe-compatible gateway (`shoal gateway-sandbox` listens on the default).
    pub gateway_url: String,
    /// The gateway's secret API key, sent as `Authorization: Bearer` (never logged).
    pub gateway_key: String,
    /// The secret gateway webhooks are signed with (never logged).
    pub webhook_secret: String,
    /// How far a webhook's signed timestamp may be from now.
    #[serde(with = "humantime_serde")]
    pub webhook_tolerance: Duration,
    /// Largest amount of one payment, in minor units.
    pub max_amount: u64,
    /// The ISO 4217 codes accepted (lowercase).
    pub currencies: Vec<String>,
    /// How long an idempotency key is remembered (at least 24 h).
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// Timeout of one gateway call; a call that times out leaves its payment pending.
    #[serde(with = "humantime_serde")]
    pub gateway_timeout: Duration,
    /// The reconciler's first retry delay (doubles, with jitter).
    #[serde(with = "humantime_serde")]
    pub reconcile_backoff_min: Duration,
    /// The reconciler's longest retry delay.
    #[serde(with = "humantime_serde")]
    pub reconcile_backoff_max: Duration,
    /// Gateway attempts for one pending payment before the reconciler asks whether anything
    /// was charged (and fails it with `gateway_unreachable` only if nothing was).
    pub reconcile_attempts: u32,
    /// How often the reconciler looks for pending payments it is not already retrying.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
}

impl Default for PaymentsSection {
    fn default() -> Self {
        Self {
            gateway_url: "http://127.0.0.1:12111".into(),
            gateway_key: DEFAULT_GATEWAY_KEY.into(),
            webhook_secret: DEFAULT_WEBHOOK_SECRET.into(),
            webhook_tolerance: Duration::from_secs(300),
            max_amount: 99_999_999,
            currencies: ["usd", "eur", "gbp"].map(String::from).to_vec(),
            idempotency_ttl: MIN_IDEMPOTENCY_TTL,
            gateway_timeout: Duration::from_secs(10),
            reconcile_backoff_min: Duration::from_millis(500),
            reconcile_backoff_max: Duration::from_secs(30),
            reconcile_attempts: 8,
            reconcile_interval: Duration::from_secs(1),
        }
    }
}

/// Checks `[payments]`, naming the bad field.
pub fn validate(p: &PaymentsSection) -> Result<(), ConfigError> {
    match url::Url::parse(&p.gateway_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => return Err(invalid("payments.gateway_url", "must be an http(s) URL")),
    }
    if p.gateway_key.is_empty() {
        return Err(invalid("payments.gateway_key", "must not be empty"));
    }
    if p.webhook_secret.is_empty() {
        return Err(invalid("payments.webhook_secret", "must not be empty"));
    }
    if p.max_amount == 0 {
        return Err(invalid("payments.max_amount", "must be at least 1"));
    }
    if p.currencies.is_empty() {
        return Err(invalid("payments.currencies", "must list at least one currency"));
    }
    if let Some(c) = p.currencies.iter().find(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_lowercase())) {
        return Err(invalid("payments.currencies", format!("`{c}` is not a lowercase ISO 4217 code")));
    }
    if p.idempotency_ttl < MIN_IDEMPOTENCY_TTL {
        return Err(invalid("payments.idempotency_ttl", "must be at least 24h"));
    }
    if p.gateway_timeout.is_zero() {
        return Err(invalid("payments.gateway_timeout", "must be more than 0"));
    }
    if p.reconcile_backoff_min.is_zero() || p.reconcile_backoff_max < p.reconcile_backoff_min {
        return Err(invalid("payments.reconcile_backoff_min", "must be more than 0 and at most reconcile_backoff_max"));
    }
    if p.reconcile_attempts == 0 {
        return Err(invalid("payments.reconcile_attempts", "must be at least 1"));
    }
    if p.reconcile_interval.is_zero() {
        return Err(invalid("payments.reconcile_interval", "must be more than 0"));
    }
    Ok(())
}
