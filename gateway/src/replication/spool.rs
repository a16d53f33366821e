//! Streamed transactions (pgoutput protocol 2), kept from their first streamed block until
//! their commit or abort as the raw pgoutput messages the server sent: in memory while all
//! of them together fit a budget, in a file beyond it. At commit the messages are read back
//! in order and assembled like any transaction; an abort drops them unread.
//!
//! PostgreSQL streams a transaction in progress once it outgrows the server's
//! `logical_decoding_work_mem`, so streamed transactions are the big ones, and many never
//! commit: holding them as assembled rows (JSON values, several times the wire size) cost
//! a gigabyte for one aborted 600,000-row transaction. PostgreSQL's own subscriber does the
//! same as this module (it spools streamed changes to a file and applies them at commit).
//! Keeping the raw messages also means a transaction is assembled with the relations as
//! they are when it commits, which is when its own Relation messages take effect.
//!
//! Files live in a private directory (mode 0700) made per spool, and each is unlinked the
//! moment it is created: the open descriptor is the only way to it, and the kernel frees it
//! when it is dropped, even if the process is killed. Directories that dead processes left
//! behind are removed when a spool starts. File I/O is synchronous: it runs on the stream's
//! own task, which has nothing else to do meanwhile, and writes land in the page cache.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::metrics::Counter;

/// Where and how much: the memory budget shared by all streamed transactions in progress.
#[derive(Clone, Debug)]
pub struct SpillConfig {
    /// Bytes of raw messages held in memory over all streamed transactions in progress;
    /// a transaction that would go beyond it moves to a file.
    pub memory_budget: usize,
    /// The directory spill directories are made in (the system's temporary directory if
    /// `None`).
    pub dir: Option<PathBuf>,
    pub metrics: SpillMetrics,
}

impl Default for SpillConfig {
    fn default() -> Self {
        Self {
            memory_budget: 64 << 20,
            dir: None,
            metrics: SpillMetrics::default(),
        }
    }
}

/// What operators see of spilling (registered as counters by `ripple serve`).
#[derive(Clone, Debug, Default)]
pub struct SpillMetrics {
    /// Bytes written to spill files.
    pub bytes: Arc<Counter>,
    /// Streamed transactions that went beyond the memory budget into a file.
    pub transactions: Arc<Counter>,
}

/// Prefix of spill directory names: `ripple-spill-<pid>-<n>`.
const DIR_PREFIX: &str = "ripple-spill-";

/// Spools made in this process, to name their directories apart (tests run several
/// gateways in one process).
static SPOOLS: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Spool {
    config: SpillConfig,
    /// This spool's private directory, made at the first spill.
    dir: Option<PathBuf>,
    files_made: u64,
    /// Bytes held in memory over all transactions (buffer capacities, as allocated);
    /// never above the budget.
    in_memory: usize,
    txns: HashMap<u32, Spooled>,
}

/// One streamed transaction's messages so far.
pub(crate) struct Spooled {
    store: Store,
    /// Subtransactions aborted so far: their changes are skipped when read back.
    aborted: HashSet<u32>,
}

enum Store {
    Memory(Vec<u8>),
    File(BufWriter<File>),
}

impl Spool {
    pub fn new(config: SpillConfig) -> Self {
        let base = base_dir(&config);
        remove_stale_dirs(&base);
        Self {
            config,
            dir: None,
            files_made: 0,
            in_memory: 0,
            txns: HashMap::new(),
        }
    }

    /// No streamed transaction is in progress.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Bytes allocated in memory now.
    #[cfg(test)]
    pub fn in_memory(&self) -> usize {
        self.in_memory
    }

    /// Forgets every transaction (a new session streams them again from the start).
    pub fn clear(&mut self) {
        self.txns.clear();
        self.in_memory = 0;
    }

    /// A block of transaction `xid` starts (the first or a later one).
    pub fn begin(&mut self, xid: u32) {
        self.txns.entry(xid).or_insert_with(|| Spooled {
            store: Store::Memory(Vec::new()),
            aborted: HashSet::new(),
        });
    }

