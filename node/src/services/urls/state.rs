//! The shortener's replicated state: links and their click counts in the code's partition, and
//! the code permutation's key in the meta group.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::services::{Kv, KvRead, Payload, Service, ServiceId, StoreError, get};

/// A short link (`url/{code}` in the code's partition).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UrlRec {
    /// The target.
    pub url: String,
    /// Id of the user who created it.
    pub owner: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Expiry, Unix milliseconds.
    pub expires_ms: u64,
    /// When it was deleted, Unix milliseconds (0: not deleted). Deleted links stay as
    /// tombstones, so their code answers 410 and is never handed out again.
    pub deleted_ms: u64,
}

/// Clicks of one short link (`clicks/{code}` in the code's partition).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickRec {
    /// Every click ever counted.
    pub total: u64,
    /// Clicks per day (days since the Unix epoch, UTC), ascending; the last [`CLICK_DAYS_KEPT`].
    pub days: Vec<(u32, u64)>,
    /// Clicks per referrer host, most first; the top [`CLICK_REFERRERS_KEPT`].
    pub referrers: Vec<(String, u64)>,
}

/// Days of per-day clicks kept (twice the 30 the API shows, so a lagging flush still lands).
pub const CLICK_DAYS_KEPT: u32 = 60;
/// Referrer hosts kept per link.
pub const CLICK_REFERRERS_KEPT: usize = 100;

impl ClickRec {
    /// Adds clicks counted elsewhere. Deterministic (the state machine runs it on every replica).
    pub fn add(&mut self, days: &[(u32, u64)], referrers: &[(String, u64)]) {
        let mut by_day: BTreeMap<u32, u64> = self.days.iter().copied().collect();
        for (day, n) in days {
            *by_day.entry(*day).or_default() += n;
            self.total = self.total.saturating_add(*n);
        }
        let newest = by_day.keys().next_back().copied().unwrap_or(0);
        by_day.retain(|d, _| *d + CLICK_DAYS_KEPT > newest);
        self.days = by_day.into_iter().collect();
        let mut by_host: BTreeMap<String, u64> = self.referrers.iter().cloned().collect();
        for (host, n) in referrers {
            *by_host.entry(host.clone()).or_default() += n;
        }
        let mut hosts: Vec<(String, u64)> = by_host.into_iter().collect();
        hosts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hosts.truncate(CLICK_REFERRERS_KEPT);
        self.referrers = hosts;
    }
}

/// The shortener's commands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Creates the link of `code` unless the code exists (an alias, a code or a tombstone).
    Create {
        /// The code.
        code: String,
        /// The link.
        link: UrlRec,
    },
    /// Replaces the link of `code` if it still is `expected` (compare-and-set).
    Replace {
        /// The code.
        code: String,
        /// The link the proposer read.
        expected: UrlRec,
        /// The new link.
        link: UrlRec,
    },
    /// Adds clicks of `code` counted on one node; answers the new total.
    AddClicks {
        /// The link's code.
        code: String,
        /// Clicks per day (days since the Unix epoch, UTC).
        days: Vec<(u32, u64)>,
        /// Clicks per referrer host.
        referrers: Vec<(String, u64)>,
    },
    /// Meta group: sets the key of the code permutation unless one is set; answers the key in
    /// force (the first one proposed wins).
    SetCodeKey {
        /// 32 random bytes.
        key: Vec<u8>,
    },
}

/// The shortener's command answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done.
    Done,
    /// A link's click total.
    Clicks(u64),
    /// The code permutation's key.
    CodeKey(Vec<u8>),
}

/// Why a shortener command changed nothing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `Create` of a code that exists.
    #[error("the code exists")]
    Exists,
    /// `Replace` of a link that changed since it was read, or is gone.
    #[error("the link changed")]
    Changed,
}

/// The shortener's queries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The link of a code.
    Link {
        /// The code.
        code: String,
    },
    /// The clicks of a code.
    Clicks {
        /// The code.
        code: String,
    },
    /// The code permutation's key (meta group).
    CodeKey,
}

/// The shortener's query answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A link, if the code has one.
    Link(Option<UrlRec>),
    /// A link's clicks (none counted yet: empty).
    Clicks(ClickRec),
    /// The code permutation's key, if set.
    CodeKey(Option<Vec<u8>>),
}

/// See the module docs.
#[derive(Debug)]
pub struct Urls;

fn link_key(code: &str) -> Vec<u8> {
    format!("url/{code}").into_bytes()
}

fn clicks_key(code: &str) -> Vec<u8> {
    format!("clicks/{code}").into_bytes()
}

const CODE_KEY: &[u8] = b"code_key";

impl Service for Urls {
    const ID: ServiceId = 3;
    const NAME: &'static str = "urls";
    type Command = Command;
    type Reply = Reply;
    type Rejection = Rejection;
    type Query = Query;
    type Answer = Answer;

