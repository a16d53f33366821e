//! Resuming `postgres_changes` after a dropped connection or a gateway restart.
//!
//! Every delivered change carries a [`Position`]: its transaction's commit LSN and its
//! index in that transaction. A client that joins again with the last position it saw gets,
//! before any live change, every later change it may see, then live ones: no gap, no
//! duplicate.
//!
//! - The replay source is the [`Window`]: the transactions the pump has delivered recently,
//!   bounded in age and bytes. The slot's confirmed position is held at the window's start,
//!   so after a restart (even `kill -9`) the slot streams the window again and the new
//!   process rebuilds it before clients are back.
//! - The pump, which handles transactions one at a time in commit order, also serves the
//!   replays, between two transactions. A channel that asked to resume is *pending* from its
//!   join until its replay is served: live deliveries skip it, and the replay covers every
//!   transaction processed in the meantime (they are in the window by then). It then turns
//!   live, skipping anything at or below its position (after a restart the pump may still be
//!   behind the client).
//! - A position older than the window is answered with a `system` message so the app
//!   refetches history, and the channel goes live from there.
//!
//! Replayed changes are authorized exactly like live ones, as the channel's current claims.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::{ChannelRef, Subscription};
use crate::change::{Lsn, Row, RowChange, Transaction};

/// Where a change sits in the stream. Ordered by commit, then by place in the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub lsn: Lsn,
    pub index: u32,
    /// Changes in the transaction: tells whether a client at this position has seen its
    /// transaction to the end (needed when the transaction itself has left the window).
    pub count: u32,
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.lsn, self.index).cmp(&(other.lsn, other.index))
    }
}

impl Position {
    pub fn of(tx: &Transaction, index: usize) -> Self {
        Self {
            lsn: tx.commit_lsn,
            index: index as u32,
            count: tx.changes.len() as u32,
        }
    }

    /// Opaque to clients; fixed-width hex so that it also sorts as text.
    pub fn encode(&self) -> String {
        format!("{:016X}{:08X}{:08X}", self.lsn, self.index, self.count)
    }

    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let p = Self {
            lsn: u64::from_str_radix(&s[..16], 16).ok()?,
            index: u32::from_str_radix(&s[16..24], 16).ok()?,
            count: u32::from_str_radix(&s[24..], 16).ok()?,
        };
        (p.index < p.count).then_some(p)
    }

    /// The client has seen every change of its transaction.
    fn completes_transaction(&self) -> bool {
        self.index + 1 >= self.count
    }
}

/// What a channel asked for when it joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRequest {
    /// Positions, but nothing to replay (a first join).
    Fresh,
    After(Position),
}

impl ResumeRequest {
    /// Reads a binding's `resume` member: absent (no resume), `{}` / `{"since": null}` (a
    /// first join) or `{"since": "<position>"}`.
    pub fn parse(binding: &serde_json::Map<String, Value>) -> Result<Option<Self>, String> {
        let Some(resume) = binding.get("resume") else {
            return Ok(None);
        };
        let since = match resume {
            Value::Null => return Ok(None),
            Value::Object(o) => o.get("since"),
            _ => return Err("`resume` must be an object: {\"since\": position or null}".into()),
        };
        match since {
            None | Some(Value::Null) => Ok(Some(ResumeRequest::Fresh)),
            Some(Value::String(s)) => Position::parse(s)
                .map(|p| Some(ResumeRequest::After(p)))
                .ok_or_else(|| "`resume.since` is not a position Ripple sent".into()),
            Some(_) => Err("`resume.since` must be a string or null".into()),
        }
    }
}

/// A channel's resume state, shared by its socket and the pump.
#[derive(Debug, Default)]
pub struct ChannelResume {
    /// Joined with a position whose replay the pump has not served yet.
    pending: AtomicBool,
    /// Live changes at or below this were (or will be) replayed.
    skip_through: Mutex<Option<Position>>,
}

impl ChannelResume {
    pub fn new(request: ResumeRequest) -> Self {
        let r = Self::default();
        if let ResumeRequest::After(p) = request {
            r.pending.store(true, Ordering::Release);
            *r.skip_through.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        }
        r
    }

    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Should a live change at `p` go to this channel?
    pub fn wants(&self, p: Position) -> bool {
        if self.is_pending() {
            return false;
        }
        match *self.skip_through.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(skip) => p > skip,
            None => true,
        }
    }

    /// The replay is served; from here on the channel takes live changes.
    pub(crate) fn go_live(&self, skip_through: Option<Position>) {
        *self.skip_through.lock().unwrap_or_else(|e| e.into_inner()) = skip_through;
        self.pending.store(false, Ordering::Release);
    }
}

