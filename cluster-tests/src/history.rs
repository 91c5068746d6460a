//! Operation histories of a counter and a checker for them.
//!
//! Clients record every increment (by 1) and read with its start and end time and outcome. The
//! checker verifies what linearizability means for such a counter: acknowledged increments
//! return distinct values that respect real-time order, reads never go back in time, every
//! acknowledged increment is reflected in the final value, and none was applied twice (the final
//! value never exceeds the increments that may have been applied).

use std::time::Instant;

/// What a client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Increment by 1.
    Increment,
    /// Read.
    Read,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged with this value.
    Ok(u64),
    /// Sent, but no answer or an error: it may or may not have been applied.
    Unknown,
}

/// One operation.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// Increment or read.
    pub kind: Kind,
    /// When the request was sent.
    pub start: Instant,
    /// When the answer (or failure) arrived.
    pub end: Instant,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Checks a history of one counter that started at 0 and was only incremented by 1.
pub fn check_counter(ops: &[Op], final_value: u64) -> Result<(), String> {
    let acked: Vec<(&Op, u64)> = ops
        .iter()
        .filter(|o| o.kind == Kind::Increment)
        .filter_map(|o| match o.outcome {
            Outcome::Ok(v) => Some((o, v)),
            Outcome::Unknown => None,
        })
        .collect();
    let unknown = ops.iter().filter(|o| o.kind == Kind::Increment && o.outcome == Outcome::Unknown).count() as u64;
    let mut values: Vec<u64> = acked.iter().map(|(_, v)| *v).collect();
    values.sort_unstable();
    if let Some(w) = values.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("two acknowledged increments returned the same value {}", w[0]));
    }
    let acked_count = acked.len() as u64;
    if final_value < acked_count {
        return Err(format!(
            "final value {final_value} is below the {acked_count} acknowledged increments: some were lost"
        ));
    }
    if final_value > acked_count + unknown {
        return Err(format!(
            "final value {final_value} exceeds {acked_count} acknowledged + {unknown} unknown increments: applied twice"
        ));
    }
    if let Some(max) = values.last().filter(|m| **m > final_value) {
        return Err(format!("an increment returned {max}, above the final value {final_value}"));
    }
    // Real time: an increment that finished before another started has the smaller value.
    for (a, va) in &acked {
        for (b, vb) in &acked {
            if a.end < b.start && va >= vb {
                return Err(format!("increment answered {va} finished before one answered {vb} started"));
            }
        }
    }
    // Reads see every increment acknowledged before they started, and none that started after
    // they ended.
    for r in ops.iter().filter(|o| o.kind == Kind::Read) {
        let Outcome::Ok(rv) = r.outcome else { continue };
        if rv > final_value {
            return Err(format!("a read returned {rv}, above the final value {final_value}"));
        }
        for (i, iv) in &acked {
            if i.end < r.start && rv < *iv {
                return Err(format!("a read returned {rv} after an increment to {iv} was acknowledged"));
            }
            if r.end < i.start && rv >= *iv {
                return Err(format!("a read returned {rv} before the increment to {iv} started"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn op(kind: Kind, s: u64, e: u64, outcome: Outcome) -> Op {
        let t0 = Instant::now();
        Op { kind, start: t0 + Duration::from_millis(s), end: t0 + Duration::from_millis(e), outcome }
    }

    #[test]
    fn accepts_a_linearizable_history() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let ops = vec![
            Op { kind: Kind::Increment, start: at(0), end: at(10), outcome: Outcome::Ok(1) },
            Op { kind: Kind::Increment, start: at(5), end: at(20), outcome: Outcome::Ok(3) },
            Op { kind: Kind::Increment, start: at(6), end: at(30), outcome: Outcome::Unknown },
            Op { kind: Kind::Read, start: at(11), end: at(12), outcome: Outcome::Ok(1) },
            Op { kind: Kind::Read, start: at(31), end: at(32), outcome: Outcome::Ok(3) },
        ];
        assert_eq!(check_counter(&ops, 3), Ok(()));
    }

    #[test]
    fn finds_lost_duplicated_and_stale_results() {
        let lost = vec![op(Kind::Increment, 0, 1, Outcome::Ok(1)), op(Kind::Increment, 2, 3, Outcome::Ok(2))];
        assert!(check_counter(&lost, 1).is_err(), "an acknowledged increment is missing");
        let twice = vec![op(Kind::Increment, 0, 1, Outcome::Ok(1))];
        assert!(check_counter(&twice, 2).is_err(), "applied twice");
        let same = vec![op(Kind::Increment, 0, 1, Outcome::Ok(1)), op(Kind::Increment, 0, 1, Outcome::Ok(1))];
        assert!(check_counter(&same, 2).is_err(), "duplicate values");
        let order = vec![op(Kind::Increment, 0, 1, Outcome::Ok(2)), op(Kind::Increment, 2, 3, Outcome::Ok(1))];
        assert!(check_counter(&order, 2).is_err(), "real-time order");
        let stale = vec![op(Kind::Increment, 0, 1, Outcome::Ok(1)), op(Kind::Read, 2, 3, Outcome::Ok(0))];
        assert!(check_counter(&stale, 1).is_err(), "stale read");
    }
}
