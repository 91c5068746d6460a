//! The payments state machine on an in-memory store, with made-up time.

use super::*;
use crate::storage::MemKv;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

fn idem(key: &str, fingerprint: &str, now: u64) -> Idem {
    Idem { owner: "u1".into(), key: key.into(), fingerprint: fingerprint.into(), now, lease_ms: 10_000, ttl_ms: DAY }
}

fn new_payment(id: &str, amount: u64) -> NewPayment {
    NewPayment {
        id: id.into(),
        amount,
        currency: "usd".into(),
        payment_method: "pm_card_visa".into(),
        description: None,
        metadata: Vec::new(),
    }
}

fn apply(kv: &mut MemKv, command: Command) -> Result<Reply, Rejection> {
    Payments::apply(kv, command).expect("store")
}

fn create(kv: &mut MemKv, key: &str, id: &str, amount: u64, now: u64) -> Result<Reply, Rejection> {
    apply(kv, Command::Create { idem: idem(key, "f", now), payment: new_payment(id, amount) })
}

fn resolve(kv: &mut MemKv, id: &str, refund: Option<&str>, outcome: Outcome, event: Option<&str>, now: u64) -> Reply {
    apply(
        kv,
        Command::Resolve {
            payment_id: id.into(),
            refund_id: refund.map(str::to_owned),
            outcome,
            source: Source::Reconciler,
            event: event.map(|e| (e.to_owned(), now + 3 * DAY)),
            now,
        },
    )
    .expect("resolve")
}

fn succeeded() -> Outcome {
    Outcome::Succeeded { gateway_ref: Some("pi_1".into()) }
}

fn payment(kv: &MemKv, id: &str) -> (PaymentRec, Vec<RefundRec>) {
    match Payments::query(kv, Query::Get { id: id.into() }).expect("query") {
        Answer::Payment(Some(p)) => p,
        other => panic!("no payment {id}: {other:?}"),
    }
}