    /// Keeps one message of transaction `xid`, sent for its subtransaction `subxid` (the
    /// top-level xid for anything that is not a row change).
    pub fn append(&mut self, xid: u32, subxid: u32, message: &[u8]) -> io::Result<()> {
        self.begin(xid);
        let len = u32::try_from(message.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
        let record = RECORD_HEAD + message.len();
        if let Store::Memory(buf) = &self.txns[&xid].store {
            // Buffers grow by doubling (amortized copies), counted as allocated.
            let needed = buf.len() + record;
            let capacity = if needed > buf.capacity() {
                needed.max(buf.capacity() * 2).max(4096)
            } else {
                buf.capacity()
            };
            if self.in_memory - buf.capacity() + capacity > self.config.memory_budget {
                self.move_to_file(xid)?;
            } else if capacity > buf.capacity() {
                let t = self.txns.get_mut(&xid).expect("begun above");
                if let Store::Memory(buf) = &mut t.store {
                    let before = buf.capacity();
                    buf.reserve_exact(capacity - buf.len());
                    self.in_memory = self.in_memory - before + buf.capacity();
                }
            }
        }
        let t = self.txns.get_mut(&xid).expect("begun above");
        match &mut t.store {
            Store::Memory(buf) => {
                buf.extend_from_slice(&subxid.to_be_bytes());
                buf.extend_from_slice(&len.to_be_bytes());
                buf.extend_from_slice(message);
            }
            Store::File(w) => {
                w.write_all(&subxid.to_be_bytes())?;
                w.write_all(&len.to_be_bytes())?;
                w.write_all(message)?;
                self.config.metrics.bytes.add(record as u64);
            }
        }
        Ok(())
    }

    /// The server aborted transaction `xid` (when `subxid == xid`) or one of its
    /// subtransactions.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(t) = self.txns.remove(&xid) {
                self.release(&t);
            }
        } else if let Some(t) = self.txns.get_mut(&xid) {
            t.aborted.insert(subxid);
        }
    }

    /// Transaction `xid` committed: its messages, to read back in order.
    pub fn take(&mut self, xid: u32) -> Option<Spooled> {
        let t = self.txns.remove(&xid)?;
        self.release(&t);
        Some(t)
    }

    fn release(&mut self, t: &Spooled) {
        if let Store::Memory(buf) = &t.store {
            self.in_memory -= buf.capacity();
        }
    }

    fn move_to_file(&mut self, xid: u32) -> io::Result<()> {
        let file = self.new_file()?;
        let t = self.txns.get_mut(&xid).expect("caller checked");
        let mut w = BufWriter::with_capacity(1 << 16, file);
        if let Store::Memory(buf) = &t.store {
            w.write_all(buf)?;
            self.in_memory -= buf.capacity();
            self.config.metrics.bytes.add(buf.len() as u64);
        }
        t.store = Store::File(w);
        self.config.metrics.transactions.inc();
        tracing::debug!(
            xid,
            "streamed transaction beyond the memory budget; spilling"
        );
        Ok(())
    }

    /// A new file in the private directory, already unlinked.
    fn new_file(&mut self) -> io::Result<File> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => {
                let base = base_dir(&self.config);
                let n = SPOOLS.fetch_add(1, Ordering::Relaxed);
                let d = base.join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
                make_private_dir(&d)?;
                self.dir = Some(d.clone());
                d
            }
        };
        self.files_made += 1;
        let path = dir.join(format!("{}.spill", self.files_made));
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(file)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.txns.clear();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A record: subtransaction xid and message length (both u32, network order), message.
const RECORD_HEAD: usize = 8;

impl Spooled {
    /// Reads the messages back in the order they came, without the aborted
    /// subtransactions'.
    pub fn into_reader(self) -> io::Result<SpoolReader> {
        let source: Box<dyn Read + Send> = match self.store {
            Store::Memory(buf) => Box::new(io::Cursor::new(buf)),
            Store::File(w) => {
                let mut file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
                file.seek(SeekFrom::Start(0))?;
                Box::new(BufReader::with_capacity(1 << 16, file))
            }
        };
        Ok(SpoolReader {
            source,
            aborted: self.aborted,
        })
    }
}

pub(crate) struct SpoolReader {
    source: Box<dyn Read + Send>,
    aborted: HashSet<u32>,
}

impl SpoolReader {
    /// The next message into `out`; false at the end.
    pub fn next_message(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            let mut head = [0u8; RECORD_HEAD];
            match self.source.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
            let subxid = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
            let len = u32::from_be_bytes(head[4..].try_into().expect("4 bytes")) as usize;
            out.clear();
            out.resize(len, 0);
            self.source.read_exact(out)?;
            if !self.aborted.contains(&subxid) {
                return Ok(true);
            }
        }
    }
}

