//! pgoutput logical replication messages (protocol versions 1 and 2), parsed from the
//! payload of an XLogData frame. Values borrow from the input buffer: a tuple's column
//! text is a slice of the frame, converted to JSON later and only once.
//!
//! Reference: PostgreSQL's "Logical Replication Message Formats" chapter.

use std::fmt;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutput<'a> {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert<'a>),
    Update(Update<'a>),
    Delete(Delete<'a>),
    Truncate(Truncate),
    Message(LogicalMessage<'a>),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record (the transaction's final LSN).
    pub final_lsn: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_micros: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: u64,
    /// End LSN of the commit record: the position to confirm once it is processed.
    pub end_lsn: u64,
    /// Microseconds since the Unix epoch.
    pub commit_time_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Present inside a streamed transaction block (protocol 2).
    pub xid: Option<u32>,
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    pub xid: Option<u32>,
    pub oid: u32,
    pub namespace: String,
    pub name: String,
}

/// One column of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Null,
    /// An unchanged TOASTed value the server did not send: the old value still stands, but
    /// we do not know it.
    UnchangedToast,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

pub type Tuple<'a> = Vec<Cell<'a>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert<'a> {
    pub xid: Option<u32>,
    pub relation: u32,
    pub new: Tuple<'a>,
}

/// Which old values an UPDATE or DELETE carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: the replica identity key columns (other columns null).
    Key(Tuple<'a>),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple<'a>),
}

impl<'a> OldTuple<'a> {
    pub fn tuple(&self) -> &Tuple<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<'a> {
    pub xid: Option<u32>,
    pub relation: u32,
    pub old: Option<OldTuple<'a>>,
    pub new: Tuple<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete<'a> {
    pub xid: Option<u32>,
    pub relation: u32,
    pub old: OldTuple<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<u32>,
    /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relations: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage<'a> {
    pub xid: Option<u32>,
    pub transactional: bool,
    pub lsn: u64,
    pub prefix: String,
    pub content: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: u32,
    pub first_segment: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: u32,
    pub flags: u8,
    pub commit_lsn: u64,
    pub end_lsn: u64,
    pub commit_time_micros: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: u32,
    /// Equal to `xid` when the whole transaction aborts, else the aborted subtransaction.
    pub subxid: u32,
}

/// Why a message could not be parsed. Offsets help when a fuzzer or a server surprises us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnknownTag(u8),
    Truncated { tag: u8, needed: usize, at: usize },
    NotUtf8 { tag: u8, at: usize },
    UnterminatedString { tag: u8, at: usize },
    UnknownTupleKind { tag: u8, kind: u8, at: usize },
    UnknownCellKind { tag: u8, kind: u8, at: usize },
    TrailingBytes { tag: u8, extra: usize },
    Negative { tag: u8, what: &'static str },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty pgoutput message"),
            DecodeError::UnknownTag(t) => {
                write!(f, "unknown pgoutput message tag {:?}", *t as char)
            }
            DecodeError::Truncated { tag, needed, at } => write!(
                f,
                "pgoutput message {:?} truncated: needed {needed} more byte(s) at offset {at}",
                *tag as char
            ),
            DecodeError::NotUtf8 { tag, at } => {
                write!(
                    f,
                    "pgoutput message {:?}: string at offset {at} is not UTF-8",
                    *tag as char
                )
            }
            DecodeError::UnterminatedString { tag, at } => write!(
                f,
                "pgoutput message {:?}: string at offset {at} has no terminator",
                *tag as char
            ),
            DecodeError::UnknownTupleKind { tag, kind, at } => write!(
                f,
                "pgoutput message {:?}: unknown tuple marker {:?} at offset {at}",
                *tag as char, *kind as char
            ),
            DecodeError::UnknownCellKind { tag, kind, at } => write!(
                f,
                "pgoutput message {:?}: unknown column kind {:?} at offset {at}",
                *tag as char, *kind as char
            ),
            DecodeError::TrailingBytes { tag, extra } => write!(
                f,
                "pgoutput message {:?} has {extra} unexpected trailing byte(s)",
                *tag as char
            ),
            DecodeError::Negative { tag, what } => {
                write!(f, "pgoutput message {:?}: negative {what}", *tag as char)
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    tag: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.len() - self.pos;
        if rest < n {
            return Err(DecodeError::Truncated {
                tag: self.tag,
                needed: n - rest,
                at: self.pos,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A PostgreSQL timestamp (microseconds since 2000-01-01) as Unix microseconds.
    fn timestamp(&mut self) -> Result<i64, DecodeError> {
        Ok((self.u64()? as i64).saturating_add(PG_EPOCH_OFFSET_MICROS))
    }

    fn cstring(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                tag: self.tag,
                at: start,
            })?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| DecodeError::NotUtf8 {
            tag: self.tag,
            at: start,
        })?;
        self.pos += end + 1;
        Ok(s.to_owned())
    }

    fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(DecodeError::Negative {
                tag: self.tag,
                what,
            });
        }
        Ok(n as usize)
    }

    fn tuple(&mut self) -> Result<Tuple<'a>, DecodeError> {
        let n = self.count("column count")?;
        // Each column takes at least one byte: never reserve more than the input can hold.
        let mut cells = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            let at = self.pos;
            let kind = self.u8()?;
            cells.push(match kind {
                b'n' => Cell::Null,
                b'u' => Cell::UnchangedToast,
                b't' | b'b' => {
                    let len = self.i32()?;
                    if len < 0 {
                        return Err(DecodeError::Negative {
                            tag: self.tag,
                            what: "value length",
                        });
                    }
                    let v = self.take(len as usize)?;
                    if kind == b't' {
                        Cell::Text(v)
                    } else {
                        Cell::Binary(v)
                    }
                }
                other => {
                    return Err(DecodeError::UnknownCellKind {
                        tag: self.tag,
                        kind: other,
                        at,
                    })
                }
            });
        }
        Ok(cells)
    }

    /// `K`/`O` old tuple, or `N` new tuple marker.
    fn old_tuple(&mut self, marker: u8, at: usize) -> Result<OldTuple<'a>, DecodeError> {
        match marker {
            b'K' => Ok(OldTuple::Key(self.tuple()?)),
            b'O' => Ok(OldTuple::Full(self.tuple()?)),
            other => Err(DecodeError::UnknownTupleKind {
                tag: self.tag,
                kind: other,
                at,
            }),
        }
    }

    fn expect_new(&mut self) -> Result<Tuple<'a>, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            b'N' => self.tuple(),
            other => Err(DecodeError::UnknownTupleKind {
                tag: self.tag,
                kind: other,
                at,
            }),
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                tag: self.tag,
                extra: self.buf.len() - self.pos,
            })
        }
    }
}

