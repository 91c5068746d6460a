//! The gateway seam ([`Gateway`]) and its one real adapter, [`StripeGateway`]: Stripe's
//! PaymentIntents (`confirm=true`) and Refunds over HTTP, form-encoded, `Authorization: Bearer`,
//! with `Idempotency-Key` set to Shoal's own payment or refund id so no retry of ours can charge
//! twice. `shoal gateway-sandbox` speaks the same subset. Lookups never move money: a payment
//! by Stripe's search on our metadata, a refund by Stripe's refund list of its PaymentIntent.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::state::{Outcome, PaymentRec, RefundRec};

/// Metadata key carrying Shoal's payment id at the gateway (how the reconciler finds it).
pub const META_PAYMENT_ID: &str = "shoal_payment_id";
/// Metadata key carrying the payer (the partition a webhook routes to).
pub const META_OWNER: &str = "shoal_owner";
/// Metadata key carrying Shoal's refund id on a gateway refund.
pub const META_REFUND_ID: &str = "shoal_refund_id";

/// Why a gateway call gave no final outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Timeout, connection failure, 5xx, or a key still in use: whether anything happened is
    /// unknown, so the payment stays pending.
    #[error("the gateway's outcome is unknown: {0}")]
    Unknown(String),
}

/// What asking the gateway about a payment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The gateway has it, with this outcome.
    Found(Outcome),
    /// The gateway confirms it has no such payment: nothing was charged.
    NotFound,
}

/// A payment gateway.
pub trait Gateway: Send + Sync {
    /// Creates and confirms a charge of `payment` (idempotent per payment id).
    fn charge<'a>(&'a self, payment: &'a PaymentRec) -> BoxFuture<'a, Result<Outcome, GatewayError>>;
    /// Refunds `refund` of `payment` (idempotent per refund id).
    fn refund<'a>(
        &'a self,
        payment: &'a PaymentRec,
        refund: &'a RefundRec,
    ) -> BoxFuture<'a, Result<Outcome, GatewayError>>;
    /// Asks the gateway for a payment by Shoal's id, without charging anything.
    fn lookup<'a>(&'a self, payment: &'a PaymentRec) -> BoxFuture<'a, Result<Lookup, GatewayError>>;
    /// Asks the gateway for a refund of `payment` by Shoal's refund id, without refunding
    /// anything.
    fn lookup_refund<'a>(
        &'a self,
        payment: &'a PaymentRec,
        refund: &'a RefundRec,
    ) -> BoxFuture<'a, Result<Lookup, GatewayError>>;
}

/// Pages of a payment's refund list read at most when looking for one refund (100 each).
const MAX_REFUND_PAGES: usize = 20;

/// The Stripe-compatible HTTP adapter.
pub struct StripeGateway {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("StripeGateway").field("base", &self.base).finish_non_exhaustive()
    }
}

impl StripeGateway {
    /// An adapter for the gateway at `base` with secret `key`; every call times out after
    /// `timeout`.
    pub fn new(base: &str, key: &str, timeout: Duration) -> Arc<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_default();
        Arc::new(Self { base: base.trim_end_matches('/').to_owned(), key: key.to_owned(), client })
    }

    async fn post(&self, path: &str, idempotency_key: &str, form: &[(String, String)]) -> Result<Answer, GatewayError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", idempotency_key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| GatewayError::Unknown(describe(&e)))?;
        Answer::read(response).await
    }

    async fn get(&self, path_and_query: &str) -> Result<Answer, GatewayError> {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| GatewayError::Unknown(describe(&e)))?;
        Answer::read(response).await
    }
}

/// A reqwest error without its URL's query (nothing secret is in our URLs, but keep it short).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}

/// A gateway answer: status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Result<Self, GatewayError> {
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.map_err(|e| GatewayError::Unknown(describe(&e)))?;
        if status >= 500 || status == 409 || status == 429 {
            return Err(GatewayError::Unknown(format!("answered {status}")));
        }
        Ok(Self { status, body })
    }

    fn error_field(&self, field: &str) -> Option<String> {
        self.body["error"][field].as_str().map(str::to_owned)
    }
}

/// The outcome a PaymentIntent object stands for (`None`: not final yet, e.g. `processing`).
pub fn intent_outcome(intent: &Value) -> Option<Outcome> {
    let gateway_ref = intent["id"].as_str().map(str::to_owned);
    match intent["status"].as_str()? {
        "succeeded" => Some(Outcome::Succeeded { gateway_ref }),
        "requires_action" => Some(Outcome::RequiresAction { gateway_ref }),
        "requires_payment_method" | "canceled" => {
            let error = &intent["last_payment_error"];
            Some(Outcome::Failed {
                code: error["code"].as_str().unwrap_or("card_declined").to_owned(),
                message: error["message"].as_str().unwrap_or("The card was declined.").to_owned(),
                gateway_ref,
            })
        }
        _ => None,
    }
}

