//! The ledger: one CSV line per message per attempt, so that a run can be
//! accounted for id by id afterwards against what Postgres and the dead-letter
//! files hold (`make chaos` does, in `scripts/chaos_accounting.py`).
//!
//! Columns:
//!
//! - `at_ms`: Unix time in ms when the attempt ended;
//! - `message_id`;
//! - `attempt`: 0 for the first, then 1, 2, ...;
//! - `cause`: `first`, `retry` or `resend` (see [`super::resend`]);
//! - `outcome`: the HTTP status, or why there was none (`connect`, `timeout`,
//!   `closed`, `io`, `bad_response`), `unanswered` for an attempt still in
//!   flight when the run ended, `unsent` for a follow-up not yet due then;
//! - `retry_after`: 1 when the answer carried a `Retry-After` header;
//! - `sent_at`: 1 when the message carried `sent_at`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::client::{Outcome, Prepared};
use super::resend::Cause;

/// The header line.
pub const HEADER: &str = "at_ms,message_id,attempt,cause,outcome,retry_after,sent_at";

/// How an attempt ended, as the ledger tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Done(Outcome),
    /// Still waiting for its answer when the run ended.
    Unanswered,
    /// A follow-up that was still waiting for its time when the run ended.
    Unsent,
}

/// One attempt, as the ledger records it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub at: DateTime<Utc>,
    pub request: &'a Prepared,
    pub attempt: u32,
    pub cause: Cause,
    pub ending: Ending,
}

/// The ledger file. Writing goes through a buffer; the first error is kept
/// and returned by [`Ledger::finish`], later lines are dropped.
#[derive(Debug)]
pub struct Ledger {
    out: BufWriter<File>,
    path: PathBuf,
    lines: u64,
    error: Option<io::Error>,
}

impl Ledger {
    /// Creates (or truncates) the file at `path` and writes the header.
    pub fn create(path: &Path) -> io::Result<Ledger> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        writeln!(out, "{HEADER}")?;
        Ok(Ledger {
            out,
            path: path.to_owned(),
            lines: 0,
            error: None,
        })
    }

    /// Where the ledger is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line per message of the entry's request.
    pub fn record(&mut self, entry: Entry<'_>) {
        if self.error.is_some() {
            return;
        }
        let (outcome, retry_after) = match entry.ending {
            Ending::Done(o) => {
                let retry_after = matches!(o, Outcome::Answered(r) if r.retry_after);
                (o.label(), retry_after)
            }
            Ending::Unanswered => ("unanswered".to_owned(), false),
            Ending::Unsent => ("unsent".to_owned(), false),
        };
        let at_ms = entry.at.timestamp_millis();
        for (id, with_sent_at) in &entry.request.messages {
            let line = writeln!(
                self.out,
                "{at_ms},{},{},{},{outcome},{},{}",
                id.hyphenated(),
                entry.attempt,
                entry.cause.label(),
                u8::from(retry_after),
                u8::from(*with_sent_at),
            );
            if let Err(err) = line {
                self.error = Some(err);
                return;
            }
            self.lines += 1;
        }
    }

    /// Flushes and syncs the file; the number of lines written (header aside).
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::{FailureKind, Response};
    use super::*;
    use uuid::Uuid;

    #[test]
    fn every_message_of_every_attempt_is_one_line() {
        let path = std::env::temp_dir().join(format!("ledger-test-{}.csv", std::process::id()));
        let ids = [Uuid::now_v7(), Uuid::now_v7()];
        let request = Prepared {
            bytes: Vec::new(),
            messages: vec![(ids[0], true), (ids[1], false)],
        };
        let at = DateTime::from_timestamp_millis(1_767_225_600_123).unwrap_or_default();
        let mut ledger = Ledger::create(&path).expect("create");
        let refused = Outcome::Answered(Response {
            status: 503,
            retry_after: true,
            retry_after_secs: Some(5),
            keep_alive: true,
        });
        for (attempt, cause, ending) in [
            (0, Cause::First, Ending::Done(refused)),
            (
                1,
                Cause::Retry,
                Ending::Done(Outcome::Failed(FailureKind::Timeout)),
            ),
            (2, Cause::Retry, Ending::Unsent),
        ] {
            ledger.record(Entry {
                at,
                request: &request,
                attempt,
                cause,
                ending,
            });
        }
        assert_eq!(ledger.path(), path.as_path());
        assert_eq!(ledger.finish().expect("finish"), 6);
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len(), 7);
        assert_eq!(
            lines[1],
            format!("1767225600123,{},0,first,503,1,1", ids[0])
        );
        assert_eq!(
            lines[2],
            format!("1767225600123,{},0,first,503,1,0", ids[1])
        );
        assert_eq!(
            lines[3],
            format!("1767225600123,{},1,retry,timeout,0,1", ids[0])
        );
        assert_eq!(
            lines[6],
            format!("1767225600123,{},2,retry,unsent,0,0", ids[1])
        );
    }
}