/// Parses one pgoutput message. `in_stream_block` is true between Stream Start and Stream
/// Stop (protocol 2), where data messages carry the (sub)transaction id first.
pub fn parse(buf: &[u8], in_stream_block: bool) -> Result<PgOutput<'_>, DecodeError> {
    let (&tag, _) = buf.split_first().ok_or(DecodeError::Empty)?;
    let mut r = Reader { buf, pos: 1, tag };
    let xid = |r: &mut Reader<'_>| -> Result<Option<u32>, DecodeError> {
        if in_stream_block {
            Ok(Some(r.u32()?))
        } else {
            Ok(None)
        }
    };
    let msg = match tag {
        b'B' => PgOutput::Begin(Begin {
            final_lsn: r.u64()?,
            commit_time_micros: r.timestamp()?,
            xid: r.u32()?,
        }),
        b'C' => PgOutput::Commit(Commit {
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_time_micros: r.timestamp()?,
        }),
        b'O' => PgOutput::Origin(Origin {
            commit_lsn: r.u64()?,
            name: r.cstring()?,
        }),
        b'R' => {
            let xid = xid(&mut r)?;
            let oid = r.u32()?;
            let namespace = r.cstring()?;
            let name = r.cstring()?;
            let replica_identity = r.u8()?;
            let n = r.count("column count")?;
            let mut columns = Vec::with_capacity(n.min(buf.len()));
            for _ in 0..n {
                let flags = r.u8()?;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name: r.cstring()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            PgOutput::Relation(Relation {
                xid,
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => PgOutput::Type(TypeMessage {
            xid: xid(&mut r)?,
            oid: r.u32()?,
            namespace: r.cstring()?,
            name: r.cstring()?,
        }),
        b'I' => {
            let xid = xid(&mut r)?;
            let relation = r.u32()?;
            let new = r.expect_new()?;
            PgOutput::Insert(Insert { xid, relation, new })
        }
        b'U' => {
            let xid = xid(&mut r)?;
            let relation = r.u32()?;
            let at = r.pos;
            let old = match r.u8()? {
                b'N' => None,
                marker => {
                    let old = r.old_tuple(marker, at)?;
                    let at = r.pos;
                    if r.u8()? != b'N' {
                        return Err(DecodeError::UnknownTupleKind {
                            tag,
                            kind: buf[at],
                            at,
                        });
                    }
                    Some(old)
                }
            };
            let new = r.tuple()?;
            PgOutput::Update(Update {
                xid,
                relation,
                old,
                new,
            })
        }
        b'D' => {
            let xid = xid(&mut r)?;
            let relation = r.u32()?;
            let at = r.pos;
            let marker = r.u8()?;
            let old = r.old_tuple(marker, at)?;
            PgOutput::Delete(Delete { xid, relation, old })
        }
        b'T' => {
            let xid = xid(&mut r)?;
            let n = r.i32()?;
            if n < 0 {
                return Err(DecodeError::Negative {
                    tag,
                    what: "relation count",
                });
            }
            let options = r.u8()?;
            let n = n as usize;
            let mut relations = Vec::with_capacity(n.min(buf.len() / 4));
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            PgOutput::Truncate(Truncate {
                xid,
                options,
                relations,
            })
        }
        b'M' => {
            let xid = xid(&mut r)?;
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstring()?;
            let len = r.i32()?;
            if len < 0 {
                return Err(DecodeError::Negative {
                    tag,
                    what: "content length",
                });
            }
            let content = r.take(len as usize)?;
            PgOutput::Message(LogicalMessage {
                xid,
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content,
            })
        }
        b'S' => PgOutput::StreamStart(StreamStart {
            xid: r.u32()?,
            first_segment: r.u8()? == 1,
        }),
        b'E' => PgOutput::StreamStop,
        b'c' => PgOutput::StreamCommit(StreamCommit {
            xid: r.u32()?,
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_time_micros: r.timestamp()?,
        }),
        b'A' => {
            let xid = r.u32()?;
            let subxid = r.u32()?;
            // Protocol 4 appends the abort LSN and time; we ask for at most 2, but a longer
            // message is still a valid abort of the same (sub)transaction.
            r.pos = buf.len().min(r.pos + 16);
            PgOutput::StreamAbort(StreamAbort { xid, subxid })
        }
        other => return Err(DecodeError::UnknownTag(other)),
    };
    r.finish()?;
    Ok(msg)
}
