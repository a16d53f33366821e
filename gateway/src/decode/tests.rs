//! Byte fixtures for every message kind, laid out as the server sends them.

use super::pgoutput::*;
use super::walsender::*;

/// Builds message bytes the way the walsender writes them (network byte order).
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn tag(t: u8) -> Self {
        B(vec![t])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: &str) -> Self {
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        self
    }
    fn text(mut self, v: &str) -> Self {
        self.0.push(b't');
        self.0.extend_from_slice(&(v.len() as i32).to_be_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// 2024-01-01T00:00:00Z in PostgreSQL's epoch (microseconds since 2000-01-01).
const PG_TS: u64 = 757_382_400_000_000;
const UNIX_TS: i64 = 1_704_067_200_000_000;

#[test]
fn begin_carries_final_lsn_time_and_xid() {
    let b = B::tag(b'B').u64(0x16_B374_D848).u64(PG_TS).u32(742).0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Begin(Begin {
            final_lsn: 0x16_B374_D848,
            commit_time_micros: UNIX_TS,
            xid: 742
        })
    );
}

#[test]
fn commit_carries_commit_and_end_lsn() {
    let b = B::tag(b'C').u8(0).u64(100).u64(180).u64(PG_TS).0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Commit(Commit {
            flags: 0,
            commit_lsn: 100,
            end_lsn: 180,
            commit_time_micros: UNIX_TS
        })
    );
}

#[test]
fn origin_names_the_upstream() {
    let b = B::tag(b'O').u64(77).s("node_a").0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Origin(Origin {
            commit_lsn: 77,
            name: "node_a".into()
        })
    );
}

fn relation_bytes(xid: Option<u32>) -> Vec<u8> {
    let mut b = B::tag(b'R');
    if let Some(x) = xid {
        b = b.u32(x);
    }
    b.u32(16384)
        .s("public")
        .s("messages")
        .u8(b'd')
        .i16(2)
        .u8(1)
        .s("id")
        .u32(20)
        .i32(-1)
        .u8(0)
        .s("body")
        .u32(25)
        .i32(-1)
        .0
}

#[test]
fn relation_describes_columns_and_key() {
    let PgOutput::Relation(r) = parse(&relation_bytes(None), false).unwrap() else {
        panic!("not a relation")
    };
    assert_eq!(r.xid, None);
    assert_eq!(r.oid, 16384);
    assert_eq!(
        (r.namespace.as_str(), r.name.as_str()),
        ("public", "messages")
    );
    assert_eq!(r.replica_identity, b'd');
    assert_eq!(r.columns.len(), 2);
    assert!(r.columns[0].is_key && !r.columns[1].is_key);
    assert_eq!(r.columns[1].name, "body");
    assert_eq!(r.columns[1].type_oid, 25);
    assert_eq!(r.columns[1].type_modifier, -1);
}

#[test]
fn type_message_names_a_custom_type() {
    let b = B::tag(b'Y').u32(16400).s("public").s("mood").0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Type(TypeMessage {
            xid: None,
            oid: 16400,
            namespace: "public".into(),
            name: "mood".into()
        })
    );
}

#[test]
fn insert_carries_text_null_and_unchanged_toast_cells() {
    let b = B::tag(b'I')
        .u32(16384)
        .u8(b'N')
        .i16(4)
        .text("42")
        .u8(b'n')
        .u8(b'u')
        .u8(b'b')
        .i32(2)
        .raw(&[0xde, 0xad])
        .0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Insert(Insert {
            xid: None,
            relation: 16384,
            new: vec![
                Cell::Text(b"42"),
                Cell::Null,
                Cell::UnchangedToast,
                Cell::Binary(&[0xde, 0xad])
            ]
        })
    );
}

#[test]
fn update_without_old_tuple() {
    let b = B::tag(b'U').u32(1).u8(b'N').i16(1).text("x").0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Update(Update {
            xid: None,
            relation: 1,
            old: None,
            new: vec![Cell::Text(b"x")]
        })
    );
}

