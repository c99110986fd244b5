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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::Notify;

use super::Queued;

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// No room (in messages or bytes) in the time given.
    Full,
    /// The connection is gone.
    Closed,
}

/// One queue, shared by its senders and its writer.
///
/// A list under a lock and two wake-ups rather than a tokio channel: every
/// device connection has four of these, nearly always empty, and a tokio
/// channel allocates its first block of slots and two cache-padded halves
/// up front (about 0.8 KiB each). An empty list allocates nothing.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Messages that may wait at once.
    messages: usize,
    /// Encoded bytes that may wait at once.
    bytes: usize,
    /// Woken when a message arrives or the last sender leaves (one waiter:
    /// the writer).
    arrived: Notify,
    /// Woken for every waiting sender when room is made or the writer
    /// leaves.
    drained: Notify,
}

#[derive(Debug, Default)]
struct State {
    waiting: Waiting<Queued>,
    /// Bytes charged: those of the waiting messages and of the ones taken
    /// but not yet written out (see [`Inbox::written`]).
    charged: usize,
    senders: usize,
    /// The writer is gone: nothing will be read any more.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a message of `len` encoded bytes is charged: at least one byte
    /// (so an empty message still counts), at most the whole budget.
    fn cost(&self, len: usize) -> usize {
        len.clamp(1, self.bytes)
    }

    /// Queues `m` if there is room now, all or nothing; gives `m` back
    /// otherwise, so that the sender may wait and try again.
    fn try_push(&self, m: Queued, cost: usize) -> Result<(), (QueueError, Queued)> {
        {
            let mut s = self.lock();
            if s.closed {
                return Err((QueueError::Closed, m));
            }
            if s.waiting.len() >= self.messages || s.charged + cost > self.bytes {
                return Err((QueueError::Full, m));
            }
            s.charged += cost;
            s.waiting.push(m);
        }
        // Stores a permit if the writer is not waiting, so a message queued
        // between its check and its wait still wakes it.
        self.arrived.notify_one();
        Ok(())
    }
}

/// The sending side of a device queue; cheap to clone.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving side, read by the connection's writer.
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
}

/// A queue of at most `messages` messages and `bytes` encoded bytes.
pub fn bounded(messages: usize, bytes: usize) -> (Outbox, Inbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            senders: 1,
            ..State::default()
        }),
        messages: messages.max(1),
        bytes: bytes.max(1),
        arrived: Notify::new(),
        drained: Notify::new(),
    });
    (
        Outbox {
            shared: Arc::clone(&shared),
        },
        Inbox { shared },
    )
}

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.shared.lock().senders += 1;
        Outbox {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut s = self.shared.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            // The writer learns that nothing more will come.
            self.shared.arrived.notify_one();
        }
    }
}

impl Outbox {
    /// Queues `m` if there is room now.
    pub fn try_send(&self, m: Queued) -> Result<(), QueueError> {
        let cost = self.shared.cost(m.encoded_len());
        self.shared.try_push(m, cost).map_err(|(e, _)| e)
    }

    /// Queues `m`, waiting at most `wait` for room in bytes and messages.
    pub async fn send_timeout(&self, m: Queued, wait: Duration) -> Result<(), QueueError> {
        let cost = self.shared.cost(m.encoded_len());
        // The common case, room at once, takes no timer and no waiter.
        let mut m = match self.shared.try_push(m, cost) {
            Ok(()) => return Ok(()),
            Err((QueueError::Closed, _)) => return Err(QueueError::Closed),
            Err((QueueError::Full, m)) => m,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so room made between the check
            // and the wait still wakes this sender.
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            m = match self.shared.try_push(m, cost) {
                Ok(()) => return Ok(()),
                Err((QueueError::Closed, _)) => return Err(QueueError::Closed),
                Err((QueueError::Full, m)) => m,
            };
            tokio::select! {
                () = drained => {}
                () = tokio::time::sleep_until(deadline) => return Err(QueueError::Full),
            }
        }
    }
}

impl Inbox {
    /// The next message and its encoded bytes, or `None` once every sender
    /// is gone and nothing waits. Its bytes stay charged to the queue until
    /// [`Inbox::written`] gives them back. Cancel-safe: a message is taken
    /// only in the poll that returns it.
    pub async fn recv(&mut self) -> Option<(Queued, Vec<u8>)> {
        loop {
            match self.take() {
                Taken::Message(m) => return Some(with_bytes(m)),
                Taken::Ended => return None,
                Taken::Empty => self.shared.arrived.notified().await,
            }
        }
    }

