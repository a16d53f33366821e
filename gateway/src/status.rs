//! Readiness of the parts `GET /health` reports on. The stages that own them set these
//! flags (the replication stream sets `replication_up` when it is streaming and clears it
//! when the connection drops); health only reads them.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Status {
    replication_up: AtomicBool,
}

impl Status {
    pub fn set_replication_up(&self, up: bool) {
        self.replication_up.store(up, Ordering::Relaxed);
    }

    pub fn replication_up(&self) -> bool {
        self.replication_up.load(Ordering::Relaxed)
    }
}
