//! How the rest of Ripple talks to a socket's task: a bounded queue that never blocks the
//! sender. When it is full the socket is flagged as overflowed and its task tells the client
//! and disconnects it; nothing is silently skipped and no producer ever waits on a client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use super::protocol::{BroadcastOut, ServerMessage};

/// A message queued for one socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    Message(Arc<ServerMessage>),
    Broadcast(Arc<BroadcastOut>),
}

#[derive(Debug, Default)]
pub(crate) struct Overflow {
    pub(crate) flagged: AtomicBool,
    pub(crate) notify: Notify,
    /// Messages that could not be queued (counted for the goodbye message).
    pub(crate) dropped: AtomicU64,
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
    pub(crate) fn new(id: u64, capacity: usize) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                id,
                tx,
                overflow: Arc::new(Overflow::default()),
            },
            rx,
        )
    }

    #[cfg(test)]
    pub(crate) fn new_for_test(capacity: usize) -> (Self, mpsc::Receiver<Outbound>) {
        Self::new(0, capacity)
    }

    /// Queues without waiting.
    pub fn push(&self, m: Outbound) -> Push {
        if self.overflow.flagged.load(Ordering::Relaxed) {
            self.overflow.dropped.fetch_add(1, Ordering::Relaxed);
            return Push::Overflowed;
        }
        match self.tx.try_send(m) {
            Ok(()) => Push::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.overflow.flagged.swap(true, Ordering::Relaxed) {
                    self.overflow.notify.notify_one();
                }
                Push::Overflowed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Closed,
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
        let (h, mut rx) = SocketHandle::new(1, 2);
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
        let (h2, rx2) = SocketHandle::new(2, 1);
        drop(rx2);
        assert_eq!(h2.push(msg()), Push::Closed);
    }
}
