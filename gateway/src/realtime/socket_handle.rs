//! How the rest of Ripple talks to a socket's task: a bounded queue that never blocks the
//! sender. When it is full the socket is flagged as overflowed and its task tells the client
//! and disconnects it; nothing is silently skipped and no producer ever waits on a client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::protocol::{BroadcastOut, ServerMessage};

/// A message queued for one socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    Message(Arc<ServerMessage>),
    Broadcast(Arc<BroadcastOut>),
}

impl Outbound {
    /// Roughly the memory it holds while queued (what the byte bound counts).
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                Outbound::Message(m) => m.topic.len() + m.payload.len(),
                Outbound::Broadcast(b) => {
                    b.topic.len()
                        + b.event.len()
                        + match &b.body {
                            super::protocol::BroadcastBody::Json(j) => j.len(),
                            super::protocol::BroadcastBody::Binary(v) => v.len(),
                        }
                }
            }
    }
}

/// The queue one socket's task drains, and what says it overflowed. One allocation per
/// socket: an idle socket holds an empty `VecDeque` (no buffer), where tokio's bounded
/// `mpsc` preallocates a 32-slot block and cache-line-padded state (about 1 KiB a socket,
/// an eighth of the per-socket budget). Producers never wait: they lock, push and wake.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    messages: Mutex<VecDeque<Outbound>>,
    /// Messages it may hold.
    capacity: usize,
    /// Wakes the socket's task: a message was queued.
    ready: Notify,
    /// The socket's task has ended (its `Outbox` is gone).
    closed: AtomicBool,
    pub(crate) flagged: AtomicBool,
    /// Wakes the socket's task: the queue overflowed.
    pub(crate) overflowed: Notify,
    /// Messages that could not be queued (counted for the goodbye message).
    pub(crate) dropped: AtomicU64,
    /// Bytes queued now, against `max_bytes`: a few huge messages overflow a queue as
    /// surely as many small ones.
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) max_bytes: usize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        // Nothing panics while holding it; a poisoned queue is still a valid queue.
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pop(&self) -> Option<Outbound> {
        let mut messages = self.lock();
        let m = messages.pop_front();
        if messages.is_empty() && messages.capacity() > RETAINED_SLOTS {
            *messages = VecDeque::new();
        }
        m
    }
}

#[derive(Debug, Clone)]
pub struct SocketHandle {
    pub id: u64,
    pub(crate) queue: Arc<Queue>,
}

/// The socket task's end of its queue.
#[derive(Debug)]
pub struct Outbox {
    queue: Arc<Queue>,
}

impl Outbox {
    /// The next message, waiting for one. Cancel-safe: a message is taken only when this
    /// returns it.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            // Registered before looking, so a push between the look and the wait still
            // wakes us (`notify_one` leaves a permit when nobody waits).
            let ready = self.queue.ready.notified();
            if let Some(m) = self.queue.pop() {
                return m;
            }
            ready.await;
        }
    }

    /// The next message, if one is queued. An emptied queue gives its buffer back: a burst
    /// must not leave an idle socket holding room for it.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.queue.pop()
    }
}

/// Slots an empty queue may keep (a socket's usual few messages in flight).
const RETAINED_SLOTS: usize = 8;

impl Drop for Outbox {
    fn drop(&mut self) {
        // What was queued for a socket that is gone is dropped now, not when the last
        // handle (a subscription, a presence entry) lets go.
        let dropped = {
            let mut messages = self.queue.lock();
            self.queue.closed.store(true, Ordering::Release);
            std::mem::take(&mut *messages)
        };
        drop(dropped);
    }
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full: the socket is being disconnected.
    Overflowed,
    /// The socket is gone.
    Closed,
}

impl SocketHandle {
    pub(crate) fn new(id: u64, capacity: usize, max_bytes: usize) -> (Self, Outbox) {
        let queue = Arc::new(Queue {
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            ..Queue::default()
        });
        (
            Self {
                id,
                queue: queue.clone(),
            },
            Outbox { queue },
        )
    }

    #[cfg(test)]
    pub(crate) fn new_for_test(capacity: usize) -> (Self, Outbox) {
        Self::new(0, capacity, usize::MAX)
    }

    /// The socket task took `m` off the queue.
    pub(crate) fn taken(&self, m: &Outbound) {
        self.queue
            .queued_bytes
            .fetch_sub(m.size(), Ordering::Relaxed);
    }

    fn flag_overflow(&self) -> Push {
        self.queue.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.queue.flagged.swap(true, Ordering::Relaxed) {
            self.queue.overflowed.notify_one();
        }
        Push::Overflowed
    }

