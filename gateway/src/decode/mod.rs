//! pgoutput decoding: bytes in, typed messages out. Pure: no I/O, no tokio, and nothing
//! from the rest of the crate, so the fuzz target can compile these files on their own.
//!
//! - [`walsender`]: the CopyData frames of a replication stream (XLogData, keepalive).
//! - [`pgoutput`]: the logical replication messages inside XLogData (protocols 1 and 2).
//! - [`value`]: a column's text to natural JSON by its type; [`types`] says which type;
//!   [`json`] reads json/jsonb documents.

pub mod json;
pub mod pgoutput;
pub mod types;
pub mod value;
pub mod walsender;

pub use pgoutput::{parse, Cell, DecodeError, OldTuple, PgOutput};
pub use types::{CatalogType, TypeInfo};
pub use value::{binary_to_json, text_to_json, ValueKind};
pub use walsender::{parse_frame, standby_status_update, WalFrame};

#[cfg(test)]
mod tests;