/// The outcome a create answered.
fn charge_outcome(answer: &Answer) -> Result<Outcome, GatewayError> {
    match answer.status {
        200..=299 => intent_outcome(&answer.body).ok_or_else(|| GatewayError::Unknown("not final yet".into())),
        402 => Ok(Outcome::Failed {
            code: answer.error_field("code").unwrap_or_else(|| "card_declined".into()),
            message: answer.error_field("message").unwrap_or_else(|| "The card was declined.".into()),
            gateway_ref: answer.body["error"]["payment_intent"]["id"].as_str().map(str::to_owned),
        }),
        // Refused before anything was charged (an unknown token, a bad parameter): final.
        _ => Ok(Outcome::Failed {
            code: match answer.error_field("code").as_deref() {
                Some("resource_missing") => "invalid_payment_method".into(),
                _ => "gateway_refused".into(),
            },
            message: answer.error_field("message").unwrap_or_else(|| "The gateway refused the payment.".into()),
            gateway_ref: None,
        }),
    }
}

impl Gateway for StripeGateway {
    fn charge<'a>(&'a self, p: &'a PaymentRec) -> BoxFuture<'a, Result<Outcome, GatewayError>> {
        Box::pin(async move {
            let mut form = vec![
                ("amount".to_owned(), p.amount.to_string()),
                ("currency".to_owned(), p.currency.clone()),
                ("payment_method".to_owned(), p.payment_method.clone()),
                ("confirm".to_owned(), "true".to_owned()),
                (format!("metadata[{META_PAYMENT_ID}]"), p.id.clone()),
                (format!("metadata[{META_OWNER}]"), p.owner.clone()),
            ];
            if let Some(d) = &p.description {
                form.push(("description".to_owned(), d.clone()));
            }
            let answer = self.post("/v1/payment_intents", &p.id, &form).await?;
            charge_outcome(&answer)
        })
    }

    fn refund<'a>(&'a self, p: &'a PaymentRec, r: &'a RefundRec) -> BoxFuture<'a, Result<Outcome, GatewayError>> {
        Box::pin(async move {
            let Some(intent) = &p.gateway_ref else {
                return Err(GatewayError::Unknown("the payment's gateway id is not known yet".into()));
            };
            let mut form = vec![
                ("payment_intent".to_owned(), intent.clone()),
                ("amount".to_owned(), r.amount.to_string()),
                (format!("metadata[{META_REFUND_ID}]"), r.id.clone()),
                (format!("metadata[{META_PAYMENT_ID}]"), p.id.clone()),
                (format!("metadata[{META_OWNER}]"), p.owner.clone()),
            ];
            if let Some(reason) = &r.reason {
                form.push(("reason".to_owned(), reason.clone()));
            }
            let answer = self.post("/v1/refunds", &r.id, &form).await?;
            Ok(match answer.status {
                200..=299 => Outcome::Succeeded { gateway_ref: answer.body["id"].as_str().map(str::to_owned) },
                _ => Outcome::Failed {
                    code: answer.error_field("code").unwrap_or_else(|| "refund_failed".into()),
                    message: answer.error_field("message").unwrap_or_else(|| "The gateway refused the refund.".into()),
                    gateway_ref: None,
                },
            })
        })
    }

    fn lookup<'a>(&'a self, p: &'a PaymentRec) -> BoxFuture<'a, Result<Lookup, GatewayError>> {
        Box::pin(async move {
            match self.find_intent(p).await? {
                None => Ok(Lookup::NotFound),
                Some(intent) => intent_outcome(&intent)
                    .map(Lookup::Found)
                    .ok_or_else(|| GatewayError::Unknown("not final yet".into())),
            }
        })
    }

    fn lookup_refund<'a>(&'a self, p: &'a PaymentRec, r: &'a RefundRec) -> BoxFuture<'a, Result<Lookup, GatewayError>> {
        Box::pin(async move {
            // Stripe cannot search refunds; its refund list filters by PaymentIntent, and every
            // refund of ours carries our id in its metadata.
            let intent = match &p.gateway_ref {
                Some(intent) => intent.clone(),
                None => match self.find_intent(p).await? {
                    Some(intent) => intent["id"].as_str().unwrap_or_default().to_owned(),
                    // No PaymentIntent: nothing was charged, so nothing was refunded.
                    None => return Ok(Lookup::NotFound),
                },
            };
            let intent: String = url::form_urlencoded::byte_serialize(intent.as_bytes()).collect();
            let mut after: Option<String> = None;
            for _ in 0..MAX_REFUND_PAGES {
                let mut path = format!("/v1/refunds?payment_intent={intent}&limit=100");
                if let Some(a) = &after {
                    path.push_str("&starting_after=");
                    path.extend(url::form_urlencoded::byte_serialize(a.as_bytes()));
                }
                let answer = self.get(&path).await?;
                if answer.status != 200 {
                    return Err(GatewayError::Unknown(format!("refund list answered {}", answer.status)));
                }
                match find_refund(&answer.body, &r.id)? {
                    RefundPage::Found(outcome) => return Ok(Lookup::Found(outcome)),
                    RefundPage::Absent => return Ok(Lookup::NotFound),
                    RefundPage::More(last) => after = Some(last),
                }
            }
            Err(GatewayError::Unknown("the refund list is longer than the lookup reads".into()))
        })
    }
}

