//! Dead-letter files, as `dlq stats` and `dlq replay` read them. Every non-blank line is
//! accounted for once, as a dead letter or as a bad line with its line number; a dead
//! letter read back round-trips through its JSON form; the stats add up.

#![no_main]

use std::path::Path;

use chat_analytics::deadletter::{read_dead_letter_lines, DeadLetter, DeadLetterStats};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|content: &[u8]| {
    let path = Path::new("dead-letters-2026-11-23.jsonl");
    let file = read_dead_letter_lines(content, path).expect("reading from memory cannot fail");

    let lines: Vec<&[u8]> = content.split_inclusive(|&b| b == b'\n').collect();
    let non_blank = lines.iter().filter(|l| !l.trim_ascii().is_empty()).count();
    assert_eq!(file.letters.len() + file.bad_lines.len(), non_blank);
    let mut previous = 0;
    for bad in &file.bad_lines {
        assert!(bad.line > previous, "bad lines out of order");
        previous = bad.line;
        let line = lines
            .get(bad.line - 1)
            .expect("a bad line number is a line of the input");
        assert!(!line.trim_ascii().is_empty(), "a blank line reported bad");
        assert!(serde_json::from_slice::<DeadLetter>(line).is_err());
        assert_eq!(bad.file, path);
    }

    for letter in &file.letters {
        let json = serde_json::to_vec(letter).expect("a dead letter serialises");
        let again: DeadLetter = serde_json::from_slice(&json).expect("a written dead letter reads");
        assert_eq!(&again, letter);
        if let Some(message) = letter.chat_message() {
            chat_analytics_fuzz::assert_field_rules(&message);
        }
    }

    let stats = DeadLetterStats::of(&file);
    assert_eq!(stats.total, file.letters.len());
    assert_eq!(stats.unreadable_lines, file.bad_lines.len());
    assert!(stats.replayable <= stats.total);
    assert_eq!(stats.by_stage.values().sum::<usize>(), stats.total);
    assert!(stats.first_failed_at <= stats.last_failed_at);
});
