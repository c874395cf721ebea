//! Dropping a Kafka consumer closes it, and librdkafka's close can block for good: a
//! consumer closed while its group is assigning partitions can wait in `rd_kafka_assign`
//! for an answer that never comes (librdkafka issue 4884, open). Shutdown must stay
//! bounded, so the client is dropped on a thread of its own and its owner waits for that
//! only so long. A process that exits meanwhile takes the thread with it.

use std::ops::Deref;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Owns a client whose drop may block; see the module docs.
pub struct BoundedClose<T: Send + 'static> {
    /// `None` only once the drop has taken it.
    client: Option<T>,
    within: Duration,
}

impl<T: Send + 'static> BoundedClose<T> {
    /// Owns `client`; its drop waits at most `within` for the client's.
    pub fn new(client: T, within: Duration) -> BoundedClose<T> {
        BoundedClose {
            client: Some(client),
            within,
        }
    }
}

impl<T: Send + 'static> Deref for BoundedClose<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.client
            .as_ref()
            .expect("the client is only taken when it is dropped")
    }
}

impl<T: Send + 'static> Drop for BoundedClose<T> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let (closed, wait) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || {
                drop(client);
                // The owner may have stopped waiting; nothing to tell it then.
                let _ = closed.send(());
            });
        if let Err(err) = spawned {
            // The closure, and the client with it, was dropped on this thread.
            tracing::warn!(error = %err, "no thread to close the Kafka client on; closed it in place");
            return;
        }
        if wait.recv_timeout(self.within).is_err() {
            tracing::warn!(
                within = ?self.within,
                "the Kafka client did not close in time; left behind (librdkafka issue 4884)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// A client whose drop blocks until the test releases it, as librdkafka's close may.
    struct StuckClient(Arc<Barrier>);

    impl Drop for StuckClient {
        fn drop(&mut self) {
            self.0.wait();
        }
    }

    #[test]
    fn a_close_that_blocks_is_left_behind_once_the_wait_is_over() {
        let release = Arc::new(Barrier::new(2));
        let owner = BoundedClose::new(StuckClient(release.clone()), Duration::from_millis(50));
        // Dropped on a thread of the test's own, so that a drop that waited for the client
        // fails the test below instead of hanging it.
        let (dropped, wait) = mpsc::channel();
        thread::spawn(move || {
            drop(owner);
            let _ = dropped.send(());
        });
        let returned = wait.recv_timeout(Duration::from_secs(30));
        release.wait();
        assert!(
            returned.is_ok(),
            "the owner's drop returned while the client's was still blocked"
        );
    }

    #[test]
    fn a_close_that_finishes_is_waited_for() {
        let (closed, wait) = mpsc::channel();
        struct Client(mpsc::Sender<thread::ThreadId>);
        impl Drop for Client {
            fn drop(&mut self) {
                let _ = self.0.send(thread::current().id());
            }
        }
        drop(BoundedClose::new(Client(closed), Duration::from_secs(30)));
        let closed_on = wait
            .try_recv()
            .expect("the client was closed before the owner's drop returned");
        assert_ne!(
            closed_on,
            thread::current().id(),
            "closed on its own thread"
        );
    }
}