#[test]
fn update_with_old_key() {
    let b = B::tag(b'U')
        .u32(1)
        .u8(b'K')
        .i16(2)
        .text("7")
        .u8(b'n')
        .u8(b'N')
        .i16(2)
        .text("8")
        .u8(b'u')
        .0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Update(Update {
            xid: None,
            relation: 1,
            old: Some(OldTuple::Key(vec![Cell::Text(b"7"), Cell::Null])),
            new: vec![Cell::Text(b"8"), Cell::UnchangedToast]
        })
    );
}

#[test]
fn update_with_old_full_row() {
    let b = B::tag(b'U')
        .u32(1)
        .u8(b'O')
        .i16(1)
        .text("old")
        .u8(b'N')
        .i16(1)
        .text("new")
        .0;
    let PgOutput::Update(u) = parse(&b, false).unwrap() else {
        panic!()
    };
    assert_eq!(u.old, Some(OldTuple::Full(vec![Cell::Text(b"old")])));
    assert_eq!(u.new, vec![Cell::Text(b"new")]);
}

#[test]
fn delete_with_key_or_full_row() {
    let b = B::tag(b'D').u32(1).u8(b'K').i16(1).text("7").0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Delete(Delete {
            xid: None,
            relation: 1,
            old: OldTuple::Key(vec![Cell::Text(b"7")])
        })
    );
    let b = B::tag(b'D').u32(1).u8(b'O').i16(1).text("7").0;
    assert!(matches!(
        parse(&b, false).unwrap(),
        PgOutput::Delete(Delete {
            old: OldTuple::Full(_),
            ..
        })
    ));
}

#[test]
fn truncate_lists_relations_and_options() {
    let b = B::tag(b'T').i32(2).u8(3).u32(10).u32(11).0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Truncate(Truncate {
            xid: None,
            options: 3,
            relations: vec![10, 11]
        })
    );
}

#[test]
fn logical_message_with_prefix_and_content() {
    let b = B::tag(b'M').u8(1).u64(99).s("ripple").i32(3).raw(b"hey").0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::Message(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: 99,
            prefix: "ripple".into(),
            content: b"hey"
        })
    );
}

#[test]
fn stream_start_stop_commit_abort() {
    assert_eq!(
        parse(&B::tag(b'S').u32(900).u8(1).0, false).unwrap(),
        PgOutput::StreamStart(StreamStart {
            xid: 900,
            first_segment: true
        })
    );
    assert_eq!(parse(b"E", false).unwrap(), PgOutput::StreamStop);
    let b = B::tag(b'c').u32(900).u8(0).u64(500).u64(580).u64(PG_TS).0;
    assert_eq!(
        parse(&b, false).unwrap(),
        PgOutput::StreamCommit(StreamCommit {
            xid: 900,
            flags: 0,
            commit_lsn: 500,
            end_lsn: 580,
            commit_time_micros: UNIX_TS
        })
    );
    assert_eq!(
        parse(&B::tag(b'A').u32(900).u32(901).0, false).unwrap(),
        PgOutput::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 901
        })
    );
}

