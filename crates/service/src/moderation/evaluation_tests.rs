//! Measures the shipped word lists against a labelled set of evasions.
//!
//! `tests/data/moderation_evasions.tsv` holds `label<TAB>text` rows, `abusive`
//! or `clean`: disguised abuse and spam on one side, Scunthorpe-style words
//! and ordinary chat on the other, including hard cases a keyword matcher is
//! expected to miss. The test prints recall and false-positive rate (run with
//! `--nocapture` to see them and every miss) and fails if the lists or the
//! normaliser regress below the agreed floor.

use std::fs;
use std::path::{Path, PathBuf};

use super::{normalise, Moderator};

/// Share of abusive rows that must be flagged.
const MIN_RECALL: f64 = 0.90;
/// Share of clean rows that may be flagged.
const MAX_FALSE_POSITIVE_RATE: f64 = 0.05;

fn project_path(relative: &str) -> PathBuf {
    // This crate sits two levels below the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Abusive,
    Clean,
}

fn load_evasions() -> Vec<(Label, String)> {
    let path = project_path("tests/data/moderation_evasions.tsv");
    let contents =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = contents.lines();
    assert_eq!(lines.next(), Some("label\ttext"), "header line");
    lines
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let (label, text) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("line {}: no tab", i + 2));
            let label = match label {
                "abusive" => Label::Abusive,
                "clean" => Label::Clean,
                other => panic!("line {}: unknown label {other:?}", i + 2),
            };
            (label, text.to_owned())
        })
        .collect()
}

fn default_moderator() -> Moderator {
    Moderator::from_dir(&project_path("config/moderation")).expect("default word lists load")
}

#[test]
fn default_lists_catch_evasions_without_flagging_clean_chat() {
    let moderator = default_moderator();
    let rows = load_evasions();
    let (mut abusive, mut caught, mut clean, mut false_positives) = (0, 0, 0, 0);
    let mut misses = Vec::new();
    let mut wrongly_flagged = Vec::new();
    for (label, text) in &rows {
        let verdict = moderator.check(text);
        match label {
            Label::Abusive => {
                abusive += 1;
                if verdict.flagged {
                    caught += 1;
                } else {
                    misses.push(text.as_str());
                }
            }
            Label::Clean => {
                clean += 1;
                if verdict.flagged {
                    false_positives += 1;
                    wrongly_flagged.push((text.as_str(), verdict.terms));
                }
            }
        }
    }
    let recall = f64::from(caught) / f64::from(abusive);
    let false_positive_rate = f64::from(false_positives) / f64::from(clean);
    println!(
        "moderation evaluation: {} terms, {} rows ({abusive} abusive, {clean} clean)",
        moderator.term_count(),
        rows.len()
    );
    println!("recall {recall:.3} ({caught}/{abusive})");
    println!("false-positive rate {false_positive_rate:.3} ({false_positives}/{clean})");
    for text in &misses {
        println!("  missed:  {text:?} (normalised {:?})", normalise(text));
    }
    for (text, terms) in &wrongly_flagged {
        println!("  flagged: {text:?} as {terms:?}");
    }
    assert!(
        recall > MIN_RECALL,
        "recall {recall:.3} <= {MIN_RECALL}; missed: {misses:?}"
    );
    assert!(
        false_positive_rate < MAX_FALSE_POSITIVE_RATE,
        "false-positive rate {false_positive_rate:.3} >= {MAX_FALSE_POSITIVE_RATE}; \
         flagged: {wrongly_flagged:?}"
    );
}

#[test]
fn evasion_set_is_large_and_balanced() {
    let rows = load_evasions();
    let abusive = rows.iter().filter(|(l, _)| *l == Label::Abusive).count();
    let clean = rows.len() - abusive;
    assert!(rows.len() >= 120, "only {} rows", rows.len());
    assert!(abusive * 3 >= rows.len() && clean * 3 >= rows.len());
}

#[test]
fn default_lists_have_a_sensible_size() {
    let count = default_moderator().term_count();
    assert!((30..=200).contains(&count), "{count} terms");
}

#[test]
fn default_lists_report_canonical_terms() {
    let moderator = default_moderator();
    let verdict = moderator.check("F.U.C.K this $h1t, cl1ck h3re");
    assert_eq!(verdict.terms, ["fuck", "shit", "click here"]);
}
