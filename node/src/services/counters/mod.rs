//! Counters: named `u64`s in their name's partition. `increment` is one Raft command (batched
//! with others by the proposer); reads are linearizable. Other services reserve blocks of
//! values (the shortener's codes) with [`Command::Reserve`].
//!
//! The smallest service, and the example in `docs/design.md` ("Adding a service").

pub mod http;

use rkyv::{Archive, Deserialize, Serialize};

use super::{Kv, KvRead, Service, ServiceId, StoreError};

/// Counters' commands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Adds `by` to counter `name` (absent counters are 0); answers the new value.
    Increment {
        /// Counter name.
        name: String,
        /// Amount, at least 1.
        by: u64,
    },
    /// Reserves `count` consecutive values of counter `name`; answers the first reserved value.
    Reserve {
        /// Counter name.
        name: String,
        /// How many values, at least 1.
        count: u64,
    },
}

/// Why a counter command changed nothing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The counter would pass `u64::MAX`.
    #[error("the counter would overflow")]
    Overflow,
    /// A reservation of zero values.
    #[error("a reservation needs at least one value")]
    Empty,
}

/// Counters' queries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The value of counter `name` (0 when absent).
    Get {
        /// Counter name.
        name: String,
    },
}

/// See the module docs.
#[derive(Debug)]
pub struct Counters;

fn value(kv: &dyn KvRead, name: &str) -> Result<u64, StoreError> {
    Ok(match kv.get(name.as_bytes())? {
        Some(bytes) => {
            u64::from_be_bytes(bytes.try_into().map_err(|_| StoreError::Db("counter row is not 8 bytes".into()))?)
        }
        None => 0,
    })
}

impl Service for Counters {
    const ID: ServiceId = 2;
    const NAME: &'static str = "counters";
    type Command = Command;
    type Reply = u64;
    type Rejection = Rejection;
    type Query = Query;
    type Answer = u64;

    fn apply(kv: &mut dyn Kv, command: Command) -> Result<Result<u64, Rejection>, StoreError> {
        let (name, by, answer_first) = match &command {
            Command::Increment { name, by } => (name, *by, false),
            Command::Reserve { count: 0, .. } => return Ok(Err(Rejection::Empty)),
            Command::Reserve { name, count } => (name, *count, true),
        };
        let current = value(kv, name)?;
        let Some(next) = current.checked_add(by) else { return Ok(Err(Rejection::Overflow)) };
        kv.put(name.as_bytes(), next.to_be_bytes().to_vec());
        Ok(Ok(if answer_first { current + 1 } else { next }))
    }

    fn query(kv: &dyn KvRead, query: Query) -> Result<u64, StoreError> {
        match query {
            Query::Get { name } => value(kv, &name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemKv;

    fn inc(name: &str, by: u64) -> Command {
        Command::Increment { name: name.into(), by }
    }

    #[test]
    fn increments_add_up_per_name() {
        let mut kv = MemKv::default();
        assert_eq!(Counters::apply(&mut kv, inc("a", 2)).expect("apply"), Ok(2));
        assert_eq!(Counters::apply(&mut kv, inc("a", 3)).expect("apply"), Ok(5));
        assert_eq!(Counters::apply(&mut kv, inc("b", 1)).expect("apply"), Ok(1));
        assert_eq!(Counters::query(&kv, Query::Get { name: "a".into() }).expect("query"), 5);
        assert_eq!(Counters::query(&kv, Query::Get { name: "none".into() }).expect("query"), 0);
    }

    #[test]
    fn reservations_hand_out_disjoint_blocks() {
        let mut kv = MemKv::default();
        let reserve = |count| Command::Reserve { name: "ids".into(), count };
        assert_eq!(Counters::apply(&mut kv, reserve(1000)).expect("apply"), Ok(1));
        assert_eq!(Counters::apply(&mut kv, reserve(1000)).expect("apply"), Ok(1001));
        assert_eq!(Counters::query(&kv, Query::Get { name: "ids".into() }).expect("query"), 2000);
        assert_eq!(Counters::apply(&mut kv, reserve(0)).expect("apply"), Err(Rejection::Empty));
    }

    #[test]
    fn overflow_is_refused_and_changes_nothing() {
        let mut kv = MemKv::default();
        Counters::apply(&mut kv, inc("a", u64::MAX - 1)).expect("apply").expect("fits");
        let before = kv.clone();
        assert_eq!(Counters::apply(&mut kv, inc("a", 2)).expect("apply"), Err(Rejection::Overflow));
        assert_eq!(kv, before);
        assert_eq!(Counters::apply(&mut kv, inc("a", 1)).expect("apply"), Ok(u64::MAX));
    }
}
