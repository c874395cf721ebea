//! Reading dead-letter files back, for `dlq stats` and `dlq replay`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::progress::dead_letter_files;
use super::record::DeadLetter;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line that is not a dead letter (e.g. a torn last line after a crash).
#[derive(Debug, Clone, Serialize)]
pub struct BadLine {
    pub file: PathBuf,
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct DeadLetterFile {
    pub letters: Vec<DeadLetter>,
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
        let reader = std::fs::File::open(&file).map_err(|source| ReadError::Io {
            path: file.clone(),
            source,
        })?;
        for (i, line) in std::io::BufReader::new(reader).lines().enumerate() {
            let line = line.map_err(|source| ReadError::Io {
                path: file.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<DeadLetter>(&line) {
                Ok(letter) => out.letters.push(letter),
                Err(e) => out.bad_lines.push(BadLine {
                    file: file.clone(),
                    line: i + 1,
                    error: e.to_string(),
                }),
            }
        }
    }
    Ok(out)
}

/// What `dlq stats` prints.
#[derive(Debug, Serialize)]
pub struct DeadLetterStats {
    pub total: usize,
    pub replayable: usize,
    pub by_stage: BTreeMap<&'static str, usize>,
    pub top_errors: Vec<(String, usize)>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub unreadable_lines: usize,
}

impl DeadLetterStats {
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
        assert_eq!(stats.top_errors, vec![("bad".to_owned(), 3)]);
        std::fs::remove_dir_all(dir).ok();
    }
}