    /// The next message if one is waiting now (see [`Inbox::recv`]).
    pub fn try_recv(&mut self) -> Option<(Queued, Vec<u8>)> {
        match self.take() {
            Taken::Message(m) => Some(with_bytes(m)),
            Taken::Ended | Taken::Empty => None,
        }
    }

    fn take(&self) -> Taken {
        let (taken, was_full) = {
            let mut s = self.shared.lock();
            let was_full = s.waiting.len() >= self.shared.messages;
            let taken = match s.waiting.pop() {
                Some(m) => Taken::Message(m),
                None if s.senders == 0 => Taken::Ended,
                None => Taken::Empty,
            };
            (taken, was_full)
        };
        if was_full {
            // A slot is free (bytes are given back once written).
            self.shared.drained.notify_waiters();
        }
        taken
    }

    /// A message of `len` encoded bytes left for the socket.
    pub fn written(&self, len: usize) {
        let cost = self.shared.cost(len);
        {
            let mut s = self.shared.lock();
            s.charged = s.charged.saturating_sub(cost);
        }
        self.shared.drained.notify_waiters();
    }

    /// Refuses further messages and drops those waiting; senders waiting
    /// for room learn at once.
    fn close(&self) {
        let dropped = {
            let mut s = self.shared.lock();
            s.closed = true;
            std::mem::take(&mut s.waiting)
        };
        drop(dropped);
        self.shared.drained.notify_waiters();
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.close();
    }
}

/// A waiting list grown past this many slots by a burst is freed once the
/// burst has drained, so that a connection that once received a flood does
/// not keep the room for it.
const SHRINK_ABOVE: usize = 16;

/// The messages waiting in a queue, oldest first: no room while empty, and
/// a burst's room given back once it drains. Shared with the relay's
/// viewer queue (`relay::viewer_queue`).
#[derive(Debug)]
pub(crate) struct Waiting<T>(VecDeque<T>);

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Waiting(VecDeque::new())
    }
}

impl<T> Waiting<T> {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn push(&mut self, m: T) {
        self.0.push_back(m);
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let m = self.0.pop_front();
        if self.0.is_empty() && self.0.capacity() > SHRINK_ABOVE {
            self.0 = VecDeque::new();
        }
        m
    }

    /// Slots allocated (for tests of the room an idle queue holds).
    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        self.0.capacity()
    }
}

enum Taken {
    Message(Queued),
    Empty,
    /// Every sender is gone and nothing waits.
    Ended,
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
        let (tx, rx) = bounded(64, 1_000);
        tx.try_send(sized(900)).unwrap();
        rx.close();
        assert_eq!(
            tx.send_timeout(sized(900), Duration::from_secs(30)).await,
            Err(QueueError::Closed)
        );
    }

    #[tokio::test]
    async fn a_queue_is_full_by_count_and_a_waiting_sender_gets_the_slot_the_writer_frees() {
        let (tx, mut rx) = bounded(2, 1 << 20);
        tx.try_send(sized(1)).unwrap();
        tx.try_send(sized(1)).unwrap();
        assert_eq!(tx.try_send(sized(1)), Err(QueueError::Full));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send_timeout(sized(1), Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        // Taking a message frees its slot at once (its bytes stay charged).
        assert!(rx.try_recv().is_some());
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn the_writer_reads_what_waits_then_learns_that_every_sender_is_gone() {
        let (tx, mut rx) = bounded(8, 1 << 20);
        let other = tx.clone();
        tx.try_send(sized(3)).unwrap();
        drop(tx);
        other.try_send(sized(4)).unwrap();
        let pending = tokio::spawn(async move {
            let mut lens = Vec::new();
            while let Some((_, bytes)) = rx.recv().await {
                lens.push(bytes.len());
            }
            lens
        });
        tokio::task::yield_now().await;
        assert!(!pending.is_finished(), "a sender is left: the writer waits");
        drop(other);
        let lens = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("the writer woke when the last sender left")
            .unwrap();
        assert_eq!(lens.len(), 2);
        assert!(lens[0] < lens[1], "in the order they were queued");
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_and_drops_what_waited() {
        let (tx, rx) = bounded(8, 1 << 20);
        tx.try_send(sized(10)).unwrap();
        drop(rx);
        assert_eq!(tx.try_send(sized(1)), Err(QueueError::Closed));
        assert_eq!(tx.shared.lock().waiting.len(), 0);
    }

    #[test]
    fn an_idle_queue_holds_no_room_and_gives_a_burst_s_room_back() {
        let (tx, mut rx) = bounded(256, 1 << 20);
        assert_eq!(tx.shared.lock().waiting.room(), 0);
        for _ in 0..100 {
            tx.try_send(sized(1)).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(tx.shared.lock().waiting.room() <= SHRINK_ABOVE);
    }
}
