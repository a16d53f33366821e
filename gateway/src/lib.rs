//! Ripple: a realtime gateway for PostgreSQL.
//!
//! The data flow, one module per stage (`server` wires them together):
//!
//! ```text
//! replication  (the walsender connection, slot, standby status; groups into transactions)
//!   -> decode   (pgoutput bytes -> typed messages and JSON values; pure, no I/O)
//!   -> authorize (which identities may see each row, asked of the database's own RLS)
//!   -> realtime (fan out to channels; one task owns each socket)
//! http         (REST/RPC under the caller's JWT, health, metrics, the socket upgrade,
//!               and /auth/v1, the sign-in service in `auth::service`)
//! ```
//!
//! Around them: `change` (the typed change model the stages share), `auth` (JWTs of every
//! issuer, and sign-up/sign-in/refresh/sign-out compatible with Supabase Auth), `db`
//! (connections, request claims), `app`/`config` (shared state and settings), `metrics` and
//! `status` (what operators see), `migrate` (puts the chat database in place), `embedded`
//! (a local PostgreSQL for `ripple dev` and the tests), `tail` (`ripple tail`).

pub mod app;
pub mod auth;
pub mod authorize;
pub mod backoff;
pub mod change;
pub mod config;
pub mod db;
pub mod decode;
pub mod embedded;
pub mod http;
pub mod metrics;
pub mod migrate;
pub mod realtime;
pub mod replication;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod tail;

/// Every row of the change stream is allocated by the replication task (its JSON values
/// and column names) and freed by whichever task delivered it last, on another thread.
/// glibc's malloc handles that producer/consumer pattern badly (freed chunks pile up in
/// the producer's arena, which then sorts and consolidates them under its lock: about
/// half the stream's CPU in the profile); mimalloc frees to the owning thread's page
/// without a lock. Here, in the library, so every binary that runs Ripple (the gateway,
/// the tests, the benchmarks) uses the allocator it is measured with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Publication the chat tables are added to, and that `ripple serve` streams.
pub const DEFAULT_PUBLICATION: &str = "ripple";
/// Logical replication slot `ripple serve` consumes.
pub const DEFAULT_SLOT: &str = "ripple";