    /// Queues without waiting.
    pub fn push(&self, m: Outbound) -> Push {
        if self.queue.flagged.load(Ordering::Relaxed) {
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
            return Push::Overflowed;
        }
        let size = m.size();
        let before = self.queue.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.queue.max_bytes {
            self.queue.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return self.flag_overflow();
        }
        let full = {
            let mut messages = self.queue.lock();
            // Under the lock: an `Outbox` dropped meanwhile has emptied the queue for good.
            if self.is_closed() {
                return Push::Closed;
            }
            if messages.len() >= self.queue.capacity {
                true
            } else {
                messages.push_back(m);
                false
            }
        };
        if full {
            self.queue.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return self.flag_overflow();
        }
        self.queue.ready.notify_one();
        Push::Queued
    }

    /// The socket's task has ended.
    pub fn is_closed(&self) -> bool {
        self.queue.closed.load(Ordering::Acquire)
    }

    /// Messages that can be queued now without overflowing.
    pub fn room(&self) -> usize {
        if self.is_overflowed() || self.is_closed() {
            0
        } else {
            let queued = self.queue.lock().len();
            self.queue.capacity.saturating_sub(queued)
        }
    }

    pub fn is_overflowed(&self) -> bool {
        self.queue.flagged.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Outbound {
        Outbound::Message(Arc::new(ServerMessage {
            join_ref: None,
            r#ref: None,
            topic: "t".into(),
            event: "e",
            payload: "{}".into(),
        }))
    }

    #[tokio::test]
    async fn a_full_queue_flags_the_socket_instead_of_blocking() {
        let (h, mut rx) = SocketHandle::new(1, 2, usize::MAX);
        assert_eq!(h.push(msg()), Push::Queued);
        assert_eq!(h.push(msg()), Push::Queued);
        assert!(!h.is_overflowed());
        assert_eq!(h.push(msg()), Push::Overflowed);
        assert!(h.is_overflowed());
        // The socket task is woken even though it was not waiting at the time.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            h.queue.overflowed.notified(),
        )
        .await
        .expect("overflow notification");
        // Once flagged, nothing more is queued even if room appears.
        rx.recv().await;
        assert_eq!(h.push(msg()), Push::Overflowed);
        assert_eq!(h.queue.dropped.load(Ordering::Relaxed), 2);
        drop(rx);
        let (h2, rx2) = SocketHandle::new(2, 1, usize::MAX);
        drop(rx2);
        assert_eq!(h2.push(msg()), Push::Closed);
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_too() {
        let one = msg().size();
        let (h, _rx) = SocketHandle::new(1, 100, 2 * one);
        assert_eq!(h.push(msg()), Push::Queued);
        assert_eq!(h.push(msg()), Push::Queued);
        // Room for messages, none for their bytes.
        assert_eq!(h.push(msg()), Push::Overflowed);
        // What the socket writes frees its bytes.
        let (h, mut rx) = SocketHandle::new(1, 100, 2 * one);
        for _ in 0..10 {
            assert_eq!(h.push(msg()), Push::Queued);
            h.taken(&rx.try_recv().unwrap());
        }
        assert!(!h.is_overflowed());
    }

    #[tokio::test]
    async fn a_waiting_socket_is_woken_by_a_push_and_nothing_is_lost_to_a_cancelled_wait() {
        let (h, mut rx) = SocketHandle::new(1, 16, usize::MAX);
        // Waiting first, pushed later: the wait ends with the message.
        let waiter = tokio::spawn(async move {
            let m = rx.recv().await;
            (rx, m)
        });
        tokio::task::yield_now().await;
        assert_eq!(h.push(msg()), Push::Queued);
        let (mut rx, _) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        // A wait dropped half way (a select that took another branch) takes nothing
        // with it: the message pushed after it stays queued for the next wait.
        use futures_util::FutureExt;
        assert!(rx.recv().now_or_never().is_none(), "nothing queued yet");
        {
            let mut waiting = Box::pin(rx.recv());
            assert!(waiting.as_mut().now_or_never().is_none());
            assert_eq!(h.push(msg()), Push::Queued);
        }
        assert!(
            rx.try_recv().is_some(),
            "the message outlives the dropped wait"
        );
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_drained_queue_gives_its_burst_room_back_and_a_closed_one_refuses() {
        let (h, mut rx) = SocketHandle::new(1, 1000, usize::MAX);
        for _ in 0..100 {
            assert_eq!(h.push(msg()), Push::Queued);
        }
        assert!(h.queue.lock().capacity() >= 100);
        assert_eq!(h.room(), 900);
        while let Some(m) = rx.try_recv() {
            h.taken(&m);
        }
        assert_eq!(h.queue.lock().capacity(), 0, "the burst's buffer is freed");
        assert_eq!(h.room(), 1000);
        assert!(!h.is_closed());
        for _ in 0..5 {
            h.push(msg());
        }
        drop(rx);
        assert!(h.is_closed());
        assert!(
            h.queue.lock().is_empty(),
            "queued messages go with the socket"
        );
        assert_eq!(h.push(msg()), Push::Closed);
        assert_eq!(h.room(), 0);
    }
}
