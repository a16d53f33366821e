//! What `GET /health` reports beside the replication stream's connection state (which it
//! reads from the stream's own handle): problems the pipeline's stages find and set here.

use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Status {
    /// Why transactions cannot be authorized right now (they are being retried), if so.
    authorization_problem: Mutex<Option<String>>,
    /// The last time the replication slot was lost and recreated, and how often.
    slot_lost: Mutex<Option<(String, u64)>>,
    /// A replication setting that keeps commits from finishing, if any.
    replication_problem: Mutex<Option<String>>,
}

impl Status {
    /// The pipeline cannot authorize (and so holds back) transactions, and why; `None`
    /// once it can again.
    pub fn set_authorization_problem(&self, problem: Option<String>) {
        *self
            .authorization_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// The slot was lost (for the `count`th time) at `at` (RFC 3339).
    pub fn set_slot_lost(&self, at: String, count: u64) {
        *self.slot_lost.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, count));
    }

    pub fn slot_lost(&self) -> Option<(String, u64)> {
        self.slot_lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_replication_problem(&self, problem: Option<String>) {
        *self
            .replication_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    pub fn replication_problem(&self) -> Option<String> {
        self.replication_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn authorization_problem(&self) -> Option<String> {
        self.authorization_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
