//! A viewer's queue: what the relay sends the viewer's task (output,
//! channel and session events), bounded in messages.
//!
//! A list under a lock and two wake-ups rather than a tokio channel, for
//! the same reason as the device's queues (`control::queue`): most viewers
//! are idle most of the time, and a tokio channel allocates a block of 32
//! slots (2.3 KiB of `ToViewer`s) and two cache-padded halves up front. An
//! empty list allocates nothing, and one grown by a burst is freed once it
//! drains. One sender (the session, under its lock) and one receiver (the
//! viewer's task).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::control::queue::Waiting;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Messages that may wait at once.
    messages: usize,
    /// Woken when a message arrives or the sender leaves.
    arrived: Notify,
    /// Woken when a full queue frees a slot or the receiver leaves.
    freed: Notify,
}

struct State<T> {
    waiting: Waiting<T>,
    sender: bool,
    receiver: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue of at most `messages` messages.
pub fn bounded<T>(messages: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            waiting: Waiting::default(),
            sender: true,
            receiver: true,
        }),
        messages: messages.max(1),
        arrived: Notify::new(),
        freed: Notify::new(),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// Nothing is waiting (or, once the sender is gone, ever will be).
#[derive(Debug, PartialEq, Eq)]
pub struct Empty;

impl<T> Sender<T> {
    /// Queues `m` if there is a free slot and the receiver is still there;
    /// gives it back otherwise.
    pub fn try_send(&self, m: T) -> Result<(), T> {
        {
            let mut s = self.shared.lock();
            if !s.receiver || s.waiting.len() >= self.shared.messages {
                return Err(m);
            }
            s.waiting.push(m);
        }
        // Stores a permit if the receiver is not waiting, so a message
        // queued between its check and its wait still wakes it.
        self.shared.arrived.notify_one();
        Ok(())
    }

    /// Free slots now.
    pub fn capacity(&self) -> usize {
        let s = self.shared.lock();
        self.shared.messages.saturating_sub(s.waiting.len())
    }

    /// Resolves once a slot is free, or the receiver is gone.
    pub fn room(&self) -> impl Future<Output = ()> + Send + 'static
    where
        T: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        async move {
            loop {
                // Registered before the check, so a slot freed between the
                // check and the wait still wakes it.
                let freed = shared.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                {
                    let s = shared.lock();
                    if !s.receiver || s.waiting.len() < shared.messages {
                        return;
                    }
                }
                freed.await;
            }
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.lock().sender = false;
        self.shared.arrived.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next message, or `None` once the sender is gone and nothing
    /// waits. Cancel-safe: a message is taken only in the poll that
    /// returns it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.take() {
                Some(Ok(m)) => return Some(m),
                Some(Err(Empty)) => return None,
                None => self.shared.arrived.notified().await,
            }
        }
    }

    /// The next message if one is waiting now.
    pub fn try_recv(&mut self) -> Result<T, Empty> {
        self.take().unwrap_or(Err(Empty))
    }

    /// A message; `Err` when the sender is gone and nothing waits; `None`
    /// when nothing waits yet.
    fn take(&self) -> Option<Result<T, Empty>> {
        let (taken, was_full) = {
            let mut s = self.shared.lock();
            let was_full = s.waiting.len() >= self.shared.messages;
            let taken = match s.waiting.pop() {
                Some(m) => Some(Ok(m)),
                None if !s.sender => Some(Err(Empty)),
                None => None,
            };
            (taken, was_full)
        };
        if was_full {
            self.shared.freed.notify_waiters();
        }
        taken
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut s = self.shared.lock();
            s.receiver = false;
            std::mem::take(&mut s.waiting)
        };
        drop(dropped);
        self.shared.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_idle_queue_holds_no_room_and_gives_a_burst_s_room_back() {
        let (tx, mut rx) = bounded::<u64>(1024);
        assert_eq!(tx.shared.lock().waiting.room(), 0);
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.capacity(), 524);
        for i in 0..500 {
            assert_eq!(rx.try_recv(), Ok(i), "in the order sent");
        }
        assert!(tx.shared.lock().waiting.room() <= 16);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_room_resolves_when_a_slot_frees() {
        let (tx, mut rx) = bounded::<u64>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(3));
        assert_eq!(tx.capacity(), 0);
        let room = tokio::spawn(tx.room());
        tokio::task::yield_now().await;
        assert!(!room.is_finished(), "no slot is free yet");
        assert_eq!(rx.try_recv(), Ok(1));
        tokio::time::timeout(Duration::from_secs(5), room)
            .await
            .expect("room resolved when a slot freed")
            .unwrap();
        tx.try_send(3).unwrap();
    }

    #[tokio::test]
    async fn the_receiver_reads_what_waits_then_learns_the_sender_is_gone() {
        let (tx, mut rx) = bounded::<u64>(8);
        tx.try_send(7).unwrap();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await {
                got.push(m);
            }
            got
        });
        tokio::task::yield_now().await;
        tx.try_send(8).unwrap();
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the receiver woke when the sender left")
            .unwrap();
        assert_eq!(got, vec![7, 8]);
    }

    #[tokio::test]
    async fn without_a_receiver_sends_fail_and_room_resolves_at_once() {
        let (tx, rx) = bounded::<u64>(1);
        tx.try_send(1).unwrap();
        drop(rx);
        assert_eq!(tx.try_send(2), Err(2));
        tokio::time::timeout(Duration::from_secs(5), tx.room())
            .await
            .expect("room resolves when the receiver is gone");
    }
}
