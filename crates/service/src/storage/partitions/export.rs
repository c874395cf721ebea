//! The file side of an archive: `COPY ... TO STDOUT` streamed into a gzip file under a
//! temporary name, fsynced, then renamed into place with the directory fsynced.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;
use futures::{pin_mut, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::Transaction;

use super::error::archive_err;
use super::{db, ArchiveStep, PartitionError, Step};

/// Rows are handed from the COPY stream to the gzip thread in chunks of about this size.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the COPY stream and the gzip thread (bounded memory).
const EXPORT_CHANNEL_DEPTH: usize = 16;

/// An export written and fsynced under a temporary name, not yet in place.
pub(super) struct StagedArchive {
    pub(super) temp_path: PathBuf,
    pub(super) rows: u64,
    pub(super) bytes: u64,
}

/// Streams `COPY ... TO STDOUT` into a gzip file under a temporary name in `dir`.
///
/// Compression and file I/O are blocking, so they run on a blocking thread fed through a
/// bounded channel: memory stays at a few chunks whatever the partition size, and the
/// runtime's workers keep serving the ingest path. On any failure the temp file is
/// removed.
pub(super) async fn export_to_temp_file(
    tx: &Transaction<'_>,
    partition: &str,
    copy_sql: &str,
    dir: &Path,
) -> Result<StagedArchive, PartitionError> {
    let temp_path = dir.join(format!(
        ".{partition}.csv.gz.{}.{}.tmp",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let file = {
        let (owned, dir, temp) = (partition.to_owned(), dir.to_owned(), temp_path.clone());
        run_blocking(partition, move || create_temp_file(&owned, &dir, &temp)).await??
    };
    let (sender, receiver) = mpsc::channel::<Vec<u8>>(EXPORT_CHANNEL_DEPTH);
    let writer = {
        let (partition, temp_path) = (partition.to_owned(), temp_path.clone());
        tokio::task::spawn_blocking(move || write_gzip(&partition, &temp_path, file, receiver))
    };
    let streamed = stream_copy(tx, partition, copy_sql, sender).await;
    let written = writer
        .await
        .map_err(|source| PartitionError::ArchiveTask {
            partition: partition.to_owned(),
            source,
        })
        .and_then(|result| result);
    // A write error explains a stream that stopped because the writer went away, so it
    // takes precedence; otherwise a stream error means the file is incomplete.
    let outcome = match (streamed, written) {
        (_, Err(write_error)) => Err(write_error),
        (Err(copy_error), Ok(_)) => Err(copy_error),
        (Ok(()), Ok((rows, bytes))) => Ok((rows, bytes)),
    };
    match outcome {
        Ok((rows, bytes)) => Ok(StagedArchive {
            temp_path,
            rows,
            bytes,
        }),
        Err(error) => {
            discard(temp_path).await;
            Err(error)
        }
    }
}

/// Runs blocking file work off the async workers.
async fn run_blocking<T: Send + 'static>(
    partition: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PartitionError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| PartitionError::ArchiveTask {
            partition: partition.to_owned(),
            source,
        })
}

/// Creates the archive directory if needed and a fresh temp file in it.
fn create_temp_file(
    partition: &str,
    dir: &Path,
    temp_path: &Path,
) -> Result<std::fs::File, PartitionError> {
    std::fs::create_dir_all(dir).map_err(archive_err(partition, ArchiveStep::CreateDir, dir))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp_path)
        .map_err(archive_err(
            partition,
            ArchiveStep::CreateTempFile,
            temp_path,
        ))
}

