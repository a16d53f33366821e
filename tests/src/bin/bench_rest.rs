//! RPC and an embedded select through Ripple beside the same SQL run directly by pgbench,
//! in one run.
//!
//! ```text
//! cargo run --release -p ripple-tests --bin bench_rest [-- --clients 16 --seconds 5]
//! ```
//!
//! A throwaway cluster and a chat database: `clients` users, each in `conversations` direct
//! conversations of `messages` messages (and 50 more in the first). Then, per phase,
//! `clients` concurrent keep-alive HTTP clients call Ripple as their own user for
//! `seconds`, and pgbench runs the same transaction directly with as many connections:
//! BEGIN; the role, claims, statement timeout and search_path set locally; the statement
//! Ripple runs, its values bound the same way; COMMIT. The phases: `POST
//! /rest/v1/rpc/send_message`, `POST /rest/v1/rpc/list_conversations`, and the chat UI's
//! embedded select, `GET /rest/v1/messages?select=id,body,created_at,sender:profiles(
//! display_name,avatar_url)&conversation_id=eq.<id>&order=created_at.desc&limit=50` (one
//! statement, a lateral subquery for the senders). The ratio of the two sides is what the
//! gateway costs. Everything runs on this machine (the load generator shares the cores with
//! Ripple and PostgreSQL, as pgbench does), over loopback, and stops by itself.
//!
//! Figures from two runs with the defaults (2 cores shared with other builds, PostgreSQL
//! 15, release build; expect spread):
//!
//! ```text
//! function             side          req/s    p50 ms    p99 ms
//! send_message         ripple        638.4     21.97     73.57
//! send_message         pgbench      1024.8     13.24     50.74     ratio 0.62
//! list_conversations   ripple        186.2     84.20    140.90
//! list_conversations   pgbench       221.5     70.63    145.19     ratio 0.84
//! embed_50_senders     ripple        854.2     17.45     48.31
//! embed_50_senders     pgbench      1216.0     10.73     58.97     ratio 0.70
//!
//! send_message         ripple        711.4     20.08     65.29
//! send_message         pgbench      1001.7     14.15     48.09     ratio 0.71
//! list_conversations   ripple        198.2     78.36    136.84
//! list_conversations   pgbench       242.5     63.73    156.66     ratio 0.82
//! embed_50_senders     ripple       1005.7     13.90     44.28
//! embed_50_senders     pgbench      1440.7      9.41     47.59     ratio 0.70
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use hyper::Method;
use ripple_tests::http::Conn;
use uuid::Uuid;

/// The statement Ripple plans for the embedded select above (see `rest::sql`); pgbench binds
/// the conversation, limit and offset as Ripple does (a literal limit would let PostgreSQL
/// pick a generic plan that is wrong for the bench's skewed conversations, and measure that).
const EMBED_SQL: &str = "select coalesce(json_agg(_ripple_r), '[]')::text, count(*), null::bigint from (select _ripple_src.\"id\" as \"id\", _ripple_src.\"body\" as \"body\", _ripple_src.\"created_at\" as \"created_at\", _ripple_j1.body as \"sender\" from \"public\".\"messages\" _ripple_src left join lateral (select row_to_json(_ripple_t1) as body from (select _ripple_1.\"display_name\" as \"display_name\", _ripple_1.\"avatar_url\" as \"avatar_url\" from \"public\".\"profiles\" _ripple_1 where _ripple_1.\"id\" = _ripple_src.\"sender_id\") _ripple_t1) _ripple_j1 on true where _ripple_src.\"conversation_id\" = :conv::uuid order by _ripple_src.\"created_at\" desc limit :lim::bigint offset :off::bigint) _ripple_r;";

#[derive(Parser)]
#[command(about = "Ripple RPC throughput and latency beside pgbench running the same SQL")]
struct Args {
    /// Concurrent clients (HTTP connections; pgbench connections).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each measured phase runs (there are four, plus a short warm-up each).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Conversations each user is in.
    #[arg(long, default_value_t = 10)]
    conversations: usize,
    /// Messages already in each conversation.
    #[arg(long, default_value_t = 20)]
    messages: usize,
}

/// One measured request shape: what Ripple is sent (`CONV` becomes the user's
/// conversation), and the same SQL for pgbench.
struct Phase {
    name: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    sql: &'static str,
    read_only: bool,
}

