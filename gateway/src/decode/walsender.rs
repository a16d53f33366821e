//! The walsender's CopyData payloads in a replication stream: XLogData frames (which carry
//! one pgoutput message each) and primary keepalives.

use super::pgoutput::{DecodeError, PG_EPOCH_OFFSET_MICROS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFrame<'a> {
    /// `w`: WAL data; for logical replication, one output plugin message.
    XLogData {
        wal_start: u64,
        wal_end: u64,
        /// Server clock when sent, Unix microseconds.
        send_time_micros: i64,
        data: &'a [u8],
    },
    /// `k`: the server's position and whether it wants an answer now.
    Keepalive {
        wal_end: u64,
        send_time_micros: i64,
        reply_requested: bool,
    },
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Parses one CopyData payload received in CopyBoth mode.
pub fn parse_frame(buf: &[u8]) -> Result<WalFrame<'_>, DecodeError> {
    let (&tag, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
    let need = |n: usize| {
        if rest.len() < n {
            Err(DecodeError::Truncated {
                tag,
                needed: n - rest.len(),
                at: 1 + rest.len(),
            })
        } else {
            Ok(())
        }
    };
    match tag {
        b'w' => {
            need(24)?;
            Ok(WalFrame::XLogData {
                wal_start: be_u64(&rest[0..]),
                wal_end: be_u64(&rest[8..]),
                send_time_micros: (be_u64(&rest[16..]) as i64)
                    .saturating_add(PG_EPOCH_OFFSET_MICROS),
                data: &rest[24..],
            })
        }
        b'k' => {
            need(17)?;
            if rest.len() > 17 {
                return Err(DecodeError::TrailingBytes {
                    tag,
                    extra: rest.len() - 17,
                });
            }
            Ok(WalFrame::Keepalive {
                wal_end: be_u64(&rest[0..]),
                send_time_micros: (be_u64(&rest[8..]) as i64)
                    .saturating_add(PG_EPOCH_OFFSET_MICROS),
                reply_requested: rest[16] == 1,
            })
        }
        other => Err(DecodeError::UnknownTag(other)),
    }
}

/// Encodes a standby status update (`r`): positions written, flushed and applied, our clock
/// (Unix microseconds) and whether we want the server to answer at once.
pub fn standby_status_update(
    written: u64,
    flushed: u64,
    applied: u64,
    now_unix_micros: i64,
    reply_requested: bool,
) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[0] = b'r';
    out[1..9].copy_from_slice(&written.to_be_bytes());
    out[9..17].copy_from_slice(&flushed.to_be_bytes());
    out[17..25].copy_from_slice(&applied.to_be_bytes());
    out[25..33].copy_from_slice(&(now_unix_micros - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
    out[33] = reply_requested as u8;
    out
}
