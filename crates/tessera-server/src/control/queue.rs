//! The queues in front of a device's socket, bounded in messages *and* in
//! bytes.
//!
//! A message count alone does not bound memory: 64 end-to-end messages of
//! up to 4 MiB each are 256 MiB per connection, and a device that stops
//! reading would pin all of it. So every queue also has a byte budget:
//! a message takes its encoded size from the budget when it is queued and
//! gives it back once the connection's writer has written it out. A
//! message larger than the whole budget is charged the whole budget, so it
//! still fits into an empty queue and waits for everything before it.
//!
//! What happens when a queue is full is the sender's choice, as before:
//! [`Outbox::try_send`] fails at once (notices: the device is not reading
//! and its write timeout will end it), [`Outbox::send_timeout`] waits a
//! bounded time for room (end-to-end traffic, viewer input), which pushes
//! back on whoever sends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, Notify};

use super::Queued;

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// No room (in messages or bytes) in the time given.
    Full,
    /// The connection is gone.
    Closed,
}

/// The bytes waiting in one queue.
#[derive(Debug)]
struct Budget {
    limit: usize,
    queued: AtomicUsize,
    /// Woken each time the writer gave some bytes back.
    drained: Notify,
}

impl Budget {
    /// What a message of `len` encoded bytes is charged: at least one byte
    /// (so an empty message still counts), at most the whole budget.
    fn cost(&self, len: usize) -> usize {
        len.clamp(1, self.limit)
    }

    /// Takes `cost` bytes if they fit; all or nothing, so two senders
    /// racing for the last room cannot both get it.
    fn reserve(&self, cost: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + cost <= self.limit).then_some(q + cost)
            })
            .is_ok()
    }

    fn give_back(&self, cost: usize) {
        self.queued.fetch_sub(cost, Ordering::AcqRel);
        self.drained.notify_waiters();
    }
}

/// The sending side of a device queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Budget>,
}

/// The receiving side, read by the connection's writer.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Queued>,
    budget: Arc<Budget>,
}

/// A queue of at most `messages` messages and `bytes` encoded bytes.
pub fn bounded(messages: usize, bytes: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(messages.max(1));
    let budget = Arc::new(Budget {
        limit: bytes.max(1),
        queued: AtomicUsize::new(0),
        drained: Notify::new(),
    });
    (
        Outbox {
            tx,
            budget: Arc::clone(&budget),
        },
        Inbox { rx, budget },
    )
}

impl Outbox {
    /// Queues `m` if there is room now.
    pub fn try_send(&self, m: Queued) -> Result<(), QueueError> {
        let cost = self.budget.cost(m.encoded_len());
        if !self.budget.reserve(cost) {
            return Err(if self.tx.is_closed() {
                QueueError::Closed
            } else {
                QueueError::Full
            });
        }
        self.tx.try_send(m).map_err(|e| {
            self.budget.give_back(cost);
            match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full,
                mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
            }
        })
    }

    /// Queues `m`, waiting at most `wait` for room in bytes and messages.
    pub async fn send_timeout(&self, m: Queued, wait: Duration) -> Result<(), QueueError> {
        let cost = self.budget.cost(m.encoded_len());
        // The common case, room at once, takes no timer and no waiter.
        let m = if self.budget.reserve(cost) {
            match self.tx.try_send(m) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.budget.give_back(cost);
                    return Err(QueueError::Closed);
                }
                // Bytes reserved, but no slot: wait for one below.
                Err(mpsc::error::TrySendError::Full(m)) => {
                    return self.send_reserved(m, cost, wait).await;
                }
            }
        } else {
            m
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so bytes given back between the
            // check and the wait still wake this sender.
            let drained = self.budget.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.budget.reserve(cost) {
                break;
            }
            tokio::select! {
                () = drained => {}
                () = self.tx.closed() => return Err(QueueError::Closed),
                () = tokio::time::sleep_until(deadline) => return Err(QueueError::Full),
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.send_reserved(m, cost, left).await
    }

    /// Sends `m`, whose `cost` bytes are reserved, waiting at most `wait`
    /// for a slot; the bytes go back if it is not sent.
    async fn send_reserved(
        &self,
        m: Queued,
        cost: usize,
        wait: Duration,
    ) -> Result<(), QueueError> {
        self.tx.send_timeout(m, wait).await.map_err(|e| {
            self.budget.give_back(cost);
            match e {
                mpsc::error::SendTimeoutError::Timeout(_) => QueueError::Full,
                mpsc::error::SendTimeoutError::Closed(_) => QueueError::Closed,
            }
        })
    }
}

impl Inbox {
    /// The next message and its encoded bytes. Its bytes stay charged to
    /// the queue until [`Inbox::written`] gives them back.
    pub async fn recv(&mut self) -> Option<(Queued, Vec<u8>)> {
        self.rx.recv().await.map(with_bytes)
    }

    /// The next message if one is waiting now (see [`Inbox::recv`]).
    pub fn try_recv(&mut self) -> Option<(Queued, Vec<u8>)> {
        self.rx.try_recv().ok().map(with_bytes)
    }

    /// A message of `len` encoded bytes left for the socket.
    pub fn written(&self, len: usize) {
        self.budget.give_back(self.budget.cost(len));
    }
}

/// A message and its encoded bytes, as the writer puts them on the socket.
fn with_bytes(m: Queued) -> (Queued, Vec<u8>) {
    let bytes = m.encode_to_vec();
    (m, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::v1::E2eData;
    use tessera_proto::Body;

    fn sized(n: usize) -> Queued {
        super::super::queued(Body::E2eData(E2eData {
            ciphertext: vec![0u8; n].into(),
            ..Default::default()
        }))
    }

    #[tokio::test]
    async fn a_queue_is_full_by_bytes_long_before_it_is_full_by_count() {
        let (tx, mut rx) = bounded(64, 10_000);
        assert_eq!(tx.try_send(sized(6_000)), Ok(()));
        // One more of the same size would pass 10,000 bytes.
        assert_eq!(tx.try_send(sized(6_000)), Err(QueueError::Full));
        assert_eq!(
            tx.send_timeout(sized(6_000), Duration::from_millis(20))
                .await,
            Err(QueueError::Full)
        );
        // Writing the first out makes room.
        let (_, bytes) = rx.recv().await.unwrap();
        rx.written(bytes.len());
        assert_eq!(tx.try_send(sized(6_000)), Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_the_room_the_writer_gives_back() {
        let (tx, mut rx) = bounded(64, 10_000);
        tx.try_send(sized(9_000)).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send_timeout(sized(9_000), Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        let (_, bytes) = rx.recv().await.unwrap();
        rx.written(bytes.len());
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_still_fits_an_empty_queue() {
        let (tx, mut rx) = bounded(64, 1_000);
        assert_eq!(tx.try_send(sized(5_000)), Ok(()));
        assert_eq!(tx.try_send(sized(1)), Err(QueueError::Full));
        let (_, bytes) = rx.recv().await.unwrap();
        rx.written(bytes.len());
        assert_eq!(tx.try_send(sized(1)), Ok(()));
    }

    #[tokio::test]
    async fn a_sender_waiting_on_a_closed_queue_learns_at_once() {
        let (tx, mut rx) = bounded(64, 1_000);
        tx.try_send(sized(900)).unwrap();
        rx.rx.close();
        assert_eq!(
            tx.send_timeout(sized(900), Duration::from_secs(30)).await,
            Err(QueueError::Closed)
        );
    }
}