struct Figures {
    requests: usize,
    errors: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.clients > 0 && args.seconds > 0,
        "clients and seconds must be positive"
    );
    anyhow::ensure!(args.seconds <= 10, "keep phases short: at most 10 s each");
    let pgbench = find_pgbench()?;

    eprintln!("bench_rest: starting a throwaway cluster and seeding the chat database");
    let db = ripple_tests::fresh_db().await;
    let users = seed(&db, &args).await?;
    let mut config = ripple_tests::gateway_config();
    config.pool_size = args.clients;
    let gw = ripple_tests::spawn_gateway_with(&db, config).await;
    let tokens: Vec<String> = users.iter().map(|(u, _)| gw.token_for(*u, 3600)).collect();
    let script_dir = std::env::temp_dir().join(format!("ripple-bench-{}", std::process::id()));
    std::fs::create_dir_all(&script_dir)?;

    let version: String = db
        .client
        .query_one("show server_version", &[])
        .await?
        .get(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "bench_rest: {} clients, {} s per phase, {} cores, PostgreSQL {version}, pool {} (Ripple) = {} connections (pgbench)",
        args.clients, args.seconds, cores, args.clients, args.clients
    );
    println!(
        "data: {} users x {} conversations x {} messages (+50 in each user's first); Ripple: POST /rest/v1/rpc/<fn> and GET /rest/v1/messages?select=...,sender:profiles(...) over HTTP/1.1 keep-alive",
        args.clients, args.conversations, args.messages
    );
    println!(
        "{:<20} {:<8} {:>10} {:>9} {:>9} {:>8}",
        "function", "side", "req/s", "p50 ms", "p99 ms", "errors"
    );

    let phases = [
        Phase {
            name: "send_message",
            method: Method::POST,
            path: "/rest/v1/rpc/send_message",
            body: Some(r#"{"conversation_id":"CONV","body":"bench"}"#),
            sql: "select row_to_json(m) from public.send_message((select conv from bench.users where idx = :u), 'bench') m;",
            read_only: false,
        },
        Phase {
            name: "list_conversations",
            method: Method::POST,
            path: "/rest/v1/rpc/list_conversations",
            body: Some("{}"),
            sql: "select coalesce(json_agg(c), '[]') from public.list_conversations() c;",
            read_only: false,
        },
        Phase {
            // The chat UI's first query: the latest 50 messages with their senders, one
            // statement with a lateral subquery per embedded table (RLS on both).
            name: "embed_50_senders",
            method: Method::GET,
            path: "/rest/v1/messages?select=id,body,created_at,sender:profiles(display_name,avatar_url)&conversation_id=eq.CONV&order=created_at.desc&limit=50",
            body: None,
            sql: EMBED_SQL,
            read_only: true,
        },
    ];
    let duration = Duration::from_secs(args.seconds);
    for Phase {
        name: function,
        method,
        path,
        body,
        sql,
        read_only,
    } in phases
    {
        let requests: Vec<(String, Option<String>)> = users
            .iter()
            .map(|(_, conv)| {
                let conv = conv.to_string();
                (
                    path.replace("CONV", &conv),
                    body.map(|b| b.replace("CONV", &conv)),
                )
            })
            .collect();
        // Warm-up: connections, prepared statements, the catalog.
        ripple_phase(gw.addr, &method, &tokens, &requests, Duration::from_secs(1)).await?;
        let ripple = ripple_phase(gw.addr, &method, &tokens, &requests, duration).await?;
        let script = script_dir.join(format!("{function}.sql"));
        std::fs::write(&script, pgbench_script(sql, args.clients, read_only))?;
        let direct = pgbench_phase(
            &pgbench,
            &db.url,
            &script,
            &script_dir,
            args.clients,
            duration,
        )?;
        for (side, f) in [("ripple", &ripple), ("pgbench", &direct)] {
            println!(
                "{:<20} {:<8} {:>10.1} {:>9.2} {:>9.2} {:>8}",
                function, side, f.per_second, f.p50_ms, f.p99_ms, f.errors
            );
        }
        println!(
            "{:<20} ratio    ripple/pgbench throughput {:.2}, p50 {:.2}x, p99 {:.2}x",
            function,
            ripple.per_second / direct.per_second,
            ripple.p50_ms / direct.p50_ms,
            ripple.p99_ms / direct.p99_ms,
        );
        anyhow::ensure!(
            ripple.errors == 0,
            "{function}: {} requests failed",
            ripple.errors
        );
        anyhow::ensure!(
            ripple.requests > 0 && direct.requests > 0,
            "{function}: nothing ran"
        );
    }
    let _ = std::fs::remove_dir_all(&script_dir);
    Ok(())
}

