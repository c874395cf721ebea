//! `POST /v1/messages/batch` bodies. An accepted batch holds 1..=limit messages that
//! each keep the field rules and are what the single-message parser makes of each
//! element; a refused element is the first one the single parser refuses, and the 400
//! names its index; an accepted batch written back parses to the same messages.

#![no_main]

use chat_analytics::ingest::{parse_batch, parse_single};
use chat_analytics_fuzz::{assert_field_rules, assert_storage_precision};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Small, so the fuzzer reaches the limit easily.
const MAX_MESSAGES: usize = 8;

fuzz_target!(|body: &[u8]| {
    let parsed = parse_batch(body, MAX_MESSAGES);
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        let refusal = parsed.expect_err("accepted a body that is not a JSON array");
        assert_eq!(refusal.status, 400);
        assert!(refusal.index.is_none(), "{refusal:?}");
        return;
    };
    let singles: Vec<_> = items
        .iter()
        .map(|item| {
            let json = serde_json::to_vec(item).expect("a JSON value serialises");
            parse_single(&json)
        })
        .collect();
    let messages = match parsed {
        Ok(messages) => messages,
        Err(refusal) => {
            assert_eq!(refusal.status, 400);
            match refusal.index {
                Some(index) => {
                    assert!((1..=MAX_MESSAGES).contains(&items.len()));
                    let first_bad = singles.iter().position(Result::is_err);
                    assert_eq!(first_bad, Some(index), "{refusal:?}");
                    let alone = singles[index].as_ref().expect_err("refused alone too");
                    assert_eq!(alone.code, refusal.code);
                    let field = refusal
                        .field
                        .as_deref()
                        .expect("an indexed refusal names a field");
                    assert!(field.starts_with(&format!("[{index}]")), "{field}");
                }
                None => assert!(
                    items.is_empty() || items.len() > MAX_MESSAGES,
                    "{} messages refused as a whole: {refusal:?}",
                    items.len()
                ),
            }
            return;
        }
    };
    assert!((1..=MAX_MESSAGES).contains(&messages.len()));
    assert_eq!(messages.len(), items.len());
    for (message, single) in messages.iter().zip(singles) {
        assert_field_rules(message);
        assert_storage_precision(message.sent_at);
        let mut single = single.expect("an element of an accepted batch is accepted alone");
        // A message without an id is given a fresh one by each parse.
        single.message_id = message.message_id;
        assert_eq!(&single, message);
    }

    let written = serde_json::to_vec(&messages).expect("messages serialise");
    let reparsed = parse_batch(&written, MAX_MESSAGES)
        .unwrap_or_else(|e| panic!("an accepted batch written back is refused: {e:?}"));
    assert_eq!(reparsed, messages);
});