    fn apply(kv: &mut dyn Kv, command: Command) -> Result<Result<Reply, Rejection>, StoreError> {
        Ok(match command {
            Command::Create { code, link } => {
                let key = link_key(&code);
                if kv.get(&key)?.is_some() {
                    Err(Rejection::Exists)
                } else {
                    kv.put(&key, link.encode()?);
                    Ok(Reply::Done)
                }
            }
            Command::Replace { code, expected, link } => {
                let key = link_key(&code);
                if get::<UrlRec>(kv, &key)?.as_ref() == Some(&expected) {
                    kv.put(&key, link.encode()?);
                    Ok(Reply::Done)
                } else {
                    Err(Rejection::Changed)
                }
            }
            Command::AddClicks { code, days, referrers } => {
                let key = clicks_key(&code);
                let mut rec = get::<ClickRec>(kv, &key)?.unwrap_or_default();
                rec.add(&days, &referrers);
                kv.put(&key, rec.encode()?);
                Ok(Reply::Clicks(rec.total))
            }
            Command::SetCodeKey { key } => match kv.get(CODE_KEY)? {
                Some(existing) => Ok(Reply::CodeKey(existing)),
                None => {
                    kv.put(CODE_KEY, key.clone());
                    Ok(Reply::CodeKey(key))
                }
            },
        })
    }

    fn query(kv: &dyn KvRead, query: Query) -> Result<Answer, StoreError> {
        Ok(match query {
            Query::Link { code } => Answer::Link(get(kv, &link_key(&code))?),
            Query::Clicks { code } => Answer::Clicks(get(kv, &clicks_key(&code))?.unwrap_or_default()),
            Query::CodeKey => Answer::CodeKey(kv.get(CODE_KEY)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemKv;

    fn link(url: &str) -> UrlRec {
        UrlRec { url: url.into(), owner: "u1".into(), created_ms: 1, expires_ms: 10, deleted_ms: 0 }
    }

    #[test]
    fn create_is_create_if_absent() {
        let mut kv = MemKv::default();
        let create = |url: &str| Command::Create { code: "abc".into(), link: link(url) };
        assert_eq!(Urls::apply(&mut kv, create("https://a/")).expect("apply"), Ok(Reply::Done));
        assert_eq!(Urls::apply(&mut kv, create("https://b/")).expect("apply"), Err(Rejection::Exists));
        let got = Urls::query(&kv, Query::Link { code: "abc".into() }).expect("query");
        assert_eq!(got, Answer::Link(Some(link("https://a/"))));
        assert_eq!(Urls::query(&kv, Query::Link { code: "x".into() }).expect("query"), Answer::Link(None));
    }

    #[test]
    fn replace_is_compare_and_set() {
        let mut kv = MemKv::default();
        Urls::apply(&mut kv, Command::Create { code: "c".into(), link: link("https://a/") })
            .expect("apply")
            .expect("created");
        let deleted = UrlRec { deleted_ms: 5, ..link("https://a/") };
        let stale = Command::Replace { code: "c".into(), expected: link("https://other/"), link: deleted.clone() };
        assert_eq!(Urls::apply(&mut kv, stale).expect("apply"), Err(Rejection::Changed));
        let missing = Command::Replace { code: "none".into(), expected: link("https://a/"), link: deleted.clone() };
        assert_eq!(Urls::apply(&mut kv, missing).expect("apply"), Err(Rejection::Changed));
        let fresh = Command::Replace { code: "c".into(), expected: link("https://a/"), link: deleted.clone() };
        assert_eq!(Urls::apply(&mut kv, fresh).expect("apply"), Ok(Reply::Done));
        assert_eq!(Urls::query(&kv, Query::Link { code: "c".into() }).expect("query"), Answer::Link(Some(deleted)));
    }

    #[test]
    fn clicks_accumulate_and_the_first_code_key_wins() {
        let mut kv = MemKv::default();
        let add =
            |n| Command::AddClicks { code: "c".into(), days: vec![(100, n)], referrers: vec![("a.com".into(), n)] };
        assert_eq!(Urls::apply(&mut kv, add(2)).expect("apply"), Ok(Reply::Clicks(2)));
        assert_eq!(Urls::apply(&mut kv, add(3)).expect("apply"), Ok(Reply::Clicks(5)));
        let Answer::Clicks(c) = Urls::query(&kv, Query::Clicks { code: "c".into() }).expect("query") else {
            panic!("not clicks")
        };
        assert_eq!((c.total, c.days.clone(), c.referrers.clone()), (5, vec![(100, 5)], vec![("a.com".into(), 5)]));
        assert_eq!(Urls::query(&kv, Query::CodeKey).expect("query"), Answer::CodeKey(None));
        let set = |k: u8| Command::SetCodeKey { key: vec![k; 32] };
        assert_eq!(Urls::apply(&mut kv, set(1)).expect("apply"), Ok(Reply::CodeKey(vec![1; 32])));
        assert_eq!(Urls::apply(&mut kv, set(2)).expect("apply"), Ok(Reply::CodeKey(vec![1; 32])));
    }

    #[test]
    fn clicks_merge_keep_recent_days_and_top_referrers() {
        let mut c = ClickRec::default();
        c.add(&[(100, 2), (101, 3)], &[("a.com".into(), 4), ("b.com".into(), 1)]);
        c.add(&[(101, 1), (170, 1)], &[("b.com".into(), 5)]);
        assert_eq!(c.total, 7);
        // Day 100 and 101 fell out of the 60 days ending at day 170.
        assert_eq!(c.days, vec![(170, 1)]);
        assert_eq!(c.referrers, vec![("b.com".to_string(), 6), ("a.com".to_string(), 4)]);
        let many: Vec<(String, u64)> = (0..150).map(|i| (format!("h{i:03}"), 1)).collect();
        c.add(&[], &many);
        assert_eq!(c.referrers.len(), CLICK_REFERRERS_KEPT);
        assert_eq!(c.referrers[0].0, "b.com");
    }
}
