//! The two writers every pipeline needs running, the batch writer and the dead-letter
//! writer: started under the supervisor, and drained once the pipeline feeding them is
//! gone. Shared by the worker and `dlq replay`.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::pipeline::Pipeline;
use super::PipelineParts;
use crate::supervisor::{spawn_supervised, Component, Restarts};

/// The running writers of one pipeline.
pub struct Writers {
    batch: JoinHandle<()>,
    dead_letters: JoinHandle<()>,
}

impl PipelineParts {
    /// Starts the writers; a panic restarts one, counted in `restarts`. Returns the
    /// pipeline that feeds them: once it (and every clone) is dropped, they drain and stop.
    pub fn start(self, restarts: &Restarts) -> (Arc<Pipeline>, Writers) {
        // Never cancelled: the writers are not stopped at shutdown but drained, so a panic
        // while draining restarts them too.
        let drain = CancellationToken::new();
        let batch = spawn_supervised(
            Component::BatchWriter,
            restarts,
            &drain,
            &self.writer,
            |writer, _| writer.run(),
        );
        let dead_letters = spawn_supervised(
            Component::DeadLetterWriter,
            restarts,
            &drain,
            &self.dead_letters,
            |dead_letters, _| dead_letters.run(),
        );
        (
            self.pipeline,
            Writers {
                batch,
                dead_letters,
            },
        )
    }
}

impl Writers {
    /// Waits until both writers have written what was queued and stopped.
    pub async fn drained(self) {
        drop(self.batch.await);
        drop(self.dead_letters.await);
    }
}
