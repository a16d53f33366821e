//! Ripple: a realtime gateway for PostgreSQL.
//!
//! The data flow, one module per stage:
//!
//! ```text
//! replication  (the walsender connection, slot, standby status)
//!   -> decode   (pgoutput bytes -> typed changes; pure, no I/O)
//!   -> authorize (which subscribers may see this row, asked of the database's own RLS)
//!   -> realtime (fan out to channels; one task owns each socket)
//! http         (REST/RPC under the caller's JWT, health, metrics, the socket upgrade)
//! ```
//!
//! `migrate` puts the chat database in place, `embedded` runs a local PostgreSQL for
//! `ripple dev` and the tests.

pub mod auth;
pub mod authorize;
pub mod change;
pub mod config;
pub mod db;
pub mod embedded;
pub mod migrate;

/// Publication the chat tables are added to, and that `ripple serve` streams.
pub const DEFAULT_PUBLICATION: &str = "ripple";
/// Logical replication slot `ripple serve` consumes.
pub const DEFAULT_SLOT: &str = "ripple";

pub mod app;
pub mod decode;
pub mod http;
pub mod metrics;
pub mod realtime;
pub mod replication;
pub mod server;
pub mod status;
pub mod tail;