/// A join that asked for the changes after a position.
pub struct ReplayRequest {
    pub channel: Arc<ChannelRef>,
    pub subs: Vec<Arc<Subscription>>,
    pub after: Position,
}

/// Where sockets send replay requests and the pump takes them from.
pub struct ReplayQueue {
    tx: tokio::sync::mpsc::UnboundedSender<ReplayRequest>,
    rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ReplayRequest>>>,
}

impl Default for ReplayQueue {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl ReplayQueue {
    pub fn request(&self, r: ReplayRequest) {
        // Only fails once the pump is gone, when nothing is delivered anyway.
        let _ = self.tx.send(r);
    }

    /// The pump's end (once).
    pub fn take_receiver(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ReplayRequest>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How much of the stream is kept for replay.
#[derive(Debug, Clone, Copy)]
pub struct WindowLimits {
    pub max_age: Duration,
    pub max_bytes: usize,
}

struct Entry {
    tx: Arc<Transaction>,
    at: Instant,
    bytes: usize,
}

/// The recently delivered transactions, oldest first.
pub struct Window {
    entries: VecDeque<Entry>,
    bytes: usize,
    limits: WindowLimits,
    /// Nothing at or below this LSN can be replayed (the slot has let it go).
    floor: Lsn,
}

/// A missed change: its transaction, its index there, and the change.
pub type Missed<'a> = (&'a Arc<Transaction>, usize, &'a RowChange);

/// The replay cannot be served: part of what the client missed has left the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld;

impl Window {
    /// `floor`: the slot's confirmed position when streaming started (what the slot will
    /// stream again is above it).
    pub fn new(floor: Lsn, limits: WindowLimits) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            limits,
            floor,
        }
    }