#[test]
fn data_messages_inside_a_stream_block_carry_the_xid() {
    let PgOutput::Relation(r) = parse(&relation_bytes(Some(901)), true).unwrap() else {
        panic!()
    };
    assert_eq!(r.xid, Some(901));
    assert_eq!(r.oid, 16384);
    let b = B::tag(b'I').u32(901).u32(16384).u8(b'N').i16(1).text("1").0;
    assert_eq!(
        parse(&b, true).unwrap(),
        PgOutput::Insert(Insert {
            xid: Some(901),
            relation: 16384,
            new: vec![Cell::Text(b"1")]
        })
    );
    let b = B::tag(b'T').u32(901).i32(1).u8(0).u32(10).0;
    assert!(matches!(
        parse(&b, true).unwrap(),
        PgOutput::Truncate(Truncate { xid: Some(901), .. })
    ));
    // The same bytes outside a stream block mean something else and must not parse cleanly.
    assert!(parse(
        &B::tag(b'I').u32(901).u32(16384).u8(b'N').i16(1).text("1").0,
        false
    )
    .is_err());
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    assert_eq!(parse(&[], false), Err(DecodeError::Empty));
    assert_eq!(parse(b"Z", false), Err(DecodeError::UnknownTag(b'Z')));
    assert!(matches!(
        parse(&B::tag(b'B').u64(1).0, false),
        Err(DecodeError::Truncated { tag: b'B', .. })
    ));
    assert!(matches!(
        parse(&B::tag(b'O').u64(1).raw(b"no-nul").0, false),
        Err(DecodeError::UnterminatedString { .. })
    ));
    assert!(matches!(
        parse(&B::tag(b'O').u64(1).raw(&[0xff, 0]).0, false),
        Err(DecodeError::NotUtf8 { .. })
    ));
    assert!(matches!(
        parse(&B::tag(b'I').u32(1).u8(b'X').0, false),
        Err(DecodeError::UnknownTupleKind { kind: b'X', .. })
    ));
    assert!(matches!(
        parse(&B::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'q').0, false),
        Err(DecodeError::UnknownCellKind { kind: b'q', .. })
    ));
    assert!(matches!(
        parse(&B::tag(b'I').u32(1).u8(b'N').i16(-1).0, false),
        Err(DecodeError::Negative { .. })
    ));
    assert!(matches!(
        parse(
            &B::tag(b'I').u32(1).u8(b'N').i16(1).u8(b't').i32(-5).0,
            false
        ),
        Err(DecodeError::Negative { .. })
    ));
    assert!(matches!(
        parse(
            &B::tag(b'I')
                .u32(1)
                .u8(b'N')
                .i16(1)
                .u8(b't')
                .i32(100)
                .raw(b"ab")
                .0,
            false
        ),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        parse(&B::tag(b'C').u8(0).u64(1).u64(2).u64(3).u8(9).0, false),
        Err(DecodeError::TrailingBytes { extra: 1, .. })
    ));
    // A huge declared column count in a tiny message must not allocate for it.
    assert!(parse(&B::tag(b'I').u32(1).u8(b'N').i16(i16::MAX).0, false).is_err());
    assert!(parse(&B::tag(b'T').i32(i32::MAX).u8(0).0, false).is_err());
}

#[test]
fn xlogdata_and_keepalive_frames() {
    let mut w = vec![b'w'];
    w.extend_from_slice(&10u64.to_be_bytes());
    w.extend_from_slice(&20u64.to_be_bytes());
    w.extend_from_slice(&PG_TS.to_be_bytes());
    w.extend_from_slice(b"Bpayload");
    assert_eq!(
        parse_frame(&w).unwrap(),
        WalFrame::XLogData {
            wal_start: 10,
            wal_end: 20,
            send_time_micros: UNIX_TS,
            data: b"Bpayload"
        }
    );
    let mut k = vec![b'k'];
    k.extend_from_slice(&30u64.to_be_bytes());
    k.extend_from_slice(&PG_TS.to_be_bytes());
    k.push(1);
    assert_eq!(
        parse_frame(&k).unwrap(),
        WalFrame::Keepalive {
            wal_end: 30,
            send_time_micros: UNIX_TS,
            reply_requested: true
        }
    );
    assert!(parse_frame(&k[..10]).is_err());
    assert!(parse_frame(b"w").is_err());
    assert_eq!(parse_frame(b"x"), Err(DecodeError::UnknownTag(b'x')));
}

#[test]
fn standby_status_update_layout() {
    let r = standby_status_update(1, 2, 3, UNIX_TS, true);
    assert_eq!(r[0], b'r');
    assert_eq!(&r[1..9], &1u64.to_be_bytes());
    assert_eq!(&r[9..17], &2u64.to_be_bytes());
    assert_eq!(&r[17..25], &3u64.to_be_bytes());
    assert_eq!(&r[25..33], &PG_TS.to_be_bytes());
    assert_eq!(r[33], 1);
}
