use super::*;

fn pay(token: &str, amount: u64) -> CreateIntent {
    CreateIntent {
        amount,
        currency: "usd".into(),
        payment_method: token.into(),
        description: None,
        metadata: BTreeMap::from([("shoal_id".to_owned(), format!("pay_{token}_{amount}"))]),
    }
}

fn ledger() -> Ledger {
    Ledger::new("t", Faults::default())
}

#[test]
fn visa_succeeds_with_one_charge_and_an_event() {
    let mut l = ledger();
    let (answer, event) = l.create_intent(pay("pm_card_visa", 500), 10).expect("create");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["status"], "succeeded");
    assert_eq!(answer.body["amount_received"], 500);
    assert_eq!(event.expect("event").kind, "payment_intent.succeeded");
    let (charges, more) = l.charges(10, None, None).expect("list");
    assert!(!more);
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].status, "succeeded");
    assert_eq!(charges[0].payment_intent, answer.body["id"]);
}

#[test]
fn declines_are_402_card_errors_with_a_failed_charge() {
    let mut l = ledger();
    let (answer, event) = l.create_intent(pay("pm_card_chargeDeclined", 500), 10).expect("create");
    assert_eq!(answer.status, 402);
    assert_eq!(answer.body["error"]["type"], "card_error");
    assert_eq!(answer.body["error"]["code"], "card_declined");
    assert_eq!(answer.body["error"]["decline_code"], "generic_decline");
    assert_eq!(answer.body["error"]["payment_intent"]["status"], "requires_payment_method");
    assert_eq!(event.expect("event").kind, "payment_intent.payment_failed");
    let (answer, _) = l.create_intent(pay("pm_card_chargeDeclinedInsufficientFunds", 5), 10).expect("create");
    assert_eq!(answer.body["error"]["decline_code"], "insufficient_funds");
    let (charges, _) = l.charges(10, None, None).expect("list");
    assert!(charges.iter().all(|c| c.status == "failed" && !c.paid));
}

#[test]
fn authentication_required_charges_nothing() {
    let mut l = ledger();
    let (answer, event) = l.create_intent(pay("pm_card_authenticationRequired", 500), 10).expect("create");
    assert_eq!(answer.body["status"], "requires_action");
    assert!(event.is_none());
    assert!(l.charges(10, None, None).expect("list").0.is_empty());
}

#[test]
fn unknown_tokens_are_refused_without_a_charge() {
    let mut l = ledger();
    let e = l.create_intent(pay("pm_card_nope", 500), 10).expect_err("unknown");
    assert_eq!((e.status, e.error.code), (400, Some("resource_missing")));
    assert!(l.charges(10, None, None).expect("list").0.is_empty());
}

#[test]
fn idempotency_replays_conflicts_and_in_flight() {
    let mut l = ledger();
    assert_eq!(l.begin(Some("k"), "a"), Ok(Begin::Run));
    let e = l.begin(Some("k"), "a").expect_err("in flight");
    assert_eq!((e.status, e.error.code), (409, Some("idempotency_key_in_use")));
    let answer = Stored { status: 200, body: serde_json::json!({"id": "pi_1"}) };
    l.finish(Some("k"), &answer);
    assert_eq!(l.begin(Some("k"), "a"), Ok(Begin::Replay(answer)));
    let e = l.begin(Some("k"), "b").expect_err("other params");
    assert_eq!((e.status, e.error.kind), (400, "idempotency_error"));
    // An abandoned key (a fault before any work) is free again.
    assert_eq!(l.begin(Some("j"), "a"), Ok(Begin::Run));
    l.abandon(Some("j"));
    assert_eq!(l.begin(Some("j"), "b"), Ok(Begin::Run));
    assert_eq!(l.begin(None, "a"), Ok(Begin::Run));
}

#[test]
fn refunds_partial_several_and_never_beyond_the_charge() {
    let mut l = ledger();
    let (answer, _) = l.create_intent(pay("pm_card_visa", 1_000), 10).expect("create");
    let pi = answer.body["id"].as_str().expect("id").to_owned();
    let refund = |amount| CreateRefund {
        target: RefundTarget::Intent(pi.clone()),
        amount,
        reason: None,
        metadata: BTreeMap::new(),
    };
    let (r, event) = l.create_refund(refund(Some(300)), 11).expect("first");
    assert_eq!(r.body["amount"], 300);
    let event = event.expect("event");
    assert_eq!(event.kind, "charge.refunded");
    assert_eq!(event.data["object"]["amount_refunded"], 300);
    assert_eq!(event.data["object"]["refunded"], false);
    assert_eq!(event.data["object"]["refunds"]["data"][0]["id"], r.body["id"]);
    let e = l.create_refund(refund(Some(701)), 12).expect_err("too much");
    assert_eq!((e.status, e.error.code), (400, Some("amount_too_large")));
    let (r, event) = l.create_refund(refund(None), 13).expect("the rest");
    assert_eq!(r.body["amount"], 700);
    assert_eq!(event.expect("event").data["object"]["refunded"], true);
    let e = l.create_refund(refund(Some(1)), 14).expect_err("nothing left");
    assert_eq!(e.error.code, Some("charge_already_refunded"));
}