/// `clients` users, each with its own direct conversations, and a lookup table pgbench
/// uses to act as the same users (`bench.users`: index -> user id, claims, a conversation).
async fn seed(db: &ripple_tests::TestDb, args: &Args) -> anyhow::Result<Vec<(Uuid, Uuid)>> {
    let sql = format!(
        "create schema bench;
         grant usage on schema bench to authenticated;
         create table bench.users (idx int primary key, id uuid not null, claims text not null, conv uuid);
         grant select on bench.users to authenticated;
         insert into public.profiles (id, display_name)
           select gen_random_uuid(), 'user ' || g from generate_series(0, {clients} - 1) g;
         insert into public.profiles (id, display_name)
           select gen_random_uuid(), 'partner ' || g from generate_series(0, {convs} - 1) g;
         insert into bench.users (idx, id, claims)
           select row_number() over (order by id) - 1, id,
                  json_build_object('sub', id, 'role', 'authenticated')::text
             from public.profiles where display_name like 'user %';
         -- One statement each: the message trigger reads its conversation's row, which a
         -- data-modifying CTE of the same statement would not show it.
         create temp table pairs as
           select u.id as u, p.id as p, gen_random_uuid() as conv
             from public.profiles u, public.profiles p
            where u.display_name like 'user %' and p.display_name like 'partner %';
         insert into public.conversations (id, kind, created_by, direct_key)
           select conv, 'direct', u, least(u, p)::text || ':' || greatest(u, p)::text from pairs;
         insert into public.conversation_members (conversation_id, user_id)
           select conv, u from pairs union all select conv, p from pairs;
         insert into public.messages (conversation_id, sender_id, body)
         select conv, case when g % 2 = 0 then u else p end, 'message ' || g
           from pairs, generate_series(1, {msgs}) g;
         update bench.users b set conv = (
           select m.conversation_id from public.conversation_members m
            where m.user_id = b.id order by m.conversation_id limit 1);
         -- At least 50 messages, from both members, where the embedded select reads.
         insert into public.messages (conversation_id, sender_id, body)
         select b.conv,
                case when g % 2 = 0 then b.id
                     else (select m.user_id from public.conversation_members m
                            where m.conversation_id = b.conv and m.user_id <> b.id) end,
                'recent ' || g
           from bench.users b, generate_series(1, 50) g;
         analyze;",
        clients = args.clients,
        convs = args.conversations,
        msgs = args.messages,
    );
    db.client.batch_execute(&sql).await?;
    let rows = db
        .client
        .query("select id, conv from bench.users order by idx", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One HTTP client per user, each on its own keep-alive connection, for `duration`.
async fn ripple_phase(
    addr: std::net::SocketAddr,
    method: &Method,
    tokens: &[String],
    requests: &[(String, Option<String>)],
    duration: Duration,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for (token, (path, body)) in tokens.iter().zip(requests) {
        let auth = format!("Bearer {token}");
        let body = body.clone();
        let path = path.clone();
        let method = method.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = conn
                    .send(
                        method.clone(),
                        &path,
                        &[
                            ("authorization", auth.as_str()),
                            ("content-type", "application/json"),
                        ],
                        body.clone().map(String::into_bytes),
                    )
                    .await?;
                latencies.push(t.elapsed().as_micros() as u64);
                if r.status != 200 {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("bench_rest: {} {}: {}", r.status, path, r.text());
                    }
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, err) = t.await??;
        all.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Figures {
        requests: all.len(),
        errors,
        per_second: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    })
}

/// The transaction Ripple runs for a request, written out for pgbench.
fn pgbench_script(call: &str, clients: usize, read_only: bool) -> String {
    let begin = if read_only {
        "begin read only"
    } else {
        "begin"
    };
    // A statement that reads `:conv` gets it as a bound parameter, as Ripple binds it: the
    // settings statement also fetches it (`\gset`), so no round trip is added.
    let (conv, gset) = if call.contains(":conv") {
        (
            ", (select conv from bench.users where idx = :u) as conv",
            " \\gset",
        )
    } else {
        ("", ";")
    };
    let page = if call.contains(":lim") {
        "\\set lim 50\n\\set off 0\n"
    } else {
        ""
    };
    format!(
        "\\set u :client_id % {clients}\n\
         {page}{begin};\n\
         select set_config('role', 'authenticated', true) as r, set_config('request.jwt.claims', (select claims from bench.users where idx = :u), true) as c, set_config('statement_timeout', '8000', true) as t, set_config('search_path', '\"public\"', true) as p{conv}{gset}\n\
         {call}\n\
         commit;\n"
    )
}

fn pgbench_phase(
    pgbench: &Path,
    url: &str,
    script: &Path,
    dir: &Path,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let prefix = dir.join(format!(
        "log-{}",
        script.file_stem().and_then(|s| s.to_str()).unwrap_or("x")
    ));
    let out = std::process::Command::new(pgbench)
        .arg("--no-vacuum")
        .arg("--protocol=prepared")
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", clients.min(2)))
        .arg(format!("--time={}", duration.as_secs()))
        .arg(format!("--file={}", script.display()))
        .arg("--log")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(url)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output:\n{stdout}"))?;
    let failed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("number of failed transactions: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    // Per-transaction log lines: client_id transaction_no latency_us script_no epoch us.
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with(prefix.file_name().and_then(|n| n.to_str()).unwrap_or("?")) {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latencies.push(us);
            }
        }
        std::fs::remove_file(&path)?;
    }
    latencies.sort_unstable();
    Ok(Figures {
        requests: latencies.len(),
        errors: failed,
        per_second: tps,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

fn find_pgbench() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = ripple::embedded::PgBinaries::find() {
        let p = bin.tool("pgbench");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!("pgbench not found: install PostgreSQL's client tools (Debian: postgresql-contrib or postgresql)")
}
