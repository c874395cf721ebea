//! How far a dead-letter file has been replayed, so that the worker's automatic replay
//! goes through each line once, across restarts and with several workers sharing the
//! directory.
//!
//! The position is a byte offset kept next to the file, in
//! `dead-letters-YYYY-MM-DD.jsonl.replayed`: every line before it is replayed and its
//! outcome durable. It is replaced atomically (write, fsync, rename) only after the lines
//! before it are done, and nothing is ever deleted. A process replays a file only while it
//! holds an exclusive lock on it (advisory; the dead-letter writer appends regardless), so
//! two workers never replay the same lines at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::DeadLetter;

/// Most bytes read from a file at once: a chunk of lines is replayed before the next.
const CHUNK_BYTES: u64 = 1 << 20;

/// A dead-letter file, its `.replayed` progress file or the directory could not be
/// read or written.
#[derive(Debug, thiserror::Error)]
#[error("replay progress of {path}: {source}")]
pub struct ProgressError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// The dead-letter files in `dir`, oldest first.
pub fn dead_letter_files(dir: &Path) -> Result<Vec<PathBuf>, ProgressError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ProgressError {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_dead_letter_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// `dead-letters-*.jsonl`, the files the writer appends to.
pub fn is_dead_letter_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("dead-letters-") && n.ends_with(".jsonl"))
}

/// One line after the replay position.
#[derive(Debug)]
pub struct PendingLine {
    /// The line's dead letter, or why it is not one (a torn line from a crash).
    pub letter: Result<DeadLetter, String>,
    /// Byte offset just past the line's newline.
    pub end: u64,
}

/// A dead-letter file claimed for replay: the claim lasts as long as this value.
#[derive(Debug)]
pub struct ReplayCursor {
    file: File,
    path: PathBuf,
    progress_path: PathBuf,
    position: u64,
}

impl ReplayCursor {
    /// Claims `path` for replay, at its recorded position; `None` when another process
    /// holds the claim.
    pub fn claim(path: &Path) -> Result<Option<ReplayCursor>, ProgressError> {
        let fail = |source| ProgressError {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(fail)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(source)) => return Err(fail(source)),
        }
        let progress_path = progress_path(path);
        let position = match std::fs::read_to_string(&progress_path) {
            Ok(text) => text.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(ProgressError {
                    path: progress_path,
                    source,
                })
            }
        };
        Ok(Some(ReplayCursor {
            file,
            path: path.to_owned(),
            progress_path,
            position,
        }))
    }

    /// The file this cursor replays.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset up to which every line is replayed.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The complete lines after `from` (at most about a megabyte of them); a last line
    /// without its newline yet is left for later.
    pub fn lines_after(&mut self, from: u64) -> Result<Vec<PendingLine>, ProgressError> {
        let fail = |source| ProgressError {
            path: self.path.clone(),
            source,
        };
        self.file.seek(SeekFrom::Start(from)).map_err(fail)?;
        let mut buf = Vec::new();
        (&mut self.file)
            .take(CHUNK_BYTES)
            .read_to_end(&mut buf)
            .map_err(fail)?;
        let mut lines = Vec::new();
        let mut start = 0;
        // A line longer than a whole chunk would never complete: take it as it is.
        let whole = buf.len() as u64 == CHUNK_BYTES && !buf.contains(&b'\n');
        while let Some(len) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + len];
            start += len + 1;
            lines.extend(pending_line(line, from + start as u64));
        }
        if whole {
            lines.extend(pending_line(&buf, from + buf.len() as u64));
        }
        Ok(lines)
    }

    /// Records that every line before `position` is replayed: durable before it returns.
    pub fn advance(&mut self, position: u64) -> Result<(), ProgressError> {
        let temp = self.progress_path.with_extension("replayed.tmp");
        let fail = |path: &Path| {
            let path = path.to_owned();
            move |source| ProgressError { path, source }
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(fail(&temp))?;
        writeln!(out, "{position}").map_err(fail(&temp))?;
        out.sync_all().map_err(fail(&temp))?;
        std::fs::rename(&temp, &self.progress_path).map_err(fail(&self.progress_path))?;
        if let Some(dir) = self.progress_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(fail(dir))?;
        }
        self.position = position;
        Ok(())
    }
}

