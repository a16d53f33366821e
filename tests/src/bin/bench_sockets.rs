//! Server memory per idle socket, and how many concurrent sockets one gateway holds.
//!
//! ```text
//! cargo run --release -p ripple-tests --bin bench_sockets [-- --idle 10000 --hold 20000]
//! ```
//!
//! The gateway runs in a child process of its own (this binary, re-run with `--serve`), so
//! its resident memory (`VmRSS` of `/proc/<pid>/status`) holds no client state. Then:
//! 1. one client joins, to warm every path; the gateway's RSS is read;
//! 2. `idle` clients connect and join one channel each (a chat frontend's subscription:
//!    INSERTs on `public.messages` of its conversation); once every join is answered and
//!    the gateway has settled, its RSS is read again: (after - before) / idle is the server
//!    memory per idle socket;
//! 3. more clients connect, up to `hold` sockets open at once, every one joined; each
//!    socket is then proven alive (a heartbeat answered on every one of them);
//! 4. one more is refused with 429 (the gateway runs with `RIPPLE_MAX_SOCKETS` = `hold`).
//!
//! Both processes raise their open-files limit to fit (the gateway logs it at start).
//! Everything is loopback, bounded in count and time.
//!
//! Figures (2 shared cores, release build; this machine's hard open-files limit is 20,000
//! per process, so 19,700 sockets are held):
//!
//! ```text
//! 2026-11-25 (tungstenite 0.24, tokio mpsc per socket, claims kept per channel):
//!   22.66 KiB per idle socket (5,000 sockets)
//! 2026-12-07 (512-byte read buffer, the task's future holding each piece once, one-Arc
//! queue, shared Identity):
//!   idle sockets: 10000 joined; gateway RSS 12396 KiB -> 81500 KiB: 6.91 KiB per idle socket
//!   held: 19700 of 19700 sockets answered a heartbeat; 7.30 KiB per socket overall
//!   socket 19701 (beyond RIPPLE_MAX_SOCKETS=19700): HTTP 429
//! ```

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[derive(Parser, Clone)]
#[command(about = "Server memory per idle socket and concurrent sockets held")]
struct Args {
    /// Sockets whose memory is measured.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Sockets held open at once (and the gateway's RIPPLE_MAX_SOCKETS).
    #[arg(long, default_value_t = 20_000)]
    hold: usize,
    /// Conversations the subscriptions are spread over.
    #[arg(long, default_value_t = 1_000)]
    conversations: usize,
    /// Internal: run the gateway for this database URL (and slot) and print its address.
    #[arg(long, num_args = 2, value_names = ["URL", "SLOT"])]
    serve: Option<Vec<String>>,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The child: a gateway on the test database, until its stdin closes.
async fn serve(url: &str, slot: &str, max_sockets: usize) {
    let limit = ripple_tests::raise_open_files(max_sockets);
    let mut config = ripple_tests::gateway_config();
    config.slot = slot.to_string();
    config.max_sockets = max_sockets;
    config.max_connections = max_sockets + 1024;
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    println!("ADDR {} NOFILE {limit}", listener.local_addr().unwrap());
    let stdin_closed = async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    ripple::server::run_with(
        listener,
        config,
        url,
        stdin_closed,
        Box::new(ripple::server::default_authorizer),
    )
    .await
    .expect("gateway");
}

/// One client: connects, joins its conversation's changes, reports the join, then answers
/// `beat` requests with a heartbeat round trip until told to stop.
async fn client(
    url: String,
    token: String,
    conv: Uuid,
    joined: Arc<AtomicUsize>,
    mut beat: mpsc::Receiver<mpsc::Sender<bool>>,
) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let join = json!(["1", "1", "realtime:c", "phx_join", {
        "config": {"broadcast": {"self": false, "ack": false},
                   "presence": {"key": "", "enabled": false},
                   "postgres_changes": [{"event": "INSERT", "schema": "public",
                       "table": "messages", "filter": format!("conversation_id=eq.{conv}")}],
                   "private": false},
        "access_token": token}]);
    ws.send(Message::Text(join.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let mut keepalive = tokio::time::interval(Duration::from_secs(20));
    let mut next_ref = 1u64;
    let mut waiting: Option<(String, mpsc::Sender<bool>)> = None;
    let mut is_joined = false;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let t = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    // The gateway stopping at the end of the run closes joined sockets: not a
                    // failure (a socket lost before its heartbeat fails the count instead).
                    Some(Ok(Message::Close(_))) | None if is_joined && waiting.is_none() => {
                        return Ok(())
                    }
                    _ => return Err("closed".into()),
                };
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v[3] == "system" && v[4]["message"] == "Subscribed to PostgreSQL" {
                    is_joined = true;
                    joined.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((r, _)) = &waiting {
                    if v[3] == "phx_reply" && v[1].as_str() == Some(r.as_str()) {
                        let (_, done) = waiting.take().expect("waiting");
                        let _ = done.send(v[4]["status"] == "ok").await;
                    }
                }
            }
            asked = beat.recv() => {
                let Some(done) = asked else { return Ok(()) };
                next_ref += 1;
                let r = format!("hb{next_ref}");
                ws.send(Message::Text(json!([null, r, "phoenix", "heartbeat", {}]).to_string().into()))
                    .await
                    .map_err(|e| e.to_string())?;
                waiting = Some((r, done));
            }
            _ = keepalive.tick() => {
                next_ref += 1;
                let _ = ws
                    .send(Message::Text(json!([null, format!("k{next_ref}"), "phoenix", "heartbeat", {}]).to_string().into()))
                    .await;
            }
        }
    }
}