impl StripeGateway {
    /// The PaymentIntent carrying Shoal's payment id in its metadata (Stripe's search API).
    async fn find_intent(&self, p: &PaymentRec) -> Result<Option<Value>, GatewayError> {
        let query = format!("metadata['{META_PAYMENT_ID}']:'{}'", p.id);
        let query: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let answer = self.get(&format!("/v1/payment_intents/search?query={query}")).await?;
        if answer.status != 200 {
            return Err(GatewayError::Unknown(format!("search answered {}", answer.status)));
        }
        Ok(answer.body["data"].as_array().and_then(|d| d.first()).cloned())
    }
}

/// What one page of a refund list says about the refund with Shoal id `refund_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundPage {
    /// It is on the page, with this outcome.
    Found(Outcome),
    /// It is not on this page, and no page follows: the gateway has no such refund.
    Absent,
    /// Not on this page; the next starts after this refund id.
    More(String),
}

/// Reads one page of Stripe's refund list (`{"data": [...], "has_more": …}`) for our refund.
pub fn find_refund(page: &Value, refund_id: &str) -> Result<RefundPage, GatewayError> {
    let Some(data) = page["data"].as_array() else {
        return Err(GatewayError::Unknown("the refund list has no data".into()));
    };
    if let Some(refund) = data.iter().find(|r| r["metadata"][META_REFUND_ID] == refund_id) {
        return match refund["status"].as_str() {
            Some("succeeded") => {
                Ok(RefundPage::Found(Outcome::Succeeded { gateway_ref: refund["id"].as_str().map(str::to_owned) }))
            }
            Some("failed" | "canceled") => Ok(RefundPage::Found(Outcome::Failed {
                code: "refund_failed".into(),
                message: "The gateway could not refund.".into(),
                gateway_ref: refund["id"].as_str().map(str::to_owned),
            })),
            // `pending`, `requires_action`: not final yet.
            _ => Err(GatewayError::Unknown("the refund is not final yet".into())),
        };
    }
    match (page["has_more"].as_bool(), data.last().and_then(|r| r["id"].as_str())) {
        (Some(false), _) => Ok(RefundPage::Absent),
        (Some(true), Some(last)) => Ok(RefundPage::More(last.to_owned())),
        _ => Err(GatewayError::Unknown("the refund list cannot be paged".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_is_found_by_our_id_or_confirmed_absent_only_on_the_last_page() {
        let refund = |id: &str, ours: &str, status: &str| serde_json::json!({"id": id, "status": status, "metadata": {"shoal_refund_id": ours}});
        let page = |data: Vec<Value>, more: bool| serde_json::json!({"object": "list", "data": data, "has_more": more});
        let last = page(vec![refund("re_g1", "re_a", "succeeded"), refund("re_g2", "re_b", "failed")], false);
        assert_eq!(
            find_refund(&last, "re_a"),
            Ok(RefundPage::Found(Outcome::Succeeded { gateway_ref: Some("re_g1".into()) }))
        );
        assert!(matches!(find_refund(&last, "re_b"), Ok(RefundPage::Found(Outcome::Failed { .. }))));
        assert_eq!(find_refund(&last, "re_c"), Ok(RefundPage::Absent));
        let first = page(vec![refund("re_g3", "re_d", "succeeded")], true);
        assert_eq!(find_refund(&first, "re_c"), Ok(RefundPage::More("re_g3".into())));
        let pending = page(vec![refund("re_g4", "re_e", "pending")], false);
        assert!(find_refund(&pending, "re_e").is_err(), "not final: unknown, never absent");
        assert!(find_refund(&serde_json::json!({"error": {}}), "re_a").is_err());
        assert!(find_refund(&page(vec![], true), "re_a").is_err(), "more, but no cursor");
    }
}
