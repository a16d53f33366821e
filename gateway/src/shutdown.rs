//! Graceful shutdown, as mini-redis does it: one signal that every HTTP connection and
//! socket task watches, and a completion channel each of them holds a sender of, so that
//! when the last one is dropped everything has finished. The server waits for that, up to a
//! deadline, before it stops the replication stream.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Held by a task that must finish before the process stops; tells it when to.
#[derive(Clone)]
pub struct Shutdown {
    signal: watch::Receiver<bool>,
    /// Dropped with the task: the drain counts the senders still alive.
    _running: mpsc::Sender<()>,
}

impl Shutdown {
    /// Resolves once shutdown is asked for (at once if it already was).
    pub async fn requested(&mut self) {
        // An error means the drain is gone: stop as well.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }
}

/// The server's side: hands out [`Shutdown`]s, then asks them to stop and waits.
pub struct Drain {
    signal: watch::Sender<bool>,
    running: mpsc::Sender<()>,
    finished: mpsc::Receiver<()>,
}

impl Default for Drain {
    fn default() -> Self {
        let (running, finished) = mpsc::channel(1);
        Self {
            signal: watch::channel(false).0,
            running,
            finished,
        }
    }
}

impl Drain {
    pub fn watcher(&self) -> Shutdown {
        Shutdown {
            signal: self.signal.subscribe(),
            _running: self.running.clone(),
        }
    }

    /// Asks every task to finish and waits for the last, at most `deadline`. True when all
    /// finished in time.
    pub async fn finish(self, deadline: Duration) -> bool {
        let Self {
            signal,
            running,
            mut finished,
        } = self;
        signal.send_replace(true);
        drop(running);
        // Nothing is ever sent: `None` comes when the last sender is dropped.
        tokio::time::timeout(deadline, finished.recv())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finish_waits_for_every_watcher_and_no_longer_than_the_deadline() {
        let drain = Drain::default();
        let mut quick = drain.watcher();
        tokio::spawn(async move {
            quick.requested().await;
        });
        let mut slow = drain.watcher();
        let slow_task = tokio::spawn(async move {
            slow.requested().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        assert!(drain.finish(Duration::from_secs(5)).await);
        assert!(slow_task.is_finished());

        let drain = Drain::default();
        let stuck = drain.watcher();
        let started = std::time::Instant::now();
        assert!(!drain.finish(Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(stuck);
    }
}