#[test]
fn declined_payments_cannot_be_refunded() {
    let mut l = ledger();
    let (answer, _) = l.create_intent(pay("pm_card_chargeDeclined", 1_000), 10).expect("create");
    let pi = answer.body["error"]["payment_intent"]["id"].as_str().expect("id").to_owned();
    let req = CreateRefund { target: RefundTarget::Intent(pi), amount: None, reason: None, metadata: BTreeMap::new() };
    assert_eq!(l.create_refund(req, 11).expect_err("declined").error.code, Some("charge_not_refundable"));
}

#[test]
fn charges_page_newest_first_with_a_cursor_and_a_filter() {
    let mut l = ledger();
    let ids: Vec<String> = (1..=5)
        .map(|n| {
            let (a, _) = l.create_intent(pay("pm_card_visa", n), n).expect("create");
            a.body["latest_charge"].as_str().expect("charge").to_owned()
        })
        .collect();
    let (page, more) = l.charges(2, None, None).expect("page 1");
    assert_eq!(page.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [&ids[4], &ids[3]]);
    assert!(more);
    let (page, more) = l.charges(2, Some(&ids[3]), None).expect("page 2");
    assert_eq!(page.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [&ids[2], &ids[1]]);
    assert!(more);
    let (page, more) = l.charges(2, Some(&ids[1]), None).expect("page 3");
    assert_eq!(page.len(), 1);
    assert!(!more);
    let pi = page[0].payment_intent.clone();
    assert_eq!(l.charges(10, None, Some(&pi)).expect("filter").0.len(), 1);
    assert_eq!(l.charges(10, Some("ch_nope"), None).expect_err("cursor").status, 404);
}

#[test]
fn refunds_list_newest_first_filtered_by_intent_with_a_cursor() {
    let mut l = ledger();
    let mut intents = Vec::new();
    for n in 1..=2 {
        let (answer, _) = l.create_intent(pay("pm_card_visa", 1_000 + n), n).expect("create");
        intents.push(answer.body["id"].as_str().expect("id").to_owned());
    }
    let mut ids = Vec::new();
    for (n, pi) in [&intents[0], &intents[1], &intents[0], &intents[0]].into_iter().enumerate() {
        let req = CreateRefund {
            target: RefundTarget::Intent(pi.clone()),
            amount: Some(10),
            reason: None,
            metadata: BTreeMap::from([("shoal_refund_id".to_owned(), format!("re_{n}"))]),
        };
        let (answer, _) = l.create_refund(req, 20).expect("refund");
        ids.push(answer.body["id"].as_str().expect("id").to_owned());
    }
    let (page, more) = l.refunds(2, None, Some(&intents[0]), None).expect("page 1");
    assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [&ids[3], &ids[2]]);
    assert!(more);
    let (page, more) = l.refunds(2, Some(&ids[2]), Some(&intents[0]), None).expect("page 2");
    assert_eq!(page.iter().map(|r| r.metadata["shoal_refund_id"].as_str()).collect::<Vec<_>>(), ["re_0"]);
    assert!(!more);
    assert_eq!(l.refunds(10, None, None, None).expect("all").0.len(), 4);
    assert_eq!(l.refunds(10, None, Some("pi_none"), None).expect("none").0.len(), 0);
    assert_eq!(l.refunds(10, Some("re_nope"), None, None).expect_err("cursor").status, 404);
}

#[test]
fn search_finds_intents_by_metadata() {
    let mut l = ledger();
    l.create_intent(pay("pm_card_visa", 7), 1).expect("create");
    assert_eq!(l.search_intents("shoal_id", "pay_pm_card_visa_7").len(), 1);
    assert!(l.search_intents("shoal_id", "pay_other").is_empty());
}

#[test]
fn fault_counters_count_down_to_zero() {
    let mut n = 2;
    assert!(take(&mut n));
    assert!(take(&mut n));
    assert!(!take(&mut n));
    assert_eq!(n, 0);
}
