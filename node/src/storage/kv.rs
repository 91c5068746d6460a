//! What a service's state machine sees of storage: the keys of one service in one partition.
//!
//! Storage knows services only by their numeric [`ServiceId`] and hands their commands and
//! queries, as bytes, to a [`Dispatch`] given at open time (the service registry). The service
//! decodes them and works on a [`Kv`] scoped to `(group, service)`: its writes land in the apply
//! overlay, its reads see the overlay over the database. [`MemKv`] is the same interface in
//! memory, for unit tests of a service without Raft or disk.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::StoreError;

/// A service's stable id: part of every service command in the log and every service row on
/// disk, so it never changes once assigned.
pub type ServiceId = u16;

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Read access to one service's keys in one partition.
pub trait KvRead {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries whose key starts with `prefix` and sorts after `after` (when
    /// given), in key order.
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Entries, StoreError>;
}

/// Read and write access to one service's keys in one partition (what `apply` gets).
pub trait Kv: KvRead {
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: Vec<u8>);
    /// Removes `key` (absent keys are fine).
    fn delete(&mut self, key: &[u8]);
}

/// What a [`Dispatch`] made of a service command or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The service's encoded answer.
    Done(Vec<u8>),
    /// No service has this id in this build (e.g. a newer node proposed it).
    UnknownService,
    /// The payload does not decode as the service's command or query.
    BadPayload,
}

/// The service registry as storage sees it. Must be deterministic: every replica applies the
/// same commands to the same state and must reach the same state and answers.
pub trait Dispatch: Send + Sync + 'static {
    /// Applies one encoded command of `service` to `kv`.
    fn apply(&self, service: ServiceId, kv: &mut dyn Kv, command: &[u8]) -> Result<Handled, StoreError>;
    /// Answers one encoded query of `service` from `kv`.
    fn query(&self, service: ServiceId, kv: &dyn KvRead, query: &[u8]) -> Result<Handled, StoreError>;
}

/// The range of keys after `after` (or from `prefix`) that may start with `prefix`.
pub(crate) fn scan_start<'a>(prefix: &'a [u8], after: Option<&'a [u8]>) -> Bound<&'a [u8]> {
    match after {
        Some(a) if a >= prefix => Bound::Excluded(a),
        _ => Bound::Included(prefix),
    }
}

/// Merges newer rows (`Some`: set, `None`: deleted) over older ones, both in key order, keeping
/// keys with `prefix` only, up to `limit` live entries.
pub(crate) fn merge_scan(
    newer: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    older: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
    prefix: &[u8],
    limit: usize,
) -> Result<Entries, StoreError> {
    let mut out = Vec::new();
    let mut newer = newer.into_iter().peekable();
    let mut older = older.peekable();
    while out.len() < limit {
        let take_newer = match (newer.peek(), older.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((nk, _)), Some(Ok((ok, _)))) => nk <= ok,
            (Some(_), Some(Err(_))) => false,
        };
        let (key, value) = if take_newer {
            let (key, value) = newer.next().unwrap_or_default();
            // A newer row hides the older one under the same key.
            if older.peek().is_some_and(|o| o.as_ref().is_ok_and(|(ok, _)| *ok == key)) {
                older.next();
            }
            (key, value)
        } else {
            match older.next() {
                Some(Ok((k, v))) => (k, Some(v)),
                Some(Err(e)) => return Err(e),
                None => break,
            }
        };
        if !key.starts_with(prefix) {
            break;
        }
        if let Some(value) = value {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// One service's keys in memory: the [`Kv`] of unit tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl KvRead for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Entries, StoreError> {
        Ok(self
            .0
            .range::<[u8], _>((scan_start(prefix, after), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl Kv for MemKv {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.0.insert(key.to_vec(), value);
    }

    fn delete(&mut self, key: &[u8]) {
        self.0.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(keys: &[&str]) -> MemKv {
        MemKv(keys.iter().map(|k| (k.as_bytes().to_vec(), k.as_bytes().to_vec())).collect())
    }

    fn keys(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
        rows.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect()
    }

    #[test]
    fn scan_keeps_the_prefix_resumes_after_a_key_and_stops_at_the_limit() {
        let m = kv(&["a/1", "a/2", "a/3", "b/1", "a"]);
        assert_eq!(keys(&m.scan(b"a/", None, 10).expect("scan")), ["a/1", "a/2", "a/3"]);
        assert_eq!(keys(&m.scan(b"a/", Some(b"a/1"), 10).expect("scan")), ["a/2", "a/3"]);
        assert_eq!(keys(&m.scan(b"a/", None, 2).expect("scan")), ["a/1", "a/2"]);
        assert_eq!(keys(&m.scan(b"c/", None, 2).expect("scan")), Vec::<String>::new());
        // An `after` before the prefix starts at the prefix.
        assert_eq!(keys(&m.scan(b"b/", Some(b"a/9"), 10).expect("scan")), ["b/1"]);
    }

    #[test]
    fn merged_scan_prefers_newer_rows_and_hides_deleted_ones() {
        let older = || ["a/1", "a/2", "a/4", "b/1"].map(|k| Ok((k.as_bytes().to_vec(), b"old".to_vec())));
        let newer: BTreeMap<Vec<u8>, Option<Vec<u8>>> = [
            (b"a/2".to_vec(), None),
            (b"a/3".to_vec(), Some(b"new".to_vec())),
            (b"a/4".to_vec(), Some(b"new".to_vec())),
        ]
        .into_iter()
        .collect();
        let rows = merge_scan(newer.clone(), older().into_iter(), b"a/", 10).expect("merge");
        assert_eq!(keys(&rows), ["a/1", "a/3", "a/4"]);
        assert_eq!(rows[2].1, b"new");
        let rows = merge_scan(newer, older().into_iter(), b"a/", 2).expect("merge");
        assert_eq!(keys(&rows), ["a/1", "a/3"]);
    }
}
