//! Appends dead letters to `dead-letters-YYYY-MM-DD.jsonl` and answers only once the
//! line is fsynced, so an offset is never committed for a message that is nowhere.
//!
//! Writes are group-committed: everything queued while one fsync runs goes into the
//! next, so a database outage at full rate costs a few fsyncs a second, not thousands.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::metrics::DeadLetterMetrics;
use super::record::DeadLetter;

/// Most dead letters written by one fsync.
const GROUP_LIMIT: usize = 2048;

/// A dead letter that could not be made durable: it is in no file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot write dead letters to {path}: {reason}")]
pub struct DeadLetterError {
    /// The file that could not be written, or the dead-letter directory.
    pub path: PathBuf,
    /// What failed: encoding, opening, writing or fsyncing the file, or the writer task
    /// stopped.
    pub reason: String,
}

type Reply = oneshot::Sender<Result<(), DeadLetterError>>;

/// Cheap to clone; the writer task stops when every handle is dropped.
#[derive(Clone)]
pub struct DeadLetterHandle {
    tx: mpsc::Sender<(DeadLetter, Reply)>,
    dir: Arc<Path>,
    metrics: DeadLetterMetrics,
}

impl DeadLetterHandle {
    /// Returns once the dead letter is durable on disk.
    pub async fn write(&self, letter: DeadLetter) -> Result<(), DeadLetterError> {
        let gone = || DeadLetterError {
            path: self.dir.to_path_buf(),
            reason: "dead-letter writer stopped".into(),
        };
        let stage = letter.stage;
        let (reply, answer) = oneshot::channel();
        self.tx.send((letter, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())??;
        self.metrics.written(stage);
        Ok(())
    }
}

/// The task that appends queued dead letters to the day's file, one fsync per group,
/// and answers each [`DeadLetterHandle::write`] once its line is durable.
pub struct DeadLetterWriter {
    rx: Mutex<mpsc::Receiver<(DeadLetter, Reply)>>,
    dir: PathBuf,
}

impl DeadLetterWriter {
    /// A writer into `dir` and the handle to queue letters with; the handle counts each
    /// letter in `metrics` once it is durable.
    pub fn new(
        dir: PathBuf,
        metrics: DeadLetterMetrics,
    ) -> (Arc<DeadLetterWriter>, DeadLetterHandle) {
        let (tx, rx) = mpsc::channel(GROUP_LIMIT * 2);
        let handle = DeadLetterHandle {
            tx,
            dir: Arc::from(dir.as_path()),
            metrics,
        };
        (
            Arc::new(DeadLetterWriter {
                rx: Mutex::new(rx),
                dir,
            }),
            handle,
        )
    }

    /// Writes until every handle is dropped; restartable after a panic.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.rx.lock().await;
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < GROUP_LIMIT {
                match rx.try_recv() {
                    Ok(item) => group.push(item),
                    Err(_) => break,
                }
            }
            let (letters, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            let dir = self.dir.clone();
            let result = tokio::task::spawn_blocking(move || append(&dir, &letters))
                .await
                .unwrap_or_else(|e| {
                    Err(DeadLetterError {
                        path: self.dir.clone(),
                        reason: format!("writer thread failed: {e}"),
                    })
                });
            for reply in replies {
                drop(reply.send(result.clone()));
            }
        }
    }
}

/// The file that holds dead letters of `day`.
pub fn file_for(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!("dead-letters-{}.jsonl", day.format("%Y-%m-%d")))
}

fn append(dir: &Path, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
    let mut by_day: BTreeMap<NaiveDate, Vec<u8>> = BTreeMap::new();
    for letter in letters {
        let buf = by_day.entry(letter.failed_at.date_naive()).or_default();
        serde_json::to_writer(&mut *buf, letter).map_err(|e| DeadLetterError {
            path: dir.to_owned(),
            reason: format!("cannot encode dead letter: {e}"),
        })?;
        buf.push(b'\n');
    }
    std::fs::create_dir_all(dir).map_err(|e| DeadLetterError {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    for (day, bytes) in by_day {
        let path = file_for(dir, day);
        let fail = |e: std::io::Error| DeadLetterError {
            path: path.clone(),
            reason: e.to_string(),
        };
        let created = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(fail)?;
        if ends_torn(&file).map_err(fail)? {
            // A crash cut the last line short: end it, so the next line stays readable.
            file.write_all(b"\n").map_err(fail)?;
        }
        file.write_all(&bytes).map_err(fail)?;
        file.sync_data().map_err(fail)?;
        if created {
            // A new file's directory entry must be durable too.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// True when the file is not empty and its last byte is not a newline.
fn ends_torn(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadletter::record::Stage;
    use crate::domain::SourcePosition;

    fn letter(offset: i64) -> DeadLetter {
        DeadLetter::undecodable(
            None,
            Some(b"x"),
            "bad",
            SourcePosition {
                partition: 0,
                offset,
            },
        )
    }

    fn metrics() -> DeadLetterMetrics {
        DeadLetterMetrics::register(&prometheus::Registry::new()).expect("registers")
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ca-dlq-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tmp");
        dir
    }

    #[tokio::test]
    async fn concurrent_writes_all_land_one_line_each() {
        let dir = temp_dir("ok");
        let counted = metrics();
        let (writer, handle) = DeadLetterWriter::new(dir.join("dlq"), counted.clone());
        let task = tokio::spawn(writer.run());
        let writes = (0..500).map(|i| {
            let h = handle.clone();
            tokio::spawn(async move { h.write(letter(i)).await })
        });
        for w in futures::future::join_all(writes).await {
            w.expect("task").expect("written");
        }
        drop(handle);
        task.await.expect("writer ends when handles drop");
        let today = chrono::Utc::now().date_naive();
        let text = std::fs::read_to_string(file_for(&dir.join("dlq"), today)).expect("file");
        let mut offsets: Vec<i64> = text
            .lines()
            .map(|l| {
                let d: DeadLetter = serde_json::from_str(l).expect("line parses");
                assert_eq!(d.stage, Stage::Decode);
                d.kafka.expect("kafka").offset
            })
            .collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..500).collect::<Vec<_>>());
        assert_eq!(counted.count(Stage::Decode), 500);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_torn_last_line_is_ended_before_the_next_is_appended() {
        let dir = temp_dir("torn");
        let path = file_for(&dir, chrono::Utc::now().date_naive());
        std::fs::write(&path, "{\"message\":").expect("a line cut short by a crash");
        let (writer, handle) = DeadLetterWriter::new(dir.clone(), metrics());
        tokio::spawn(writer.run());
        handle.write(letter(9)).await.expect("written");
        let file = crate::deadletter::read_dead_letters(&path).expect("reads");
        assert_eq!(file.bad_lines.len(), 1, "the torn line stays a bad line");
        assert_eq!(file.letters.len(), 1, "the new line is intact");
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_reported_not_ignored() {
        let dir = temp_dir("bad");
        let not_a_dir = dir.join("file");
        std::fs::write(&not_a_dir, b"x").expect("file");
        let counted = metrics();
        let (writer, handle) = DeadLetterWriter::new(not_a_dir.join("dlq"), counted.clone());
        tokio::spawn(writer.run());
        let err = handle.write(letter(1)).await.expect_err("must fail");
        assert!(err.path.starts_with(&not_a_dir));
        assert_eq!(
            counted.count(Stage::Decode),
            0,
            "only durable letters count"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
