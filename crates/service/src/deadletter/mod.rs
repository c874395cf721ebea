//! Dead letters: messages the pipeline could not store, kept durably in JSON-lines files
//! (`dead-letters-YYYY-MM-DD.jsonl`) until `dlq replay` stores them.

mod metrics;
mod progress;
mod reader;
mod record;
mod writer;

pub use metrics::DeadLetterMetrics;
pub use progress::{
    dead_letter_files, is_dead_letter_file, PendingLine, ProgressError, ReplayCursor,
};
pub use reader::{
    read_dead_letter_lines, read_dead_letters, BadLine, DeadLetterFile, DeadLetterStats, ReadError,
};
pub use record::{DeadLetter, KafkaPosition, Stage};
pub use writer::{file_for, DeadLetterError, DeadLetterHandle, DeadLetterWriter};
