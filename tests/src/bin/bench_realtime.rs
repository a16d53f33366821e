//! Commit-to-client latency and authorized deliveries per second, with Ripple's batched RLS
//! authorizer and, in the same run over the same workload, the per-subscriber live-row
//! check Supabase Realtime does (`LiveRowAuthorizer`).
//!
//! ```text
//! cargo run --release -p ripple-tests --bin bench_realtime [-- --scenario 1000x100,10000x1000]
//! ```
//!
//! Per side: a fresh chat database in a throwaway cluster and the gateway in a process of
//! its own (this binary with `--serve`); `subscribers` users split evenly
//! into `conversations` group conversations; one WebSocket client per user (vsn 2.0.0), each
//! subscribed to INSERTs on `public.messages` filtered to its conversation, as a chat
//! frontend does. Then:
//! - steady: `rate` messages per second for `seconds`, round-robin over the conversations,
//!   each in its own transaction; latency is from the writer's COMMIT returning to the
//!   client reading the change;
//! - burst: `burst` messages written as fast as 4 connections can; deliveries per second is
//!   the expected deliveries (messages x members) over the time until the last arrives;
//! - backlog: the gateway process is paused (SIGSTOP) while `backlog` messages are
//!   committed, then resumed (SIGCONT); deliveries per second from the resume to the last
//!   delivery. The burst cannot go faster than the writers commit; the backlog measures the
//!   gateway's own ceiling (authorizing what queued up in batches).
//!
//! Every delivery is counted: a run where Ripple misses one fails.
//! Everything is on this machine and loopback, bounded in count and time.
//!
//! Figures with the defaults (2 shared cores, PostgreSQL 15, release build):
//!
//! ```text
//! 1000 subscribers over 100 conversations (10 each); steady 50 msg/s for 8 s; burst 1000 msgs
//! authorizer                    p50 ms    p99 ms   steady deliv/s    burst deliv/s  missing
//! ripple (batched RLS)            1.80      4.34              501             6959        0
//! live-row per subscriber         9.42     16.87              501             1053        0
//! ratio (ripple / reference): burst deliveries/s 6.61x, p99 latency 3.88x lower
//!
//! (after shaping each change once per column set rather than per identity)
//! ripple (batched RLS)            2.46      5.68              501             6432        0
//! live-row per subscriber        11.61     24.19              500              835        0
//! ratio (ripple / reference): burst deliveries/s 7.70x, p99 latency 4.26x lower
//!
//! (issue 9: batches of queued transactions, socket loop, gateway in its own process;
//! a machine with a load average of 6 to 10 from other builds)
//! scenario        p50 ms    p99 ms  burst deliv/s    reference/s     ratio
//! 1000x100          2.17     23.23           7898            576    13.72x
//! 10000x1000        7.76     27.69           8009            675    11.86x
//! burst writers alone (commit pace x members): 7,937 and 18,582 deliveries/s
//!
//! (then membership notices wake no socket while no private channel is joined)
//! ripple (batched RLS)            0.78      8.23              501            18233        0
//! live-row per subscriber        40.38    256.51              499              310        2
//! ratio (ripple / reference): burst deliveries/s 58.82x, p99 latency 31.18x lower
//! burst writers alone (commit pace x members): 18411 deliveries/s on the ripple side
//! 10000x1000: ripple p50 3.33 ms, p99 85.25 ms, burst 4172/s (writers alone 15048/s);
//! reference 300/s; 13.90x. At 10,000 sockets Ripple no longer keeps the writers' pace:
//! not yet profiled.
//! ```
//!
//! The burst figure cannot exceed the writers' own pace, which the last line prints: Ripple
//! kept up with it (the gateway process used a few per cent of a core under `perf`); the
//! rest of the two cores goes to PostgreSQL and the clients.
//!
//! The run is CPU-bound on two cores shared by PostgreSQL, Ripple and the 1,000 clients:
//! authorizing several transactions concurrently was tried and gained nothing (it helped
//! the reference as much).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use ripple_tests::{fresh_db, gateway_config, TestDb};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[derive(Parser, Clone)]
#[command(
    about = "Realtime latency and deliveries/s: batched RLS vs a per-subscriber live-row check"
)]
struct Args {
    /// Scenarios as SUBSCRIBERSxCONVERSATIONS, each run on both sides and printed together.
    #[arg(
        long = "scenario",
        value_delimiter = ',',
        default_value = "1000x100,10000x1000"
    )]
    scenarios: Vec<String>,
    #[arg(skip)]
    subscribers: usize,
    #[arg(skip)]
    conversations: usize,
    /// Messages per second in the steady phase.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Runs Ripple's side only (for profiling; no ratio is printed).
    #[arg(long)]
    skip_reference: bool,
    /// Internal: run the gateway for this database URL and slot.
    #[arg(long, num_args = 2, value_names = ["URL", "SLOT"])]
    serve: Option<Vec<String>>,
    #[arg(long, default_value_t = 0)]
    serve_sockets: usize,
    #[arg(long)]
    serve_reference: bool,
    /// Messages in the burst phase.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// Messages committed while the gateway is paused (SIGSTOP), then delivered as fast as
    /// it can catch up: its own ceiling, whatever the writers' pace. The reference side
    /// gets a twentieth of them (at least 100): at its rate the full backlog takes minutes.
    #[arg(long, default_value_t = 5000)]
    backlog: usize,
}

