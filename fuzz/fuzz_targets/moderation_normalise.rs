//! Moderation's text normalisation, and the matcher over the shipped word lists.
//!
//! What the normaliser guarantees for any text: single spaces between words and none
//! at the ends; only letters, digits and the symbols that stand for letters or hide one
//! (`@ $ ! | + * # % € ¢ © ® ¡`) in the words; no uppercase ASCII; a run of one ASCII
//! letter written at most twice. It is not idempotent (`b2b` gives `b 2 b`, which gives
//! `b2b`: spelled-out letters are joined), so that is not asserted.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use chat_analytics::moderation::{normalise, Moderator};
use libfuzzer_sys::fuzz_target;

static MODERATOR: LazyLock<Moderator> = LazyLock::new(|| {
    let lists = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/moderation");
    Moderator::from_dir(&lists).expect("the shipped word lists load")
});

const SYMBOLS_IN_WORDS: &str = "@$!|+*#%€¢©®¡";

fuzz_target!(|text: &str| {
    let normal = normalise(text);
    assert!(
        !normal.starts_with(' ') && !normal.ends_with(' ') && !normal.contains("  "),
        "{normal:?}"
    );
    for c in normal.chars() {
        assert!(
            c == ' ' || c.is_alphanumeric() || SYMBOLS_IN_WORDS.contains(c),
            "{c:?} in {normal:?}"
        );
        assert!(!c.is_ascii_uppercase(), "{normal:?}");
    }
    for run in normal.as_bytes().windows(3) {
        assert!(
            !(run[0].is_ascii_alphabetic() && run[0] == run[1] && run[1] == run[2]),
            "a run of {:?} is not squeezed in {normal:?}",
            run[0] as char
        );
    }
    assert_eq!(normalise(text), normal, "not deterministic");

    let verdict = MODERATOR.check(text);
    assert_eq!(verdict.flagged, !verdict.terms.is_empty());
    for (i, term) in verdict.terms.iter().enumerate() {
        assert!(!verdict.terms[..i].contains(term), "{term:?} listed twice");
    }
});
