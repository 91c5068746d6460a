//! `[ratelimit]`: the rate limiter's policies, validated here with every other section so one
//! file checks a whole config. The limiter itself is `crate::services::ratelimit`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, nonzero};

/// The longest lease span (`ratelimit.lease_ttl`).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(1);

/// A route a policy covers: an optional method and a route template, or a prefix of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    method: Option<String>,
    path: String,
    prefix: bool,
}

impl RoutePattern {
    /// Parses `[METHOD ]/path[*]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (method, path) = match text.split_once(' ') {
            Some((m, p)) => (Some(m.trim()), p.trim()),
            None => (None, text.trim()),
        };
        if let Some(m) = method
            && !m.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(format!("`{text}`: the method must be upper-case, like GET"));
        }
        if !path.starts_with('/') {
            return Err(format!("`{text}`: a route starts with /"));
        }
        let (path, prefix) = match path.strip_suffix('*') {
            Some(p) => (p, true),
            None => (path, false),
        };
        if path.contains('*') {
            return Err(format!("`{text}`: * may only end a route"));
        }
        Ok(Self { method: method.map(str::to_string), path: path.to_string(), prefix })
    }

    /// Whether a request with `method` to route template (or raw path) `route` is covered.
    pub fn matches(&self, method: &str, route: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && if self.prefix { route.starts_with(&self.path) } else { route == self.path }
    }
}

/// Which algorithm a policy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// GCRA.
    TokenBucket,
    /// Exact sliding window (a log of admissions).
    SlidingWindow,
}

/// `[ratelimit]`: the cluster-wide rate limiter every `/v1/*` request and redirect passes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// false: no request is limited (benchmarks).
    pub enabled: bool,
    /// How long a node waits for a key's owner (the leader of the key's partition) before the
    /// policy's `on_unavailable` decides.
    #[serde(with = "humantime_serde")]
    pub owner_timeout: Duration,
    /// How long a node may spend requests a key's owner leased to it (token-bucket keys this
    /// node sends many requests for); `0s` turns leases off, so every request asks the owner.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// The policies; a request passes every policy whose routes cover it.
    pub policies: Vec<RatePolicy>,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            enabled: true,
            owner_timeout: Duration::from_millis(100),
            lease_ttl: Duration::from_millis(50),
            policies: vec![
                RatePolicy {
                    name: "api".into(),
                    limit: 100,
                    window: Duration::from_secs(60),
                    algorithm: Algorithm::TokenBucket,
                    routes: vec!["/v1/*".into()],
                    // The cluster view has a policy of its own; the API description is as free as /healthz.
                    except: vec!["GET /v1/cluster".into(), "GET /v1/openapi.json".into()],
                    key: RateKey::User,
                    on_unavailable: OnUnavailable::Open,
                },
                // `shoal status --watch` asks every node every second.
                RatePolicy {
                    name: "cluster_view".into(),
                    limit: 1200,
                    window: Duration::from_secs(60),
                    algorithm: Algorithm::TokenBucket,
                    routes: vec!["GET /v1/cluster".into()],
                    except: Vec::new(),
                    key: RateKey::Ip,
                    on_unavailable: OnUnavailable::Open,
                },
                RatePolicy {
                    name: "redirects".into(),
                    limit: 1200,
                    window: Duration::from_secs(60),
                    algorithm: Algorithm::TokenBucket,
                    routes: vec!["GET /{code}".into()],
                    except: Vec::new(),
                    key: RateKey::Ip,
                    on_unavailable: OnUnavailable::Open,
                },
            ],
        }
    }
}

/// One `[[ratelimit.policies]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// Name, in headers and metrics: `[a-z0-9_-]`, unique.
    pub name: String,
    /// Requests allowed per window.
    pub limit: u64,
    /// The window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// `token_bucket` (GCRA: bursts up to `limit`, refilled evenly) or `sliding_window` (never
    /// more than `limit` in any window; at most 10,000).
    pub algorithm: Algorithm,
    /// Route templates covered, optionally after a method: `/v1/*` (a prefix), `POST /v1/urls`,
    /// `GET /{code}` (the redirect).
    pub routes: Vec<String>,
    /// Routes left out of `routes` (same syntax), e.g. a route with a policy of its own.
    #[serde(default)]
    pub except: Vec<String>,
    /// `user` (the authenticated user, else the client IP) or `ip`.
    #[serde(default)]
    pub key: RateKey,
    /// When the key's owner cannot answer in time: `open` admits, `closed` refuses (503).
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

/// What a policy counts requests by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The authenticated user; the client IP for requests without a valid token.
    #[default]
    User,
    /// The client IP.
    Ip,
}

/// What a policy decides when the key's owner cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Admit the request.
    #[default]
    Open,
    /// Refuse it with 503.
    Closed,
}

/// Checks `[ratelimit]`, naming the bad field.
pub(super) fn validate(r: &RateLimitSection) -> Result<(), ConfigError> {
    {
        nonzero("ratelimit.owner_timeout", r.owner_timeout)?;
        if r.lease_ttl > MAX_LEASE_TTL {
            return Err(invalid(
                "ratelimit.lease_ttl",
                format!("must be at most {:?} (0s turns leases off)", MAX_LEASE_TTL),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, p) in r.policies.iter().enumerate() {
            let field = |f: &str| format!("ratelimit.policies[{i}].{f}");
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 32
                && p.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !name_ok {
                return Err(invalid(&field("name"), "must be 1 to 32 characters of a-z, 0-9, '_' and '-'"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(&field("name"), format!("policy `{}` is defined twice", p.name)));
            }
            if p.limit == 0 {
                return Err(invalid(&field("limit"), "must be at least 1"));
            }
            if p.window < Duration::from_millis(1) {
                return Err(invalid(&field("window"), "must be at least 1ms"));
            }
            if p.algorithm == Algorithm::SlidingWindow && p.limit > 10_000 {
                return Err(invalid(
                    &field("limit"),
                    "a sliding_window policy keeps every admission of its window: at most 10000 (use token_bucket)",
                ));
            }
            if p.routes.is_empty() {
                return Err(invalid(&field("routes"), "must list at least one route"));
            }
            for (list, routes) in [("routes", &p.routes), ("except", &p.except)] {
                for route in routes {
                    if let Err(why) = RoutePattern::parse(route) {
                        return Err(invalid(&field(list), why));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_match_templates_prefixes_and_methods() {
        let all = RoutePattern::parse("/v1/*").expect("parse");
        assert!(all.matches("GET", "/v1/counters/{name}"));
        assert!(all.matches("POST", "/v1/urls"));
        assert!(!all.matches("GET", "/healthz"));
        assert!(!all.matches("GET", "/{code}"));
        let redirect = RoutePattern::parse("GET /{code}").expect("parse");
        assert!(redirect.matches("GET", "/{code}"));
        assert!(!redirect.matches("POST", "/{code}"));
        assert!(!redirect.matches("GET", "/v1/urls"));
        let shorten = RoutePattern::parse("POST /v1/urls").expect("parse");
        assert!(shorten.matches("POST", "/v1/urls"));
        assert!(!shorten.matches("POST", "/v1/urls/{code}"));
        assert!(RoutePattern::parse("v1/*").is_err());
        assert!(RoutePattern::parse("get /v1").is_err());
        assert!(RoutePattern::parse("/v1/*/x").is_err());
    }
}
