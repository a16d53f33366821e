//! How the rest of Ripple talks to a socket's task: a bounded queue that never blocks the
//! sender. When it is full the socket is flagged as overflowed and its task tells the client
//! and disconnects it; nothing is silently skipped and no producer ever waits on a client.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

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

#[derive(Debug, Default)]
pub(crate) struct Overflow {
    pub(crate) flagged: AtomicBool,
    pub(crate) notify: Notify,
    /// Messages that could not be queued (counted for the goodbye message).
    pub(crate) dropped: AtomicU64,
    /// Bytes queued now, against `max_bytes`: a few huge messages overflow a queue as
    /// surely as many small ones.
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) max_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct SocketHandle {
    pub id: u64,
    tx: mpsc::Sender<Outbound>,
    pub(crate) overflow: Arc<Overflow>,
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
    pub(crate) fn new(
        id: u64,
        capacity: usize,
        max_bytes: usize,
    ) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                id,
                tx,
                overflow: Arc::new(Overflow {
                    max_bytes: max_bytes.max(1),
                    ..Overflow::default()
                }),
            },
            rx,
        )
    }

    #[cfg(test)]
    pub(crate) fn new_for_test(capacity: usize) -> (Self, mpsc::Receiver<Outbound>) {
        Self::new(0, capacity, usize::MAX)
    }

    /// The socket task took `m` off the queue.
    pub(crate) fn taken(&self, m: &Outbound) {
        self.overflow
            .queued_bytes
            .fetch_sub(m.size(), Ordering::Relaxed);
    }

    fn flag_overflow(&self) -> Push {
        self.overflow.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.overflow.flagged.swap(true, Ordering::Relaxed) {
            self.overflow.notify.notify_one();
        }
        Push::Overflowed
    }

    /// Queues without waiting.
    pub fn push(&self, m: Outbound) -> Push {
        if self.overflow.flagged.load(Ordering::Relaxed) {
            self.overflow.dropped.fetch_add(1, Ordering::Relaxed);
            return Push::Overflowed;
        }
        let size = m.size();
        let before = self
            .overflow
            .queued_bytes
            .fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.overflow.max_bytes {
            self.overflow
                .queued_bytes
                .fetch_sub(size, Ordering::Relaxed);
            return self.flag_overflow();
        }
        match self.tx.try_send(m) {
            Ok(()) => Push::Queued,
            Err(e) => {
                self.overflow
                    .queued_bytes
                    .fetch_sub(size, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => self.flag_overflow(),
                    mpsc::error::TrySendError::Closed(_) => Push::Closed,
                }
            }
        }
    }

    /// The socket's task has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Messages that can be queued now without overflowing.
    pub fn room(&self) -> usize {
        if self.is_overflowed() {
            0
        } else {
            self.tx.capacity()
        }
    }

    pub fn is_overflowed(&self) -> bool {
        self.overflow.flagged.load(Ordering::Relaxed)
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
            h.overflow.notify.notified(),
        )
        .await
        .expect("overflow notification");
        // Once flagged, nothing more is queued even if room appears.
        rx.recv().await.unwrap();
        assert_eq!(h.push(msg()), Push::Overflowed);
        assert_eq!(h.overflow.dropped.load(Ordering::Relaxed), 2);
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
}