/// What the clients saw: per message, when it was committed; per delivery, the latency.
struct Tally {
    committed: Vec<Mutex<Option<Instant>>>,
    latencies_us: Mutex<Vec<u64>>,
    delivered: AtomicUsize,
    last_delivery: Mutex<Option<Instant>>,
    unknown: AtomicU64,
}

impl Tally {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            committed: (0..n).map(|_| Mutex::new(None)).collect(),
            latencies_us: Mutex::new(Vec::new()),
            delivered: AtomicUsize::new(0),
            last_delivery: Mutex::new(None),
            unknown: AtomicU64::new(0),
        })
    }
}

struct Side {
    name: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    steady_per_s: f64,
    burst_per_s: f64,
    /// The writers' own pace in the burst: the deliveries/s Ripple would show if it
    /// delivered each message the instant it was committed (the ceiling of this measure).
    writers_ceiling_per_s: f64,
    /// Deliveries/s catching up with a backlog committed while the gateway was paused.
    backlog_per_s: f64,
    missing: usize,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn setup(db: &TestDb, args: &Args) -> (Vec<Uuid>, Vec<Uuid>) {
    let users: Vec<Uuid> = (0..args.subscribers).map(|_| Uuid::new_v4()).collect();
    db.client
        .execute(
            "insert into public.profiles (id, display_name) select u, 'user' from unnest($1::uuid[]) u",
            &[&users],
        )
        .await
        .unwrap();
    let per = args.subscribers / args.conversations;
    let mut convs = Vec::new();
    for c in 0..args.conversations {
        let members = &users[c * per..(c + 1) * per];
        let id: Uuid = db
            .client
            .query_one(
                "insert into public.conversations (kind, title, created_by) values ('group', 'g', $1) returning id",
                &[&members[0]],
            )
            .await
            .unwrap()
            .get(0);
        db.client
            .execute(
                "insert into public.conversation_members (conversation_id, user_id) \
                 select $1, u from unnest($2::uuid[]) u",
                &[&id, &members.to_vec()],
            )
            .await
            .unwrap();
        convs.push(id);
    }
    (users, convs)
}

async fn run_side(name: &'static str, args: &Args, reference: bool) -> Side {
    let db = fresh_db().await;
    let (users, convs) = setup(&db, args).await;
    let per = args.subscribers / args.conversations;
    let gw = GatewayProcess::start(&db, args.subscribers, reference).await;
    let backlog = if reference {
        (args.backlog / 20).max(100)
    } else {
        args.backlog
    };
    let total_msgs = args.rate as usize * args.seconds as usize + args.burst + backlog;
    let tally = Tally::new(total_msgs);

    // One client per user, joined to its conversation's changes.
    let joined = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let conv = convs[i / per];
        let token = gw.token_for(*user, 3600);
        let url = format!(
            "ws://{}/realtime/v1/websocket?apikey={}&vsn=2.0.0",
            gw.addr, gw.anon_key
        );
        let (tally, joined) = (tally.clone(), joined.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
            let join = json!(["1", "1", "realtime:c", "phx_join", {
                "config": {"broadcast": {"self": false, "ack": false},
                           "presence": {"key": "", "enabled": false},
                           "postgres_changes": [{"event": "INSERT", "schema": "public",
                               "table": "messages", "filter": format!("conversation_id=eq.{conv}")}],
                           "private": false},
                "access_token": token}]);
            ws.send(Message::Text(join.to_string().into())).await.unwrap();
            let mut heartbeat = tokio::time::interval(Duration::from_secs(20));
            loop {
                let frame = tokio::select! {
                    f = ws.next() => f,
                    _ = heartbeat.tick() => {
                        let _ = ws.send(Message::Text(json!([null, "hb", "phoenix", "heartbeat", {}]).to_string().into())).await;
                        continue;
                    }
                };
                let Some(Ok(Message::Text(t))) = frame else { break };
                let now = Instant::now();
                let v: Value = serde_json::from_str(&t).unwrap();
                match v[3].as_str() {
                    Some("system") if v[4]["message"] == "Subscribed to PostgreSQL" => {
                        joined.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("postgres_changes") => {
                        let seq: usize = v[4]["data"]["record"]["body"]
                            .as_str()
                            .and_then(|b| b.parse().ok())
                            .unwrap_or(usize::MAX);
                        match tally.committed.get(seq).and_then(|m| *m.lock().unwrap()) {
                            Some(at) => tally
                                .latencies_us
                                .lock()
                                .unwrap()
                                .push(now.saturating_duration_since(at).as_micros() as u64),
                            None => {
                                tally.unknown.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                        *tally.last_delivery.lock().unwrap() = Some(now);
                    }
                    _ => {}
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while joined.load(Ordering::Relaxed) < users.len() {
        assert!(Instant::now() < deadline, "clients did not all subscribe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writers: 4 connections; message `seq` goes to conversation seq % n, sent by its first member.
    let mut writers = Vec::new();
    for _ in 0..4 {
        let w = db.connect().await;
        // The test cluster defaults to synchronous_commit=off, where a commit may wait up
        // to wal_writer_delay before the walsender can stream it: latency would measure the
        // WAL writer, not Ripple.
        w.batch_execute("set synchronous_commit = on")
            .await
            .unwrap();
        writers.push(w);
    }

    // Steady phase.
    let steady_n = args.rate as usize * args.seconds as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now();
    for seq in 0..steady_n {
        let due = start + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let w = &writers[seq % writers.len()];
        let conv = convs[seq % convs.len()];
        let sender = users[(seq % convs.len()) * per];
        w.execute(INSERT, &[&conv, &sender, &seq.to_string()])
            .await
            .unwrap();
        *tally.committed[seq].lock().unwrap() = Some(Instant::now());
    }
    let expected_steady = steady_n * per;
    wait_for(&tally, expected_steady, Duration::from_secs(60)).await;
    let steady_end = tally
        .last_delivery
        .lock()
        .unwrap()
        .unwrap_or_else(Instant::now);
    let steady_per_s = tally.delivered.load(Ordering::Relaxed) as f64
        / steady_end.duration_since(start).as_secs_f64();
    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
    lat.sort_unstable();

    // Burst phase: as fast as 4 writers go.
    let writers = Arc::new(writers);
    let cache_before_burst = verdict_cache(&gw.addr).await;
    let burst_start = Instant::now();
    let convs = Arc::new(convs);
    let users = Arc::new(users);
    write_all(
        &writers,
        steady_n..steady_n + args.burst,
        &tally,
        &convs,
        &users,
        per,
    )
    .await;
    let writers_done = burst_start.elapsed();
    let expected_all = (steady_n + args.burst) * per;
    wait_for(&tally, expected_all, Duration::from_secs(120)).await;
    let burst_end = tally
        .last_delivery
        .lock()
        .unwrap()
        .unwrap_or_else(Instant::now);
    let burst_per_s =
        (args.burst * per) as f64 / burst_end.duration_since(burst_start).as_secs_f64();

    let cache_after_burst = verdict_cache(&gw.addr).await;
    // Backlog phase: the gateway process is paused while the backlog is committed, then
    // resumed; from then until the last delivery is how fast it catches up (authorizing
    // queued transactions in batches), which the writers' pace cannot limit.
    gw.signal("-STOP");
    let first = steady_n + args.burst;
    write_all(
        &writers,
        first..first + backlog,
        &tally,
        &convs,
        &users,
        per,
    )
    .await;
    let resumed = Instant::now();
    gw.signal("-CONT");
    let expected_all = expected_all + backlog * per;
    wait_for(&tally, expected_all, Duration::from_secs(300)).await;
    let backlog_end = tally
        .last_delivery
        .lock()
        .unwrap()
        .unwrap_or_else(Instant::now);
    let backlog_per_s = (backlog * per) as f64 / backlog_end.duration_since(resumed).as_secs_f64();
    let cache_after_backlog = verdict_cache(&gw.addr).await;
    if !reference {
        // Where the time can go: a question the cache answers costs no database work.
        let share = |(h0, m0): (f64, f64), (h1, m1): (f64, f64)| {
            let (h, m) = (h1 - h0, m1 - m0);
            format!(
                "{h:.0} hits, {m:.0} misses ({:.0}% answered from the cache)",
                100.0 * h / (h + m).max(1.0)
            )
        };
        println!(
            "verdict cache: burst {}; backlog {}",
            share(cache_before_burst, cache_after_burst),
            share(cache_after_burst, cache_after_backlog)
        );
    }

    let missing = expected_all.saturating_sub(tally.delivered.load(Ordering::Relaxed));
    for t in tasks {
        t.abort();
    }
    gw.stop().await;
    Side {
        name,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        steady_per_s,
        burst_per_s,
        writers_ceiling_per_s: (args.burst * per) as f64 / writers_done.as_secs_f64(),
        backlog_per_s,
        missing,
    }
}

/// Commits messages `seqs` with 4 writers as fast as they go: message `seq` goes to
/// conversation seq % n, sent by its first member.
async fn write_all(
    writers: &Arc<Vec<tokio_postgres::Client>>,
    seqs: std::ops::Range<usize>,
    tally: &Arc<Tally>,
    convs: &Arc<Vec<Uuid>>,
    users: &Arc<Vec<Uuid>>,
    per: usize,
) {
    let next = Arc::new(AtomicUsize::new(seqs.start));
    let mut handles = Vec::new();
    for w in 0..writers.len() {
        let (writers, next, tally, convs, users) = (
            writers.clone(),
            next.clone(),
            tally.clone(),
            convs.clone(),
            users.clone(),
        );
        let limit = seqs.end;
        handles.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= limit {
                    break;
                }
                let conv = convs[seq % convs.len()];
                let sender = users[(seq % convs.len()) * per];
                writers[w]
                    .execute(INSERT, &[&conv, &sender, &seq.to_string()])
                    .await
                    .unwrap();
                *tally.committed[seq].lock().unwrap() = Some(Instant::now());
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

/// The gateway's verdict cache (hits, misses) so far, from its `/metrics`.
async fn verdict_cache(addr: &str) -> (f64, f64) {
    let addr = addr.parse().expect("gateway address");
    (
        ripple_tests::metric(addr, "ripple_verdict_cache_hits_total").await,
        ripple_tests::metric(addr, "ripple_verdict_cache_misses_total").await,
    )
}

const INSERT: &str =
    "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, $3)";

async fn wait_for(tally: &Tally, expected: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while tally.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway under test, in a process of its own (this binary with `--serve`): its
/// sockets do not count against this process's open-files limit (10,000 subscribers are
/// 10,000 sockets on each side), and a profiler can be pointed at it alone.
struct GatewayProcess {
    child: tokio::process::Child,
    addr: String,
    anon_key: String,
    verifier: ripple::auth::JwtVerifier,
}

impl GatewayProcess {
    async fn start(db: &TestDb, subscribers: usize, reference: bool) -> Self {
        let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--serve", &db.url, &db.name])
            .args(["--serve-sockets", &subscribers.to_string()]);
        if reference {
            cmd.arg("--serve-reference");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gateway process");
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = out.next_line().await.unwrap().expect("gateway address");
        let addr = line.strip_prefix("ADDR ").expect("ADDR line").to_string();
        let verifier = ripple::auth::JwtVerifier::new(&gateway_config().jwt_config().unwrap())
            .expect("verifier");
        let anon_key = verifier.mint_for("anon", None, 7200).unwrap();
        if let Ok(pid) = std::env::var("BENCH_PID_FILE") {
            let _ = std::fs::write(pid, child.id().unwrap_or(0).to_string());
        }
        Self {
            child,
            addr,
            anon_key,
            verifier,
        }
    }

    /// Sends the gateway process a signal (`-STOP`, `-CONT`) with kill(1).
    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("gateway running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {pid}");
    }

    fn token_for(&self, user: Uuid, ttl: i64) -> String {
        self.verifier
            .mint_for("authenticated", Some(&user.to_string()), ttl)
            .unwrap()
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The child: a gateway on the benchmark's database until its stdin closes.
async fn serve(url: &str, slot: &str, sockets: usize, reference: bool) {
    ripple_tests::raise_open_files(sockets);
    let make: ripple::server::MakeAuthorizer = if reference {
        Box::new(|app| Arc::new(ripple::authorize::LiveRowAuthorizer::new(app.pool.clone())))
    } else {
        Box::new(ripple::server::default_authorizer)
    };
    let mut config = gateway_config();
    config.slot = slot.to_string();
    config.client_queue = 100_000;
    config.max_sockets = sockets + 100;
    config.max_connections = sockets + 1024;
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    println!("ADDR {}", listener.local_addr().unwrap());
    let stdin_closed = async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    ripple::server::run_with(listener, config, url, stdin_closed, make)
        .await
        .expect("gateway");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let base = Args::parse();
    if let Some(serve_args) = &base.serve {
        serve(
            &serve_args[0],
            &serve_args[1],
            base.serve_sockets,
            base.serve_reference,
        )
        .await;
        return;
    }
    let mut results = Vec::new();
    for scenario in &base.scenarios {
        let (subs, convs) = scenario
            .split_once('x')
            .and_then(|(s, c)| Some((s.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
            .expect("a scenario is SUBSCRIBERSxCONVERSATIONS, e.g. 1000x100");
        assert!(subs % convs == 0);
        let args = Args {
            subscribers: subs,
            conversations: convs,
            ..base.clone()
        };
        let nofile = ripple_tests::raise_open_files(subs);
        println!(
            "{} subscribers over {} conversations ({} each); steady {} msg/s for {} s; burst {} msgs; backlog {} msgs (open files {nofile})",
            args.subscribers,
            args.conversations,
            args.subscribers / args.conversations,
            args.rate,
            args.seconds,
            args.burst,
            args.backlog
        );
        let ripple = run_side("ripple (batched RLS)", &args, false).await;
        if args.skip_reference {
            println!(
                "ripple: p50 {:.2} ms, p99 {:.2} ms, burst {:.0} deliveries/s (writers alone {:.0}), backlog {:.0} deliveries/s, missing {}",
                ripple.p50_ms, ripple.p99_ms, ripple.burst_per_s, ripple.writers_ceiling_per_s, ripple.backlog_per_s, ripple.missing
            );
            assert_eq!(ripple.missing, 0, "ripple missed deliveries");
            continue;
        }
        let reference = run_side("live-row per subscriber", &args, true).await;
        print_table(&ripple, &reference);
        results.push((scenario.clone(), ripple, reference));
    }
    if results.len() > 1 {
        println!();
        println!(
            "{:<12} {:>9} {:>9} {:>14} {:>14} {:>9} {:>16} {:>14} {:>9}",
            "scenario",
            "p50 ms",
            "p99 ms",
            "burst deliv/s",
            "reference/s",
            "ratio",
            "backlog deliv/s",
            "reference/s",
            "ratio"
        );
        for (scenario, ripple, reference) in &results {
            println!(
                "{:<12} {:>9.2} {:>9.2} {:>14.0} {:>14.0} {:>8.2}x {:>16.0} {:>14.0} {:>8.2}x",
                scenario,
                ripple.p50_ms,
                ripple.p99_ms,
                ripple.burst_per_s,
                reference.burst_per_s,
                ripple.burst_per_s / reference.burst_per_s,
                ripple.backlog_per_s,
                reference.backlog_per_s,
                ripple.backlog_per_s / reference.backlog_per_s
            );
        }
    }
    // Ripple must deliver everything; the reference's misses (if any) are printed above,
    // and would only flatter its figures.
    for (scenario, ripple, _) in &results {
        assert_eq!(ripple.missing, 0, "ripple missed deliveries in {scenario}");
    }
}

fn print_table(ripple: &Side, reference: &Side) {
    println!(
        "{:<26} {:>9} {:>9} {:>16} {:>16} {:>16} {:>8}",
        "authorizer",
        "p50 ms",
        "p99 ms",
        "steady deliv/s",
        "burst deliv/s",
        "backlog deliv/s",
        "missing"
    );
    for s in [ripple, reference] {
        println!(
            "{:<26} {:>9.2} {:>9.2} {:>16.0} {:>16.0} {:>16.0} {:>8}",
            s.name, s.p50_ms, s.p99_ms, s.steady_per_s, s.burst_per_s, s.backlog_per_s, s.missing
        );
    }
    println!(
        "ratio (ripple / reference): burst deliveries/s {:.2}x, backlog deliveries/s {:.2}x, p99 latency {:.2}x lower",
        ripple.burst_per_s / reference.burst_per_s,
        ripple.backlog_per_s / reference.backlog_per_s,
        reference.p99_ms / ripple.p99_ms
    );
    println!(
        "burst writers alone (commit pace x members): {:.0} deliveries/s on the ripple side, {:.0} on the reference side",
        ripple.writers_ceiling_per_s, reference.writers_ceiling_per_s
    );
}