/// Reads the COPY stream and hands it to the writer in chunks of ~64 KiB (Postgres sends
/// one message per row; one channel hop per row would cost more than the row).
async fn stream_copy(
    tx: &Transaction<'_>,
    partition: &str,
    copy_sql: &str,
    sender: mpsc::Sender<Vec<u8>>,
) -> Result<(), PartitionError> {
    let export_error = db(partition, Step::Export);
    let stream = match tx.copy_out(copy_sql).await {
        Ok(stream) => stream,
        Err(e) => return Err(export_error(e)),
    };
    pin_mut!(stream);
    let mut chunk = Vec::with_capacity(EXPORT_CHUNK_BYTES);
    loop {
        match stream.try_next().await {
            Ok(Some(data)) => {
                chunk.extend_from_slice(&data);
                if chunk.len() >= EXPORT_CHUNK_BYTES {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK_BYTES));
                    if sender.send(full).await.is_err() {
                        // The writer failed; its error is reported by the caller.
                        return Ok(());
                    }
                }
            }
            Ok(None) => break,
            Err(e) => return Err(export_error(e)),
        }
    }
    if !chunk.is_empty() {
        // As above: a closed channel means the writer's error is the one to report.
        let _ = sender.send(chunk).await;
    }
    Ok(())
}

/// Compresses the chunks into `file`, counting CSV records, and fsyncs it. Returns
/// (data rows, compressed bytes).
fn write_gzip(
    partition: &str,
    temp_path: &Path,
    file: std::fs::File,
    mut receiver: mpsc::Receiver<Vec<u8>>,
) -> Result<(u64, u64), PartitionError> {
    let archive_error = |step| archive_err(partition, step, temp_path);
    let mut counter = CsvRecordCounter::default();
    let mut gzip = GzEncoder::new(
        BufWriter::with_capacity(EXPORT_CHUNK_BYTES, file),
        Compression::default(),
    );
    while let Some(chunk) = receiver.blocking_recv() {
        counter.feed(&chunk);
        gzip.write_all(&chunk)
            .map_err(archive_error(ArchiveStep::Write))?;
    }
    let file = gzip
        .finish()
        .map_err(archive_error(ArchiveStep::Write))?
        .into_inner()
        .map_err(|e| archive_error(ArchiveStep::Write)(e.into_error()))?;
    file.sync_all().map_err(archive_error(ArchiveStep::Sync))?;
    let bytes = file
        .metadata()
        .map_err(archive_error(ArchiveStep::Sync))?
        .len();
    // The first record is the header.
    Ok((counter.records.saturating_sub(1), bytes))
}

/// Moves the fsynced temp file to its final name and fsyncs the directory, so the
/// archive survives a crash before the partition is dropped.
pub(super) async fn publish(
    partition: &str,
    temp_path: &Path,
    path: &Path,
    dir: &Path,
) -> Result<(), PartitionError> {
    let (owned_partition, temp, dest, dir) = (
        partition.to_owned(),
        temp_path.to_owned(),
        path.to_owned(),
        dir.to_owned(),
    );
    let result = run_blocking(partition, move || {
        std::fs::rename(&temp, &dest).map_err(archive_err(
            &owned_partition,
            ArchiveStep::Rename,
            &dest,
        ))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(archive_err(&owned_partition, ArchiveStep::SyncDir, &dir))
    })
    .await
    .and_then(|result| result);
    if result.is_err() {
        discard(temp_path.to_owned()).await;
    }
    result
}

/// Best-effort removal of a temp file after a failure; the failure itself is what gets
/// reported.
pub(super) async fn discard(temp_path: PathBuf) {
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(&temp_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err((temp_path, e)),
        _ => Ok(()),
    })
    .await;
    if let Ok(Err((path, error))) = removed {
        tracing::warn!(path = %path.display(), %error, "could not remove temporary archive file");
    }
}

/// Counts CSV records in Postgres' `COPY ... (FORMAT csv)` output, across chunk
/// boundaries. Postgres quotes any field holding `"`, `,`, CR or LF and doubles inner
/// quotes, so a record ends at every LF outside quotes, and toggling on each `"` tracks
/// "inside quotes" exactly (a doubled quote toggles twice).
#[derive(Debug, Default)]
struct CsvRecordCounter {
    in_quotes: bool,
    records: u64,
}

impl CsvRecordCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.records += 1,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_counter_ignores_newlines_inside_quotes_across_chunks() {
        let csv = b"a,b\n1,\"x\ny\"\n2,\"say \"\"hi\"\"\n\"\n3,plain\n";
        for split in 0..csv.len() {
            let mut counter = CsvRecordCounter::default();
            counter.feed(&csv[..split]);
            counter.feed(&csv[split..]);
            assert_eq!(counter.records, 4, "split at {split}");
        }
    }
}
