//! One copy of a message at a time: a record whose `message_id` is already in flight
//! waits for the earlier copy to finish before it is processed.
//!
//! Copies of one message (a client's retry, a re-post) share its `bot_id`, hence its Kafka
//! partition, and are read in the order they were accepted. Processing is concurrent and
//! NLP latency varies, so without this a later copy could reach the database first; with
//! it, the first accepted copy is the one stored and the later ones meet its key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::domain::MessageId;

/// The copies in flight, by `message_id`: for each, the end of the latest copy's turn.
#[derive(Debug, Default)]
pub struct MessageTurns {
    latest: Mutex<HashMap<MessageId, (u64, oneshot::Receiver<()>)>>,
    next_seq: AtomicU64,
}

/// A copy's place in line; dropping it (the copy's outcome is durable, or it was
/// abandoned) lets the next copy of the same message go.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<MessageTurns>,
    id: MessageId,
    seq: u64,
    previous: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl MessageTurns {
    fn latest(&self) -> MutexGuard<'_, HashMap<MessageId, (u64, oneshot::Receiver<()>)>> {
        // Map operations cannot be interrupted half-way by a panic of the holder.
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a copy of `id` behind any copy already in flight. Call in the order the
    /// copies were read.
    pub fn join(self: &Arc<Self>, id: MessageId) -> Turn {
        let (done, finished) = oneshot::channel();
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let previous = self.latest().insert(id, (seq, finished)).map(|(_, rx)| rx);
        Turn {
            turns: self.clone(),
            id,
            seq,
            previous,
            _done: done,
        }
    }

    /// Messages with a copy in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.latest().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Turn {
    /// Waits until every earlier copy of the message has finished.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // Err means the earlier copy's turn was dropped: finished either way.
            drop(previous.await);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut latest = self.turns.latest();
        if latest
            .get(&self.id)
            .is_some_and(|(seq, _)| *seq == self.seq)
        {
            latest.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> MessageId {
        MessageId::from(uuid::Uuid::from_u128(n))
    }

    #[tokio::test]
    async fn a_later_copy_waits_for_the_earlier_one_and_others_do_not() {
        let turns = Arc::new(MessageTurns::default());
        let mut first = turns.join(id(1));
        let mut second = turns.join(id(1));
        let mut other = turns.join(id(2));
        first.wait().await;
        other.wait().await;

        let waiting = tokio::spawn(async move {
            second.wait().await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second copy waits");

        drop(first);
        let second = waiting.await.expect("second copy goes after the first");
        assert_eq!(turns.len(), 2);
        drop((second, other));
        assert!(turns.is_empty(), "finished copies leave nothing behind");
    }

    #[tokio::test]
    async fn copies_go_in_the_order_they_joined() {
        let turns = Arc::new(MessageTurns::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut copies: Vec<Turn> = (0..5).map(|_| turns.join(id(7))).collect();
        let mut tasks = Vec::new();
        // Started last-first, so only the turns can put them in order.
        for (n, mut turn) in copies.drain(..).enumerate().rev() {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                turn.wait().await;
                order.lock().expect("lock").push(n);
                tokio::task::yield_now().await;
                drop(turn);
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(*order.lock().expect("lock"), vec![0, 1, 2, 3, 4]);
        assert!(turns.is_empty());
    }
}