fn pending_ids(kv: &MemKv) -> Vec<(String, Option<String>)> {
    match Payments::query(kv, Query::Pending { after: None, limit: 100 }).expect("query") {
        Answer::Pending { items, .. } => items.into_iter().map(|i| (i.payment.id, i.refund.map(|r| r.id))).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_create_records_a_pending_payment_and_lists_it_for_the_reconciler() {
    let mut kv = MemKv::default();
    let Ok(Reply::Created(p)) = create(&mut kv, "k1", "pay_1", 500, 1_000) else { panic!("not created") };
    assert_eq!((p.status, p.amount, p.owner.as_str()), (PayStatus::Pending, 500, "u1"));
    assert_eq!(pending_ids(&kv), [("pay_1".to_owned(), None)]);
}

#[test]
fn a_key_is_in_use_during_its_lease_then_answers_the_pending_payment_then_the_stored_answer() {
    let mut kv = MemKv::default();
    create(&mut kv, "k1", "pay_1", 500, 1_000).expect("created");
    assert_eq!(create(&mut kv, "k1", "pay_2", 500, 5_000), Err(Rejection::KeyInUse));
    match create(&mut kv, "k1", "pay_2", 500, 12_000) {
        Ok(Reply::Known(KnownKey::Pending { payment, refund: None })) => assert_eq!(payment.id, "pay_1"),
        other => panic!("{other:?}"),
    }
    resolve(&mut kv, "pay_1", None, succeeded(), None, 13_000);
    match create(&mut kv, "k1", "pay_3", 500, 14_000) {
        Ok(Reply::Known(KnownKey::Stored(answer))) => {
            assert_eq!(answer.status, 201);
            let body: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
            assert_eq!((body["id"].as_str(), body["status"].as_str()), (Some("pay_1"), Some("succeeded")));
        }
        other => panic!("{other:?}"),
    }
    assert!(pending_ids(&kv).is_empty());
    assert!(matches!(Payments::query(&kv, Query::Get { id: "pay_3".into() }), Ok(Answer::Payment(None))));
}

#[test]
fn other_parameters_under_a_key_are_refused_and_keys_are_per_caller() {
    let mut kv = MemKv::default();
    create(&mut kv, "k1", "pay_1", 500, 1_000).expect("created");
    let other = Command::Create { idem: idem("k1", "g", 20_000), payment: new_payment("pay_2", 600) };
    assert_eq!(apply(&mut kv, other), Err(Rejection::KeyReused));
    let mut someone_else = idem("k1", "g", 20_000);
    someone_else.owner = "u2".into();
    let fresh = Command::Create { idem: someone_else, payment: new_payment("pay_3", 600) };
    assert!(matches!(apply(&mut kv, fresh), Ok(Reply::Created(_))));
}

#[test]
fn keys_expire_after_their_ttl_and_are_pruned() {
    let mut kv = MemKv::default();
    create(&mut kv, "k1", "pay_1", 500, 1_000).expect("created");
    resolve(&mut kv, "pay_1", None, succeeded(), None, 2_000);
    assert!(matches!(create(&mut kv, "k1", "pay_2", 500, DAY), Ok(Reply::Known(_))), "kept for 24 h");
    assert!(matches!(create(&mut kv, "k1", "pay_2", 500, DAY + 1_000), Ok(Reply::Created(_))), "a new key after");
    // The old record's expiry entry was pruned; the new one stays.
    let expiries = kv.scan(b"x/", None, 10).expect("scan");
    assert_eq!(expiries.len(), 1);
}

#[test]
fn an_outcome_applies_once_whoever_reports_it_first() {
    let mut kv = MemKv::default();
    create(&mut kv, "k1", "pay_1", 500, 1_000).expect("created");
    let first = resolve(&mut kv, "pay_1", None, succeeded(), Some("evt_1"), 2_000);
    assert!(matches!(first, Reply::Resolved { .. }));
    // The reconciler, a replayed event and a contradicting late event all change nothing.
    let settled = resolve(&mut kv, "pay_1", None, succeeded(), None, 3_000);
    assert!(matches!(settled, Reply::Settled { payment: p, refund: None } if p.status == PayStatus::Succeeded));
    assert_eq!(resolve(&mut kv, "pay_1", None, succeeded(), Some("evt_1"), 3_000), Reply::Unchanged);
    let failed = Outcome::Failed { code: "card_declined".into(), message: "no".into(), gateway_ref: None };
    assert!(matches!(resolve(&mut kv, "pay_1", None, failed, Some("evt_2"), 3_000), Reply::Settled { .. }));
    assert_eq!(resolve(&mut kv, "pay_1", None, succeeded(), Some("evt_2"), 3_000), Reply::Unchanged);
    let (p, _) = payment(&kv, "pay_1");
    assert_eq!((p.status, p.events), (PayStatus::Succeeded, 2));
    match Payments::query(&kv, Query::Events { id: "pay_1".into() }).expect("events") {
        Answer::Events(Some(events)) => {
            let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds, ["payment.pending", "payment.succeeded"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_declined_payment_stores_402_with_the_failure() {
    let mut kv = MemKv::default();
    create(&mut kv, "k1", "pay_1", 500, 1_000).expect("created");
    let failed =
        Outcome::Failed { code: "card_declined".into(), message: "Your card was declined.".into(), gateway_ref: None };
    resolve(&mut kv, "pay_1", None, failed, None, 2_000);
    match create(&mut kv, "k1", "pay_9", 500, 20_000) {
        Ok(Reply::Known(KnownKey::Stored(answer))) => {
            assert_eq!(answer.status, 402);
            assert!(answer.body.contains("\"failure_code\":\"card_declined\""));
        }
        other => panic!("{other:?}"),
    }
}

fn refund(kv: &mut MemKv, key: &str, id: &str, amount: Option<u64>, now: u64) -> Result<Reply, Rejection> {
    apply(
        kv,
        Command::Refund {
            idem: idem(key, &format!("r{amount:?}"), now),
            payment_id: "pay_1".into(),
            refund_id: id.into(),
            amount,
            reason: None,
        },
    )
}

#[test]
fn refunds_reserve_their_amount_so_concurrent_ones_never_exceed_the_charge() {
    let mut kv = MemKv::default();
    create(&mut kv, "k1", "pay_1", 1_000, 1_000).expect("created");
    assert_eq!(
        refund(&mut kv, "r0", "re_0", Some(100), 1_500),
        Err(Rejection::NotRefundable { status: "pending".into() })
    );
    resolve(&mut kv, "pay_1", None, succeeded(), None, 2_000);
    assert!(matches!(refund(&mut kv, "r1", "re_1", Some(600), 3_000), Ok(Reply::RefundCreated { .. })));
    // Both pending at the gateway: the second may take only what the first left.
    assert_eq!(refund(&mut kv, "r2", "re_2", Some(401), 3_000), Err(Rejection::RefundExceeds { available: 400 }));
    assert!(matches!(refund(&mut kv, "r3", "re_3", None, 3_000), Ok(Reply::RefundCreated { .. })));
    assert_eq!(pending_ids(&kv).len(), 2);
    // One fails: its amount is free again.
    let failed = Outcome::Failed { code: "refund_failed".into(), message: "no".into(), gateway_ref: None };
    resolve(&mut kv, "pay_1", Some("re_3"), failed, None, 4_000);
    resolve(&mut kv, "pay_1", Some("re_1"), succeeded(), None, 4_000);
    let settled = resolve(&mut kv, "pay_1", Some("re_1"), succeeded(), None, 4_500);
    assert!(matches!(settled, Reply::Settled { refund: Some(r), .. } if r.status == RefundStatus::Succeeded));
    let (p, refunds) = payment(&kv, "pay_1");
    assert_eq!((p.amount_refunded, p.refund_reserved, refunds.len()), (600, 0, 2));
    assert_eq!(refund(&mut kv, "r4", "re_4", Some(401), 5_000), Err(Rejection::RefundExceeds { available: 400 }));
    assert!(matches!(refund(&mut kv, "r5", "re_5", Some(400), 5_000), Ok(Reply::RefundCreated { .. })));
    resolve(&mut kv, "pay_1", Some("re_5"), succeeded(), None, 6_000);
    assert_eq!(payment(&kv, "pay_1").0.amount_refunded, 1_000);
    assert_eq!(refund(&mut kv, "r6", "re_6", None, 7_000), Err(Rejection::RefundExceeds { available: 0 }));
}

#[test]
fn only_the_owner_refunds() {
    let mut kv = MemKv::default();
    create(&mut kv, "k1", "pay_1", 1_000, 1_000).expect("created");
    resolve(&mut kv, "pay_1", None, succeeded(), None, 2_000);
    let mut stranger = idem("r1", "f", 3_000);
    stranger.owner = "u2".into();
    let command = Command::Refund {
        idem: stranger,
        payment_id: "pay_1".into(),
        refund_id: "re_1".into(),
        amount: None,
        reason: None,
    };
    assert_eq!(apply(&mut kv, command), Err(Rejection::NoPayment));
}

#[test]
fn history_pages_newest_first_with_a_cursor() {
    let mut kv = MemKv::default();
    for n in 1..=5u64 {
        create(&mut kv, &format!("k{n}"), &format!("pay_{n}"), n, n * 1_000).expect("created");
    }
    let page = |after: Option<&str>| match Payments::query(
        &kv,
        Query::List { owner: "u1".into(), after: after.map(str::to_owned), limit: 2 },
    )
    .expect("list")
    {
        Answer::Page { payments, has_more } => (payments.into_iter().map(|p| p.id).collect::<Vec<_>>(), has_more),
        other => panic!("{other:?}"),
    };
    assert_eq!(page(None), (vec!["pay_5".to_owned(), "pay_4".to_owned()], true));
    assert_eq!(page(Some("pay_4")), (vec!["pay_3".to_owned(), "pay_2".to_owned()], true));
    assert_eq!(page(Some("pay_2")), (vec!["pay_1".to_owned()], false));
}
