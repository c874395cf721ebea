//! Reading dead-letter files back, for `dlq stats` and `dlq replay`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::progress::dead_letter_files;
use super::record::DeadLetter;

/// Why dead letters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file, or the directory listing, could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory at fault.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One line that is not a dead letter (e.g. a torn last line after a crash).
#[derive(Debug, Clone, Serialize)]
pub struct BadLine {
    /// The file the line is in.
    pub file: PathBuf,
    /// Its line number, from 1.
    pub line: usize,
    /// Why it is not a dead letter: the JSON parser's message.
    pub error: String,
}

/// What was read from one file or a directory of them: the dead letters, and the lines
/// that are not one.
#[derive(Debug, Default)]
pub struct DeadLetterFile {
    /// Every readable dead letter, in file order (files oldest first).
    pub letters: Vec<DeadLetter>,
    /// Lines that are not a dead letter, in the same order.
    pub bad_lines: Vec<BadLine>,
}

/// Reads `path`: one `.jsonl` file, or every `dead-letters-*.jsonl` in a directory.
pub fn read_dead_letters(path: &Path) -> Result<DeadLetterFile, ReadError> {
    let files = if path.is_dir() {
        dead_letter_files(path).map_err(|e| ReadError::Io {
            path: e.path,
            source: e.source,
        })?
    } else {
        vec![path.to_owned()]
    };
    let mut out = DeadLetterFile::default();
    for file in files {
        let io = |source| ReadError::Io {
            path: file.clone(),
            source,
        };
        let reader = std::fs::File::open(&file).map_err(io)?;
        let read = read_dead_letter_lines(std::io::BufReader::new(reader), &file).map_err(io)?;
        out.letters.extend(read.letters);
        out.bad_lines.extend(read.bad_lines);
    }
    Ok(out)
}

/// Reads dead letters from `reader`, one JSON object a line; `file` names the source in
/// the [`BadLine`]s. Lines are taken as bytes, so a line torn inside a multi-byte
/// character (a crash mid-write) is one bad line, not an error for the whole file.
pub fn read_dead_letter_lines(
    mut reader: impl BufRead,
    file: &Path,
) -> std::io::Result<DeadLetterFile> {
    let mut out = DeadLetterFile::default();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(out);
        }
        number += 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<DeadLetter>(&line) {
            Ok(letter) => out.letters.push(letter),
            Err(e) => out.bad_lines.push(BadLine {
                file: file.to_owned(),
                line: number,
                error: e.to_string(),
            }),
        }
    }
}

/// What `dlq stats` prints.
#[derive(Debug, Serialize)]
pub struct DeadLetterStats {
    /// Dead letters read.
    pub total: usize,
    /// Dead letters holding a valid chat message, which `dlq replay` can store.
    pub replayable: usize,
    /// Dead letters per stage (`decode`, `storage`, `panic`).
    pub by_stage: BTreeMap<&'static str, usize>,
    /// The five most frequent `error` texts with their counts, most frequent first.
    pub top_errors: Vec<(String, usize)>,
    /// The earliest `failed_at`; `None` without dead letters.
    pub first_failed_at: Option<DateTime<Utc>>,
    /// The latest `failed_at`; `None` without dead letters.
    pub last_failed_at: Option<DateTime<Utc>>,
    /// Lines that are not a dead letter (e.g. torn by a crash).
    pub unreadable_lines: usize,
}

impl DeadLetterStats {
    /// Sums up `file` for `dlq stats`.
    pub fn of(file: &DeadLetterFile) -> DeadLetterStats {
        let mut by_stage = BTreeMap::new();
        let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
        for letter in &file.letters {
            *by_stage.entry(letter.stage.as_str()).or_insert(0) += 1;
            *errors.entry(letter.error.as_str()).or_insert(0) += 1;
        }
        let mut top_errors: Vec<(String, usize)> =
            errors.into_iter().map(|(e, n)| (e.to_owned(), n)).collect();
        top_errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top_errors.truncate(5);
        DeadLetterStats {
            total: file.letters.len(),
            replayable: file
                .letters
                .iter()
                .filter(|l| l.chat_message().is_some())
                .count(),
            by_stage,
            top_errors,
            first_failed_at: file.letters.iter().map(|l| l.failed_at).min(),
            last_failed_at: file.letters.iter().map(|l| l.failed_at).max(),
            unreadable_lines: file.bad_lines.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SourcePosition;

    #[test]
    fn reads_a_directory_and_reports_torn_lines() {
        let dir = std::env::temp_dir().join(format!("ca-dlq-read-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let letter = DeadLetter::undecodable(
            None,
            Some(b"x"),
            "bad",
            SourcePosition {
                partition: 0,
                offset: 7,
            },
        );
        let line = serde_json::to_string(&letter).expect("json");
        std::fs::write(
            dir.join("dead-letters-2026-11-22.jsonl"),
            format!("{line}\n{line}\n"),
        )
        .expect("write");
        std::fs::write(
            dir.join("dead-letters-2026-11-23.jsonl"),
            format!("{line}\n{{\"message\":"),
        )
        .expect("write");
        std::fs::write(dir.join("unrelated.txt"), "nope").expect("write");

        let file = read_dead_letters(&dir).expect("reads");
        assert_eq!(file.letters.len(), 3);
        assert_eq!(file.bad_lines.len(), 1);
        assert_eq!(file.bad_lines[0].line, 2);
        let stats = DeadLetterStats::of(&file);
        assert_eq!(stats.total, 3);
        assert_eq!(stats.replayable, 0);
        assert_eq!(stats.by_stage["decode"], 3);
        assert_eq!(stats.top_errors, vec![("undecodable: bad".to_owned(), 3)]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_line_torn_inside_a_multibyte_character_is_one_bad_line() {
        let dir = std::env::temp_dir().join(format!("ca-dlq-torn-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let letter = DeadLetter::undecodable(
            None,
            Some("caf\u{e9}".as_bytes()),
            "bad",
            SourcePosition {
                partition: 0,
                offset: 7,
            },
        );
        let line = serde_json::to_string(&letter).expect("json");
        let cut = line
            .find('\u{e9}')
            .expect("the line holds the two-byte character")
            + 1;
        let mut bytes = format!("{line}\n").into_bytes();
        bytes.extend_from_slice(&line.as_bytes()[..cut]);
        let path = dir.join("dead-letters-2026-11-23.jsonl");
        std::fs::write(&path, bytes).expect("write");

        let file = read_dead_letters(&path).expect("a torn line does not fail the file");
        assert_eq!(file.letters, vec![letter]);
        assert_eq!(file.bad_lines.len(), 1);
        assert_eq!(file.bad_lines[0].line, 2);
        std::fs::remove_dir_all(dir).ok();
    }
}