    pub fn floor(&self) -> Lsn {
        self.floor
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The newest commit LSN held, if any.
    pub fn newest(&self) -> Option<Lsn> {
        self.entries.back().map(|e| e.tx.commit_lsn)
    }

    /// Keeps a delivered transaction.
    pub fn push(&mut self, tx: Arc<Transaction>, now: Instant) {
        let bytes = estimate_bytes(&tx);
        self.bytes += bytes;
        self.entries.push_back(Entry { tx, at: now, bytes });
    }

    /// Lets go of what is past the limits. Returns the new floor when it moved: the slot may
    /// forget everything up to it.
    pub fn evict(&mut self, now: Instant) -> Option<Lsn> {
        let mut moved = None;
        while let Some(front) = self.entries.front() {
            let too_old = now.saturating_duration_since(front.at) >= self.limits.max_age;
            if !too_old && self.bytes <= self.limits.max_bytes {
                break;
            }
            let e = self.entries.pop_front().expect("front exists");
            self.bytes -= e.bytes;
            self.floor = self.floor.max(e.tx.commit_lsn);
            moved = Some(self.floor);
        }
        moved
    }

    /// The changes after `after`, in commit order, each with its transaction.
    pub fn since(&self, after: Position) -> Result<Vec<Missed<'_>>, TooOld> {
        if after.lsn < self.floor || (after.lsn == self.floor && !after.completes_transaction()) {
            return Err(TooOld);
        }
        let start = self
            .entries
            .partition_point(|e| e.tx.commit_lsn < after.lsn);
        let mut out = Vec::new();
        for e in self.entries.range(start..) {
            for (i, change) in e.tx.changes.iter().enumerate() {
                if Position::of(&e.tx, i) > after {
                    out.push((&e.tx, i, change));
                }
            }
        }
        Ok(out)
    }
}

/// A cheap estimate of a transaction's memory: what its values and names take, plus a
/// fixed overhead per change and per value.
fn estimate_bytes(tx: &Transaction) -> usize {
    fn value(v: &Value) -> usize {
        16 + match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(value).sum(),
            Value::Object(o) => o.iter().map(|(k, v)| k.len() + value(v)).sum(),
            _ => 8,
        }
    }
    let row = |r: &Option<Row>| {
        r.as_ref()
            .map(|m| m.iter().map(|(k, v)| k.len() + value(v)).sum::<usize>())
            .unwrap_or(0)
    };
    64 + tx
        .changes
        .iter()
        .map(|c| 96 + row(&c.record) + row(&c.old_record))
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ChangeKind, RelationInfo, ReplicaIdentity};
    use serde_json::json;

    fn tx(lsn: Lsn, n: usize) -> Arc<Transaction> {
        let rel = Arc::new(RelationInfo {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![],
        });
        Arc::new(Transaction {
            xid: 1,
            commit_lsn: lsn,
            commit_time_micros: 0,
            changes: (0..n)
                .map(|i| RowChange {
                    relation: rel.clone(),
                    kind: ChangeKind::Insert,
                    record: json!({ "id": i }).as_object().cloned().map(Into::into),
                    old_record: None,
                    unchanged_toast: vec![],
                })
                .collect(),
        })
    }

    fn limits() -> WindowLimits {
        WindowLimits {
            max_age: Duration::from_secs(60),
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn positions_round_trip_and_order_by_commit_then_index() {
        let t = tx(0x16_B374_D848, 3);
        let p = Position::of(&t, 1);
        assert_eq!(Position::parse(&p.encode()), Some(p));
        assert!(Position::of(&t, 2) > p);
        assert!(Position::of(&tx(0x16_B374_D849, 1), 0) > Position::of(&t, 2));
        // Text order is position order.
        assert!(Position::of(&t, 2).encode() > p.encode());
        assert_eq!(Position::parse("nope"), None);
        assert_eq!(
            Position::parse(&"0".repeat(32)),
            None,
            "index must be < count"
        );
    }

    #[test]
    fn since_returns_exactly_the_later_changes() {
        let mut w = Window::new(10, limits());
        let now = Instant::now();
        for (lsn, n) in [(20, 2), (30, 3), (40, 1)] {
            w.push(tx(lsn, n), now);
        }
        let after = Position::of(&tx(30, 3), 0);
        let got: Vec<(Lsn, usize)> = w
            .since(after)
            .unwrap()
            .iter()
            .map(|(t, i, _)| (t.commit_lsn, *i))
            .collect();
        assert_eq!(got, vec![(30, 1), (30, 2), (40, 0)]);
        // A position at the floor is fine only if it saw its transaction to the end.
        assert!(w.since(Position::of(&tx(10, 2), 1)).is_ok());
        assert_eq!(w.since(Position::of(&tx(10, 2), 0)), Err(TooOld));
        assert_eq!(w.since(Position::of(&tx(5, 1), 0)), Err(TooOld));
    }

    #[test]
    fn eviction_by_age_and_bytes_moves_the_floor() {
        let mut w = Window::new(
            0,
            WindowLimits {
                max_age: Duration::from_secs(10),
                max_bytes: usize::MAX,
            },
        );
        let t0 = Instant::now();
        w.push(tx(20, 1), t0);
        w.push(tx(30, 1), t0 + Duration::from_secs(5));
        assert_eq!(w.evict(t0 + Duration::from_secs(9)), None);
        assert_eq!(w.evict(t0 + Duration::from_secs(11)), Some(20));
        assert_eq!(w.len(), 1);
        assert_eq!(w.since(Position::of(&tx(15, 1), 0)), Err(TooOld));

        let mut small = Window::new(
            0,
            WindowLimits {
                max_age: Duration::from_secs(60),
                max_bytes: 1,
            },
        );
        small.push(tx(20, 1), t0);
        assert_eq!(small.evict(t0), Some(20), "over the byte budget");
        assert!(small.is_empty());
        assert_eq!(small.bytes(), 0);
    }

    #[test]
    fn resume_requests_are_read_from_a_binding() {
        let b = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(ResumeRequest::parse(&b(json!({"table": "t"}))), Ok(None));
        assert_eq!(
            ResumeRequest::parse(&b(json!({"resume": {"since": null}}))),
            Ok(Some(ResumeRequest::Fresh))
        );
        let p = Position::of(&tx(99, 2), 1);
        assert_eq!(
            ResumeRequest::parse(&b(json!({"resume": {"since": p.encode()}}))),
            Ok(Some(ResumeRequest::After(p)))
        );
        assert!(ResumeRequest::parse(&b(json!({"resume": {"since": "x"}}))).is_err());
        assert!(ResumeRequest::parse(&b(json!({"resume": 5}))).is_err());
    }

    #[test]
    fn a_pending_channel_takes_nothing_live_then_only_what_follows_its_position() {
        let p = Position::of(&tx(30, 2), 1);
        let r = ChannelResume::new(ResumeRequest::After(p));
        assert!(!r.wants(Position::of(&tx(40, 1), 0)), "pending");
        r.go_live(Some(p));
        assert!(!r.wants(p));
        assert!(!r.wants(Position::of(&tx(30, 2), 0)));
        assert!(r.wants(Position::of(&tx(40, 1), 0)));
        let fresh = ChannelResume::new(ResumeRequest::Fresh);
        assert!(fresh.wants(Position::of(&tx(1, 1), 0)));
    }
}
