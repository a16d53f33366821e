//! Replication throughput: the same workload consumed by `pg_recvlogical` (pgoutput,
//! raw messages to /dev/null) and by Ripple's consumer (typed decoding into
//! Transactions with JSON rows), in one run, on one throwaway cluster. Two workloads, each
//! measured on its own: one huge transaction, and many single-row transactions (where the
//! per-transaction costs show: Begin/Commit messages, hand-over to the consumer, status).
//!
//! ```text
//! cargo run --release -p ripple-tests --bin bench_replication [-- --rows 200000 --small-rows 100000 --rounds 2]
//! ```
//!
//! Each consumer gets its own slot, created before the workload, so both read exactly the
//! same WAL; rounds alternate the two so neither always runs on a warmer cache. Prints
//! changes per second of each (best round) and the ratio. Both mostly wait on the
//! server's decoding, so it also prints CPU time per change (from /proc, least of the
//! rounds) of each consumer (this process for Ripple, the reaped child for
//! pg_recvlogical) and of the walsender serving it (the slot's `active_pid`). On a busy
//! machine the rates swing with whoever else runs; the CPU figures do not, and a consumer
//! that needs less CPU per change than its walsender spends producing it keeps up
//! whenever it has a core of its own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use ripple::change::parse_lsn;
use ripple::replication::{self, ReplicationConfig};
use ripple_tests::TestDb;

#[derive(Parser)]
struct Args {
    /// Rows of the huge transaction (each one change).
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Single-row transactions of the second workload (0 to skip it).
    #[arg(long, default_value_t = 100_000)]
    small_rows: u64,
    /// Runs of each consumer per workload.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(args))
}

/// One workload's best rates and least CPU per change.
struct Figures {
    name: String,
    recv: f64,
    ripple: f64,
    recv_cpu_ns: f64,
    ripple_cpu_ns: f64,
    /// The walsenders serving each.
    recv_sender_ns: f64,
    ripple_sender_ns: f64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let db = ripple_tests::empty_db().await;
    db.client
        .batch_execute(
            "create table bench_messages ( \
               id bigint primary key, author uuid not null, body text not null, \
               created_at timestamptz not null, score numeric, meta jsonb, \
               tags text[], edited bool not null default false); \
             create publication bench for table bench_messages;",
        )
        .await?;
    let mut all = Vec::new();
    let mut next_id = 0;
    if args.rows > 0 {
        all.push(workload(&db, &args, "huge", next_id, args.rows, args.rows).await?);
        next_id += args.rows;
    }
    if args.small_rows > 0 {
        all.push(workload(&db, &args, "small", next_id, args.small_rows, 1).await?);
    }
    println!();
    println!(
        "{:<32} {:>15} {:>15} {:>6}   {:>28}   {:>28}",
        "workload",
        "pg_recvlogical",
        "ripple",
        "ratio",
        "cpu/change recv | walsender",
        "cpu/change ripple | walsender"
    );
    for f in &all {
        println!(
            "{:<32} {:>10.0} ch/s {:>10.0} ch/s {:>6.2}   {:>12.0} ns | {:>9.0} ns   {:>13.0} ns | {:>9.0} ns",
            f.name,
            f.recv,
            f.ripple,
            f.ripple / f.recv,
            f.recv_cpu_ns,
            f.recv_sender_ns,
            f.ripple_cpu_ns,
            f.ripple_sender_ns,
        );
    }
    println!("(ripple: typed JSON rows; pg_recvlogical: raw pgoutput to /dev/null)");
    for f in &all {
        let share = f.ripple_cpu_ns / f.ripple_sender_ns;
        println!(
            "{}: ripple's consumer needs {share:.2}x the CPU per change its walsender spends ({})",
            f.name,
            if share < 1.0 {
                "less: with a core of its own it keeps up with the server"
            } else {
                "more: the consumer, not the server, bounds the rate"
            }
        );
    }
    Ok(())
}

