//! Card-data refusal: Shoal never takes a card number. Any string (or number) anywhere in a
//! request body that holds a Luhn-valid run of 13 to 19 digits, written together or with single
//! spaces or dashes between groups, is refused before anything is logged or stored.
//!
//! A run is a maximal stretch of digits joined by single separators; a run of more than 19
//! digits is not a card number (order numbers, timestamps), so it is not split into windows.

use serde_json::Value;

/// Whether `value` holds a card number anywhere (keys included).
pub fn contains_card_number(value: &Value) -> bool {
    match value {
        Value::String(s) => text_has_card(s),
        Value::Number(n) => text_has_card(&n.to_string()),
        Value::Array(items) => items.iter().any(contains_card_number),
        Value::Object(map) => map.iter().any(|(k, v)| text_has_card(k) || contains_card_number(v)),
        Value::Bool(_) | Value::Null => false,
    }
}

/// Whether `s` holds a Luhn-valid run of 13 to 19 digits.
pub fn text_has_card(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut digits: Vec<u8> = Vec::with_capacity(19);
        let mut j = i;
        loop {
            if j < bytes.len() && bytes[j].is_ascii_digit() {
                digits.push(bytes[j] - b'0');
                j += 1;
            } else if j + 1 < bytes.len() && matches!(bytes[j], b' ' | b'-') && bytes[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) && luhn(&digits) {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

/// The Luhn check over `digits` (most significant first).
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(n, &d)| {
            let d = u32::from(d);
            if n % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_card_numbers_are_found_plain_spaced_or_dashed() {
        for s in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "card: 5555 5555 5555 4444, thanks",
            "378282246310005",
            "6011111111111117",
            "4000056655665556",
        ] {
            assert!(text_has_card(s), "{s}");
        }
    }

    #[test]
    fn other_numbers_are_not_card_numbers() {
        for s in [
            "4242424242424241",        // Luhn fails
            "424242424242",            // 12 digits
            "42424242424242424242424", // 23 digits: not a card
            "order 2024-06-01 12345",
            "4242  4242 4242 4242", // a double space splits the run into short ones
            "pm_card_visa",
        ] {
            assert!(!text_has_card(s), "{s}");
        }
    }

    #[test]
    fn anywhere_in_a_json_body() {
        let nested = serde_json::json!({"amount": 5, "metadata": {"note": ["x", "4242 4242 4242 4242"]}});
        assert!(contains_card_number(&nested));
        assert!(contains_card_number(&serde_json::json!({"amount": 4242424242424242u64})));
        assert!(contains_card_number(&serde_json::json!({"metadata": {"4242424242424242": "k"}})));
        assert!(!contains_card_number(&serde_json::json!({"amount": 500, "payment_method": "pm_card_visa"})));
    }
}