fn base_dir(config: &SpillConfig) -> PathBuf {
    config.dir.clone().unwrap_or_else(std::env::temp_dir)
}

fn make_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Removes the spill directories of processes that are gone (their files were unlinked
/// already; the empty directories are what is left).
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // Without /proc we cannot tell; keep the directory.
    !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(budget: usize, dir: &Path) -> Spool {
        Spool::new(SpillConfig {
            memory_budget: budget,
            dir: Some(dir.to_path_buf()),
            metrics: SpillMetrics::default(),
        })
    }

    fn test_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ripple-spool-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn read_all(t: Spooled) -> Vec<Vec<u8>> {
        let mut r = t.into_reader().unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while r.next_message(&mut buf).unwrap() {
            out.push(buf.clone());
        }
        out
    }

    fn msg(i: u32) -> Vec<u8> {
        format!("message {i} {}", "x".repeat(i as usize % 50)).into_bytes()
    }

    #[test]
    fn under_the_budget_messages_stay_in_memory_and_come_back_in_order() {
        let dir = test_dir("memory");
        let mut s = spool(1 << 20, &dir);
        s.begin(7);
        for i in 0..100 {
            s.append(7, 7, &msg(i)).unwrap();
        }
        assert!(s.in_memory() > 0);
        assert_eq!(s.config.metrics.transactions.get(), 0);
        assert!(s.dir.is_none(), "no file was needed");
        let got = read_all(s.take(7).unwrap());
        assert_eq!(got, (0..100).map(msg).collect::<Vec<_>>());
        assert_eq!(s.in_memory(), 0);
        assert!(s.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn beyond_the_budget_a_transaction_moves_to_a_file_whole_and_in_order() {
        let dir = test_dir("file");
        let mut s = spool(4096, &dir);
        let metrics = s.config.metrics.clone();
        // Two interleaved transactions; 1 stays small, 2 grows past the budget.
        s.begin(1);
        s.append(1, 1, b"small").unwrap();
        s.begin(2);
        for i in 0..2000 {
            s.append(2, 2, &msg(i)).unwrap();
            assert!(s.in_memory() <= 4096, "memory never goes beyond the budget");
        }
        assert_eq!(metrics.transactions.get(), 1);
        assert!(metrics.bytes.get() > 2000 * 9);
        // The file is unlinked: the private directory holds no names.
        let spill_dir = s.dir.clone().expect("a spill directory");
        assert!(spill_dir.starts_with(&dir));
        assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&spill_dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "private");
        }
        let got = read_all(s.take(2).unwrap());
        assert_eq!(got, (0..2000).map(msg).collect::<Vec<_>>());
        assert_eq!(read_all(s.take(1).unwrap()), vec![b"small".to_vec()]);
        assert_eq!(s.in_memory(), 0);
        drop(s);
        assert!(!spill_dir.exists(), "removed with the spool");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn aborted_subtransactions_are_skipped_and_an_abort_frees_everything() {
        let dir = test_dir("abort");
        for budget in [1 << 20, 0] {
            let mut s = spool(budget, &dir);
            s.begin(10);
            s.append(10, 10, b"top 1").unwrap();
            s.append(10, 11, b"sub 11").unwrap();
            s.append(10, 12, b"sub 12").unwrap();
            s.append(10, 10, b"top 2").unwrap();
            s.abort(10, 11);
            assert_eq!(
                read_all(s.take(10).unwrap()),
                vec![b"top 1".to_vec(), b"sub 12".to_vec(), b"top 2".to_vec()],
                "budget {budget}"
            );
            s.begin(20);
            s.append(20, 20, b"gone").unwrap();
            s.abort(20, 20);
            assert!(s.is_empty());
            assert_eq!(s.in_memory(), 0);
            assert!(s.take(20).is_none());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_of_dead_processes_are_removed_at_start() {
        let dir = test_dir("stale");
        // No process has the largest pid; pid 1 is alive.
        let stale = dir.join(format!("{DIR_PREFIX}4294967295-0"));
        let alive = dir.join(format!("{DIR_PREFIX}1-0"));
        let other = dir.join("something-else");
        for d in [&stale, &alive, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        let _s = spool(0, &dir);
        assert!(!stale.exists());
        assert!(alive.exists());
        assert!(other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