struct Clients {
    beats: Vec<mpsc::Sender<mpsc::Sender<bool>>>,
    joined: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Clients {
    /// Opens `n` more clients, a few hundred connecting at a time, and waits until every
    /// one of them is joined.
    async fn open(
        &mut self,
        n: usize,
        url: &str,
        verifier: &ripple::auth::JwtVerifier,
        convs: &[Uuid],
    ) {
        let target = self.joined.load(Ordering::Relaxed) + n;
        for _ in 0..n {
            let i = self.beats.len();
            let token = verifier
                .mint_for("authenticated", Some(&Uuid::new_v4().to_string()), 7200)
                .expect("token");
            let (tx, rx) = mpsc::channel(1);
            self.beats.push(tx);
            let (joined, failed) = (self.joined.clone(), self.failed.clone());
            let (url, conv) = (url.to_string(), convs[i % convs.len()]);
            tokio::spawn(async move {
                if let Err(e) = client(url, token, conv, joined, rx).await {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("client {i}: {e}");
                    }
                }
            });
            // Pace the connects so the accept queue is never the bottleneck measured.
            while self.beats.len()
                - self.joined.load(Ordering::Relaxed)
                - self.failed.load(Ordering::Relaxed)
                > 256
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.joined.load(Ordering::Relaxed) < target {
            assert!(
                self.failed.load(Ordering::Relaxed) == 0,
                "a client failed before joining"
            );
            assert!(Instant::now() < deadline, "clients did not all join");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A heartbeat round trip on every socket; returns how many were answered.
    async fn all_alive(&self) -> usize {
        let (tx, mut rx) = mpsc::channel(self.beats.len().max(1));
        for b in &self.beats {
            let _ = b.send(tx.clone()).await;
        }
        drop(tx);
        let mut ok = 0;
        while let Ok(Some(answer)) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await
        {
            ok += usize::from(answer);
        }
        ok
    }
}

/// The gateway's RSS once it stops moving (it frees and reuses as tasks settle).
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) < 256 {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = Args::parse();
    // Each process needs a file per socket plus headroom (the gateway: its listener,
    // database connections, epoll); where the hard limit cannot be raised (no
    // CAP_SYS_RESOURCE), it caps the sockets held: the gateway keeps 256 files for itself
    // (its connection budget is the limit less those), and one more connection must fit
    // under the budget to be answered 429 by RIPPLE_MAX_SOCKETS rather than closed at accept.
    let limit = ripple_tests::raise_open_files(args.hold + 16);
    if (args.hold as u64) + 300 > limit {
        let capped = (limit.saturating_sub(300)) as usize;
        if args.serve.is_none() {
            println!(
                "the open-files limit ({limit}, not raisable here) caps held sockets at {capped} (asked {})",
                args.hold
            );
        }
        args.hold = capped;
        args.idle = args.idle.min(capped);
    }
    if let Some(serve_args) = &args.serve {
        serve(&serve_args[0], &serve_args[1], args.hold).await;
        return;
    }
    assert!(args.idle <= args.hold);
    let nofile = limit;
    let db = ripple_tests::fresh_db().await;
    let convs: Vec<Uuid> = {
        let owner = db.create_user("Owner").await;
        let rows = db
            .client
            .query(
                "insert into public.conversations (kind, title, created_by) \
                 select 'group', 'g', $1 from generate_series(1, $2::int) returning id",
                &[&owner, &(args.conversations as i32)],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--hold",
            &args.hold.to_string(),
            "--serve",
            &db.url,
            &db.name,
        ])
        .env("RIPPLE_LOG", "ripple=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway process");
    let pid = child.id().expect("pid");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = out.next_line().await.unwrap().expect("gateway address");
    let mut words = first.split_whitespace().skip(1);
    let addr = words.next().expect("addr").to_string();
    let gateway_nofile = words.nth(1).unwrap_or("?").to_string();
    let config = ripple_tests::gateway_config();
    let verifier = ripple::auth::JwtVerifier::new(&config.jwt_config().unwrap()).unwrap();
    let anon = verifier.mint_for("anon", None, 7200).unwrap();
    let url = format!("ws://{addr}/realtime/v1/websocket?apikey={anon}&vsn=2.0.0");
    println!(
        "gateway pid {pid} on {addr}; open-files limit: gateway {gateway_nofile}, clients {nofile}; \
         {} conversations",
        args.conversations
    );

    let mut clients = Clients {
        beats: Vec::new(),
        joined: Arc::new(AtomicUsize::new(0)),
        failed: Arc::new(AtomicUsize::new(0)),
    };
    clients.open(1, &url, &verifier, &convs).await;
    let before = settled_rss(pid).await;
    let started = Instant::now();
    clients.open(args.idle - 1, &url, &verifier, &convs).await;
    let opened_in = started.elapsed();
    let after = settled_rss(pid).await;
    let per_socket = (after.saturating_sub(before)) as f64 * 1024.0 / (args.idle - 1) as f64;
    println!(
        "idle sockets: {} joined in {:.1} s; gateway RSS {} KiB -> {} KiB: {:.0} bytes ({:.2} KiB) per idle socket (target <= 8 KiB)",
        args.idle,
        opened_in.as_secs_f64(),
        before,
        after,
        per_socket,
        per_socket / 1024.0
    );

    clients
        .open(args.hold - args.idle, &url, &verifier, &convs)
        .await;
    let alive = clients.all_alive().await;
    let held_rss = rss_kib(pid);
    println!(
        "held: {alive} of {} sockets open at once answered a heartbeat; gateway RSS {} KiB ({:.2} KiB per socket overall)",
        args.hold,
        held_rss,
        held_rss as f64 / args.hold as f64
    );
    // One past RIPPLE_MAX_SOCKETS is refused.
    let refused = match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("unexpected error for the socket beyond the limit: {e}"),
        Ok(_) => 101,
    };
    println!(
        "socket {} (beyond RIPPLE_MAX_SOCKETS={}): HTTP {refused}",
        args.hold + 1,
        args.hold
    );
    drop(clients);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let _ = child.kill().await;
    assert_eq!(alive, args.hold, "every held socket answers");
    assert_eq!(
        refused, 429,
        "the socket beyond the limit is refused with 429"
    );
}