/// `dead-letters-YYYY-MM-DD.jsonl` → `dead-letters-YYYY-MM-DD.jsonl.replayed`.
fn progress_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".replayed");
    PathBuf::from(name)
}

fn pending_line(line: &[u8], end: u64) -> Option<PendingLine> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let letter = serde_json::from_slice::<DeadLetter>(line).map_err(|e| e.to_string());
    Some(PendingLine { letter, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SourcePosition;

    fn line(offset: i64) -> String {
        let letter = DeadLetter::undecodable(
            None,
            Some(b"x"),
            "bad",
            SourcePosition {
                partition: 0,
                offset,
            },
        );
        serde_json::to_string(&letter).expect("json") + "\n"
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ca-progress-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join(name)
    }

    fn offsets(lines: &[PendingLine]) -> Vec<i64> {
        lines
            .iter()
            .map(|l| {
                let letter = l.letter.as_ref().expect("a dead letter");
                letter.kafka.expect("position").offset
            })
            .collect()
    }

    #[test]
    fn reads_complete_lines_after_the_position_and_remembers_it() {
        let path = temp_file("dead-letters-2026-11-30.jsonl");
        std::fs::write(&path, format!("{}{}", line(1), line(2))).expect("write");
        let mut cursor = ReplayCursor::claim(&path).expect("claim").expect("free");
        assert_eq!(cursor.position(), 0);
        let lines = cursor.lines_after(0).expect("read");
        assert_eq!(offsets(&lines), [1, 2]);

        cursor.advance(lines[0].end).expect("advance");
        drop(cursor);
        let mut again = ReplayCursor::claim(&path).expect("claim").expect("free");
        assert_eq!(again.position(), lines[0].end, "kept across claims");
        assert_eq!(
            offsets(&again.lines_after(again.position()).expect("read")),
            [2]
        );
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }

    #[test]
    fn a_line_still_being_written_waits_and_a_torn_one_is_reported() {
        let path = temp_file("dead-letters-2026-11-30.jsonl");
        let partial = line(3);
        std::fs::write(&path, format!("{}{{\"torn\n{}", line(1), &partial[..10])).expect("write");
        let mut cursor = ReplayCursor::claim(&path).expect("claim").expect("free");
        let lines = cursor.lines_after(0).expect("read");
        assert_eq!(lines.len(), 2, "the unfinished last line is not read");
        assert!(lines[0].letter.is_ok());
        assert!(lines[1].letter.is_err(), "a torn line is reported");
        let end = lines[1].end;

        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&partial.as_bytes()[10..])
            .expect("finish the line");
        assert_eq!(offsets(&cursor.lines_after(end).expect("read")), [3]);
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }

    #[test]
    fn only_one_claim_at_a_time() {
        let path = temp_file("dead-letters-2026-11-30.jsonl");
        std::fs::write(&path, line(1)).expect("write");
        let first = ReplayCursor::claim(&path).expect("claim").expect("free");
        assert!(
            ReplayCursor::claim(&path).expect("claim").is_none(),
            "held by the first"
        );
        drop(first);
        assert!(ReplayCursor::claim(&path).expect("claim").is_some());
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }

    #[test]
    fn lists_only_dead_letter_files_oldest_first() {
        let path = temp_file("dead-letters-2026-11-30.jsonl");
        let dir = path.parent().expect("dir").to_owned();
        for name in [
            "dead-letters-2026-11-30.jsonl",
            "dead-letters-2026-11-29.jsonl",
            "dead-letters-2026-11-29.jsonl.replayed",
            "other.txt",
        ] {
            std::fs::write(dir.join(name), "").expect("write");
        }
        let files = dead_letter_files(&dir).expect("list");
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or(""))
            .collect();
        assert_eq!(
            names,
            [
                "dead-letters-2026-11-29.jsonl",
                "dead-letters-2026-11-30.jsonl"
            ]
        );
        assert!(dead_letter_files(&dir.join("missing"))
            .expect("absent dir")
            .is_empty());
        std::fs::remove_dir_all(dir).ok();
    }
}