/// Writes `rows` rows (ids after `first_id`) in transactions of `per_txn`, then has both
/// consumers read them from slots made just before, alternating, `rounds` times each.
async fn workload(
    db: &TestDb,
    args: &Args,
    tag: &str,
    first_id: u64,
    rows: u64,
    per_txn: u64,
) -> anyhow::Result<Figures> {
    let slots: Vec<(String, bool)> = (0..args.rounds)
        .flat_map(|r| {
            [
                (format!("bench_{tag}_recv_{r}"), true),
                (format!("bench_{tag}_ripple_{r}"), false),
            ]
        })
        .collect();
    for (slot, _) in &slots {
        db.client
            .execute(
                "select pg_create_logical_replication_slot($1, 'pgoutput')",
                &[slot],
            )
            .await?;
    }
    let txns = rows.div_ceil(per_txn);
    let t0 = Instant::now();
    db.client
        .batch_execute(&format!(
            "do $$ begin for t in 0..{last} loop \
               insert into bench_messages \
               select g, md5(g::text)::uuid, 'message body number ' || g || ' with some text', \
                      now(), g * 1.25, jsonb_build_object('n', g, 'kind', 'chat'), \
                      array['a', 'b c'], g % 2 = 0 \
                 from generate_series({first} + t * {per} + 1, {first} + least((t + 1) * {per}, {rows})) g; \
               commit; \
             end loop; end $$",
            last = txns - 1,
            per = per_txn,
            first = first_id,
            rows = rows
        ))
        .await?;
    let end: String = db
        .client
        // The insert position: with synchronous_commit off the last commits may not be
        // written out yet, and pg_current_wal_lsn() would stop pg_recvlogical short.
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let end_lsn = parse_lsn(&end).expect("lsn");
    eprintln!(
        "workload {tag}: {rows} rows in {txns} transactions written in {:.2?}; end {end}",
        t0.elapsed()
    );

    let bindir = ripple::embedded::PgBinaries::find()?.bindir;
    let recvlogical = [
        "/usr/bin/pg_recvlogical".into(),
        bindir.join("pg_recvlogical"),
    ]
    .into_iter()
    .find(|p: &std::path::PathBuf| p.is_file())
    .expect("pg_recvlogical");
    let mut recv_rates = Vec::new();
    let mut recv_cpu = Vec::new();
    let mut recv_sender_cpu = Vec::new();
    let mut ripple_cpu = Vec::new();
    let mut ripple_sender_cpu = Vec::new();
    let mut ripple_rates = Vec::new();
    let mut last_commit = 0;
    for (slot, is_recv) in &slots {
        if *is_recv {
            let cpu0 = cpu_seconds().1;
            let start = Instant::now();
            let child = Command::new(&recvlogical)
                .args(["-d", &db.url, "--slot", slot, "--start", "--no-loop"])
                .args(["-E", &end, "-f", "/dev/null"])
                .args(["-o", "proto_version=1", "-o", "publication_names=bench"])
                .stdin(Stdio::null())
                .spawn()?;
            let (status, sender) = watch_walsender(db, slot, child).await?;
            let took = start.elapsed();
            anyhow::ensure!(status.success(), "pg_recvlogical failed: {status}");
            let rate = rows as f64 / took.as_secs_f64();
            let cpu = cpu_seconds().1 - cpu0;
            eprintln!("  pg_recvlogical {slot}: {took:.2?}, {rate:.0} changes/s, cpu {cpu:.2}s, walsender cpu {sender:.2}s");
            recv_rates.push(rate);
            recv_cpu.push(cpu);
            recv_sender_cpu.push(sender);
        } else {
            let cpu0 = cpu_seconds().0;
            let (took, last, sender) = ripple_consume(db, slot, rows, end_lsn).await?;
            let cpu = cpu_seconds().0 - cpu0;
            last_commit = last;
            let rate = rows as f64 / took.as_secs_f64();
            eprintln!("  ripple         {slot}: {took:.2?}, {rate:.0} changes/s, cpu {cpu:.2}s, walsender cpu {sender:.2}s");
            ripple_rates.push(rate);
            ripple_cpu.push(cpu);
            ripple_sender_cpu.push(sender);
        }
    }
    // pg_recvlogical reports what it wrote as flushed when it exits: check it read the
    // whole workload, up to the last commit Ripple saw. Then drop the slots, so they do
    // not hold WAL (or see the next workload).
    for (slot, is_recv) in &slots {
        if *is_recv {
            let confirmed: String = db
                .client
                .query_one(
                    "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1",
                    &[slot],
                )
                .await?
                .get(0);
            anyhow::ensure!(
                parse_lsn(&confirmed).unwrap_or(0) >= last_commit,
                "pg_recvlogical stopped at {confirmed}, before the last commit"
            );
        }
        db.client
            .execute("select pg_drop_replication_slot($1)", &[slot])
            .await?;
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let least = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    let per_change = |cpu: f64| cpu * 1e9 / rows as f64;
    Ok(Figures {
        name: if per_txn >= rows {
            format!("1 transaction of {rows} rows")
        } else {
            format!("{txns} transactions of {per_txn} row(s)")
        },
        recv: best(&recv_rates),
        ripple: best(&ripple_rates),
        recv_cpu_ns: per_change(least(&recv_cpu)),
        ripple_cpu_ns: per_change(least(&ripple_cpu)),
        recv_sender_ns: per_change(least(&recv_sender_cpu)),
        ripple_sender_ns: per_change(least(&ripple_sender_cpu)),
    })
}

/// The pid of the walsender streaming `slot`, once a consumer has started it.
async fn walsender_pid(db: &TestDb, slot: &str) -> anyhow::Result<Option<i32>> {
    Ok(db
        .client
        .query_one(
            "select active_pid from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await?
        .get(0))
}

/// Waits for pg_recvlogical to exit, sampling the CPU time of the walsender serving it
/// every millisecond (the walsender is gone once it has finished; the last sample misses
/// at most a millisecond of its work, less than /proc's 10 ms tick).
async fn watch_walsender(
    db: &TestDb,
    slot: &str,
    mut child: Child,
) -> anyhow::Result<(std::process::ExitStatus, f64)> {
    let mut pid = None;
    let mut cpu = 0.0;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(pid.is_some(), "pg_recvlogical's walsender was never seen");
            return Ok((status, cpu));
        }
        match pid {
            None => pid = walsender_pid(db, slot).await?,
            Some(p) => {
                if let Some(c) = process_cpu_seconds(p) {
                    cpu = c;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A process's own CPU seconds (user + system) from /proc/<pid>/stat.
fn process_cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = stat_fields(&stat);
    Some(f.get(11)? + f.get(12)?)
}

/// The numeric fields of a /proc stat line after the command name (which is in
/// parentheses and may contain spaces), in seconds where they are clock ticks.
fn stat_fields(stat: &str) -> Vec<f64> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let tick = 100.0; // USER_HZ on Linux
    rest.split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0) / tick)
        .collect()
}

/// (this process's CPU seconds, its reaped children's CPU seconds), from /proc/self/stat.
fn cpu_seconds() -> (f64, f64) {
    let f = stat_fields(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    // utime, stime, cutime, cstime are fields 14-17 of stat; here 12-15 after "state".
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
    (get(11) + get(12), get(13) + get(14))
}

/// Starts Ripple's stream on `slot` and times until every change has arrived. Returns
/// the time, the last commit LSN and the CPU seconds of the walsender that served it.
async fn ripple_consume(
    db: &TestDb,
    slot: &str,
    rows: u64,
    end_lsn: u64,
) -> anyhow::Result<(Duration, u64, f64)> {
    let start = Instant::now();
    let mut config = ReplicationConfig::new(&db.url, slot, "bench");
    config.protocol_version = Some(1);
    config.create_publication = false;
    let (mut rx, handle) = replication::start(config).await?;
    let connected = start.elapsed();
    let sender = loop {
        if let Some(pid) = walsender_pid(db, slot).await? {
            break pid;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "no walsender");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut changes = 0u64;
    let mut bytes_of_json = 0usize;
    let mut last = 0;
    while changes < rows {
        let t = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        changes += t.changes.len() as u64;
        // Touch the typed rows so nothing is optimised away.
        if let Some(r) = t.changes.last().and_then(|c| c.record.as_ref()) {
            bytes_of_json += r.len();
        }
        handle.confirm(t.commit_lsn);
        last = t.commit_lsn;
        anyhow::ensure!(t.commit_lsn <= end_lsn, "read past the workload");
    }
    anyhow::ensure!(bytes_of_json > 0);
    let received = start.elapsed();
    // Read while the walsender still serves us: it exits when we disconnect.
    let sender_cpu =
        process_cpu_seconds(sender).ok_or_else(|| anyhow::anyhow!("walsender gone"))?;
    // Counted like pg_recvlogical's run, which includes its final report and exit.
    handle.shutdown().await;
    let took = start.elapsed();
    eprintln!(
        "    (ripple: connected in {connected:.2?}, all changes in {received:.2?}, closed after {:.2?})",
        took - received
    );
    Ok((took, last, sender_cpu))
}
