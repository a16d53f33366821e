//! The chat functions at a million messages, beside the V4 implementation in the same run.
//!
//! ```text
//! cargo run --release -p ripple-tests --bin bench_chat_db [-- --scale 1 --samples 50 --ref-samples 5]
//! ```
//!
//! A throwaway cluster and a chat database seeded with set-based SQL (triggers off, then
//! `private.rebuild_chat_counters()`, the V5 backfill): at `--scale 1`, 10,000 users,
//! 20,056 conversations (20 groups of 1,000 members, the rest direct) and 1,000,000
//! messages, 1% of them deleted. The measured user is in 50 of them (10 groups, 40 direct
//! conversations) holding 200,000 unread messages from others (none read yet).
//!
//! Each call runs as that user (role `authenticated`, the user's claims, in a transaction,
//! as Ripple runs a request) and is timed from the client around the statement alone. Beside
//! each is the V4 implementation of the same function, copied into a schema `v4ref` that only
//! this benchmark creates, with the V4 policy's per-row `private.is_member(...)` call written
//! into its queries (V4's RLS ran it on every row; the tables' V5 policies still apply on top,
//! at the cost of one hashed set per statement). The V4 send and mark-read bodies run V5's
//! triggers, which cannot be swapped per call; their rows written are printed instead.
//! Then the plan of `select * from messages where conversation_id = X` under RLS as the user,
//! which must use an index and call no function per row (the benchmark fails otherwise).
//!
//! Figures from one run with the defaults (2 cores shared with other builds at a load
//! average of 12, PostgreSQL 15, release build):
//!
//! ```text
//! bench_chat_db: scale 1, PostgreSQL 15.18 (Debian 15.18-0+deb12u1), 2 cores, seeded in 123 s
//! data: 10000 users, 20056 conversations (20 groups of >= 1,000 members), 1000000 messages (1% deleted)
//! caller: in 50 conversations, 200000 unread (V5 and V4 agree)
//! timed: the statement, as the caller under RLS; V5 50 calls, V4 reference 5 calls
//! call                                  p50 ms    p99 ms   V4 p50 ms   V4 p99 ms     V4/V5
//! unread_counts()                         0.85      1.60    14017.71    17681.98    16572x
//! list_conversations()                    3.16     19.77     4535.41     5731.25     1433x
//! get_messages(group) newest page         1.07      8.81        1.79        2.17        2x
//! get_messages(group) oldest page         1.08      1.39       15.57       23.73       14x
//! search_messages('number 3999')         33.46     55.80     7517.18    10188.31      225x
//! search_messages('postgres'): common   1691.98   2451.77     9414.78    12315.39        6x
//! messages page via RLS (REST)            0.27      7.78        0.64        0.71        2x
//! mark_conversation_read(group)           0.69      1.88       32.44       39.90       47x
//! send_message(1,000-member group)        1.15     23.67        1.09        1.28        1x
//! rows written by one send_message into the group (inserted +, updated ~, deleted -): conversation_members +0 ~1 -0, conversations +0 ~1 -0, messages +1 ~0 -0
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Chat functions at a million messages, beside the V4 implementation")]
struct Args {
    /// Size of the data: 1 = 10,000 users, 20,000+ conversations, 1,000,000 messages.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Timed calls per function (the V5 implementation).
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Timed calls per function of the V4 reference (seconds each at full scale).
    #[arg(long, default_value_t = 5)]
    ref_samples: usize,
    /// Seed and measure this database (empty, migrated with `ripple migrate`) instead of a
    /// throwaway cluster's; it is left in place afterwards for inspection.
    #[arg(long)]
    database_url: Option<String>,
}

/// Sizes derived from `--scale`.
struct Plan {
    users: i64,
    group_size: i64,
    groups: i64,
    my_groups: i64,
    my_directs: i64,
    per_my_group: i64,
    per_my_direct: i64,
    per_other_group: i64,
    per_other_direct: i64,
}

impl Plan {
    fn new(scale: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (0.01..=4.0).contains(&scale),
            "scale must be between 0.01 and 4"
        );
        let s = |n: f64| ((n * scale).round() as i64).max(1);
        let users = s(10_000.0).max(200);
        Ok(Self {
            users,
            group_size: 1_000.min(users - 1),
            groups: 20,
            my_groups: 10,
            my_directs: 40,
            // 10 x 15,152 + 40 x 1,263 messages in the user's conversations, of which 1% are
            // deleted: 10 x 15,000 + 40 x 1,250 = 200,000 unread.
            per_my_group: s(15_152.0),
            per_my_direct: s(1_263.0),
            // 10 x 29,806 + 19,996 x 25 = 798,000 elsewhere: 1,000,000 in all.
            per_other_group: s(29_806.0),
            per_other_direct: 25,
        })
    }
}

async fn seed(db: &Client, p: &Plan) -> anyhow::Result<()> {
    // Triggers (and foreign-key triggers) off: rows are written consistent by construction,
    // then the V5 backfill computes every counter, as it would for a migrated database.
    let sql = format!(
        r#"
        set session_replication_role = replica;
        create schema bench;
        grant usage on schema bench to authenticated;
        create table bench.users as
          select g as idx, gen_random_uuid() as id from generate_series(0, {users} - 1) g;
        create unique index on bench.users (idx);
        insert into public.profiles (id, display_name)
          select id, 'user ' || idx from bench.users;

        -- Conversations: groups 0..{groups}-1 (the first {my_groups} include user 0), direct
        -- pairs (i, i+1) and (i, i+2) for every user, and user 0 with users 3..{my_directs_hi}.
        create table bench.convs (idx serial primary key, id uuid not null default gen_random_uuid(),
                                  kind public.conversation_kind not null, a int, b int,
                                  grp int, msgs int not null, mine boolean not null);
        insert into bench.convs (kind, grp, msgs, mine)
          select 'group', g, case when g < {my_groups} then {per_my_group} else {per_other_group} end,
                 g < {my_groups}
            from generate_series(0, {groups} - 1) g;
        insert into bench.convs (kind, a, b, msgs, mine)
          select 'direct', i, (i + k) % {users}, 0, false
            from generate_series(0, {users} - 1) i, generate_series(1, 2) k;
        insert into bench.convs (kind, a, b, msgs, mine)
          select 'direct', 0, k, 0, false from generate_series(3, {my_directs_hi}) k;
        -- The user's directs, written (user 0, other) so the other one sends.
        update bench.convs set a = least(a, b), b = greatest(a, b) where kind = 'direct';
        update bench.convs set mine = true, msgs = {per_my_direct} where kind = 'direct' and a = 0;
        update bench.convs set msgs = {per_other_direct} where kind = 'direct' and not mine;

        insert into public.conversations (id, kind, title, created_by, direct_key, created_at)
          select c.id, c.kind, case when c.kind = 'group' then 'group ' || c.grp end,
                 ua.id,
                 case when c.kind = 'direct'
                      then least(ua.id, ub.id)::text || ':' || greatest(ua.id, ub.id)::text end,
                 now() - interval '400 days'
            from bench.convs c
            left join bench.users ua on ua.idx = coalesce(c.a, 0)
            left join bench.users ub on ub.idx = c.b;

        -- Group members: position 0 is user 0 in the user's groups; positions 1.. are others.
        create table bench.group_members as
          select c.idx as conv, c.id as conv_id, k as pos,
                 case when c.mine and k = 0 then 0
                      else 1 + (c.grp * {group_size} + k) % ({users} - 1) end as user_idx
            from bench.convs c, generate_series(0, {group_size} - 1) k
           where c.kind = 'group';
        create index on bench.group_members (conv, pos);
        insert into public.conversation_members (conversation_id, user_id, role)
          select gm.conv_id, u.id, case when gm.pos = 0 then 'owner' else 'member' end::public.member_role
            from bench.group_members gm join bench.users u on u.idx = gm.user_idx;
        insert into public.conversation_members (conversation_id, user_id)
          select c.id, u.id from bench.convs c join bench.users u on u.idx in (c.a, c.b)
           where c.kind = 'direct';

        -- Messages, numbered globally for search ("message number 3999 about ..."); 1% are
        -- soft-deleted (no body). In the user's conversations only others send.
        create sequence bench.n;
        insert into public.messages (conversation_id, sender_id, kind, body, created_at,
                                     deleted_at, seq, counted_seq)
          select c.id, s.id, 'text',
                 case when g % 100 <> 7 then
                   'message number ' || nextval('bench.n') || ' about '
                   || (array['lunch', 'the release', 'postgres', 'the weekend', 'rust',
                             'holidays', 'the build', 'music'])[1 + g % 8]
                 end,
                 timestamptz '2026-01-01' + (c.idx % 1000) * interval '1 minute' + g * interval '1 second',
                 case when g % 100 = 7 then timestamptz '2026-06-01' end,
                 g, g
            from bench.convs c
            cross join lateral generate_series(1, c.msgs) g
            join lateral (
              select u.id from bench.users u
               where u.idx = case
                 when c.kind = 'direct' and c.mine then c.b
                 when c.kind = 'direct' then case when g % 2 = 0 then c.a else c.b end
                 else (select gm.user_idx from bench.group_members gm
                        where gm.conv = c.idx and gm.pos = 1 + g % ({group_size} - 1)) end
            ) s on true;
        set session_replication_role = origin;
        select private.rebuild_chat_counters();
        -- The previews the trigger would have written.
        update public.conversations c
           set last_message_at = x.created_at, last_message_preview = private.preview(x),
               last_message_id = x.id
          from public.messages x
         where x.conversation_id = c.id and x.seq = c.last_seq;
        "#,
        users = p.users,
        groups = p.groups,
        my_groups = p.my_groups,
        my_directs_hi = p.my_directs - 4 + 2,
        group_size = p.group_size,
        per_my_group = p.per_my_group,
        per_other_group = p.per_other_group,
        per_my_direct = p.per_my_direct,
        per_other_direct = p.per_other_direct,
    );
    db.batch_execute(&sql).await?;
    // Separately: VACUUM cannot run inside the implicit transaction of a multi-statement batch.
    db.batch_execute("vacuum analyze").await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times `sql` as `user`: each sample in its own transaction (role and claims set, as
/// Ripple does), the statement alone timed. `before` runs untimed as the superuser first.
async fn time_calls(
    client: &mut Client,
    user: Uuid,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    samples: usize,
    before: Option<&str>,
) -> anyhow::Result<Vec<Duration>> {
    let claims = serde_json::json!({"sub": user.to_string(), "role": "authenticated"}).to_string();
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        if let Some(b) = before {
            client.batch_execute(b).await?;
        }
        let tx = client.transaction().await?;
        ripple::db::set_request_claims(&tx, "authenticated", &claims).await?;
        let stmt = tx.prepare(sql).await?;
        let start = Instant::now();
        let rows = tx.query(&stmt, params).await?;
        times.push(start.elapsed());
        std::hint::black_box(rows);
        tx.commit().await?;
    }
    times.sort();
    Ok(times)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.samples > 0 && args.ref_samples > 0,
        "samples must be positive"
    );
    let plan = Plan::new(args.scale)?;

    eprintln!("bench_chat_db: starting a throwaway cluster and seeding (this takes a while)");
    // The throwaway database (if any) lives until the end of main.
    let (_throwaway, url) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let db = ripple_tests::fresh_db().await;
            let url = db.url.clone();
            (Some(db), url)
        }
    };
    let admin = ripple::db::connect(&url).await?;
    let started = Instant::now();
    seed(&admin, &plan).await?;
    let seeded = started.elapsed();
    admin.batch_execute(ripple_tests::v4_reference::SQL).await?;

    let c = &admin;
    let count = |sql: &'static str| async move {
        let n: i64 = c.query_one(sql, &[]).await?.get(0);
        anyhow::Ok(n)
    };
    let (users, convs, groups, msgs) = (
        count("select count(*) from public.profiles").await?,
        count("select count(*) from public.conversations").await?,
        count("select count(*) from public.conversations where member_count >= 1000").await?,
        count("select count(*) from public.messages").await?,
    );
    let me: Uuid = c
        .query_one("select id from bench.users where idx = 0", &[])
        .await?
        .get(0);
    let my_convs: i64 = c
        .query_one(
            "select count(*) from public.conversation_members where user_id = $1",
            &[&me],
        )
        .await?
        .get(0);
    let group: Uuid = c
        .query_one(
            "select id from bench.convs where kind = 'group' and mine order by idx limit 1",
            &[],
        )
        .await?
        .get(0);
    let member: Uuid = c
        .query_one(
            "select user_id from public.conversation_members where conversation_id = $1 and user_id <> $2 limit 1",
            &[&group, &me],
        )
        .await?
        .get(0);
    // The deepest page: the oldest messages of the user's first group.
    let deep: Uuid = c
        .query_one(
            "select id from public.messages where conversation_id = $1 order by seq offset 50 limit 1",
            &[&group],
        )
        .await?
        .get(0);
    let version: String = c.query_one("show server_version", &[]).await?.get(0);

    let mut client = ripple::db::connect(&url).await?;
    let unread: serde_json::Value = {
        let tx = client.transaction().await?;
        let claims =
            serde_json::json!({"sub": me.to_string(), "role": "authenticated"}).to_string();
        ripple::db::set_request_claims(&tx, "authenticated", &claims).await?;
        let v = tx
            .query_one("select public.unread_counts()", &[])
            .await?
            .get(0);
        tx.commit().await?;
        v
    };
    let reference_unread: serde_json::Value = {
        let tx = client.transaction().await?;
        let claims =
            serde_json::json!({"sub": me.to_string(), "role": "authenticated"}).to_string();
        ripple::db::set_request_claims(&tx, "authenticated", &claims).await?;
        let v = tx
            .query_one("select v4ref.unread_counts()", &[])
            .await?
            .get(0);
        tx.commit().await?;
        v
    };
    anyhow::ensure!(
        unread == reference_unread,
        "V5 and V4 unread counts differ: {unread} vs {reference_unread}"
    );

    println!(
        "bench_chat_db: scale {}, PostgreSQL {version}, {} cores, seeded in {:.0} s",
        args.scale,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        seeded.as_secs_f64()
    );
    println!(
        "data: {users} users, {convs} conversations ({groups} groups of >= 1,000 members), {msgs} messages (1% deleted)"
    );
    println!(
        "caller: in {my_convs} conversations, {} unread (V5 and V4 agree)",
        unread["total_unread"]
    );
    println!(
        "timed: the statement, as the caller under RLS; V5 {} calls, V4 reference {} calls",
        args.samples, args.ref_samples
    );
    println!(
        "{:<34} {:>9} {:>9} {:>11} {:>11} {:>9}",
        "call", "p50 ms", "p99 ms", "V4 p50 ms", "V4 p99 ms", "V4/V5"
    );

    let other_sends = format!(
        "insert into public.messages (conversation_id, sender_id, body) values ('{group}', '{member}', 'news')"
    );
    let query = "number 3999".to_string();
    // A word in one message of eight: ranking every match is the cost here.
    let common = "postgres".to_string();
    type Call<'a> = (
        &'static str,
        String,
        String,
        Vec<&'a (dyn ToSql + Sync)>,
        Option<&'a str>,
    );
    let calls: Vec<Call> = vec![
        (
            "unread_counts()",
            "select public.unread_counts()".into(),
            "select v4ref.unread_counts()".into(),
            vec![],
            None,
        ),
        (
            "list_conversations()",
            "select * from public.list_conversations()".into(),
            "select * from v4ref.list_conversations()".into(),
            vec![],
            None,
        ),
        (
            "get_messages(group) newest page",
            "select public.get_messages($1)".into(),
            "select v4ref.get_messages($1)".into(),
            vec![&group],
            None,
        ),
        (
            "get_messages(group) oldest page",
            "select public.get_messages($1, 50, $2)".into(),
            "select v4ref.get_messages($1, 50, $2)".into(),
            vec![&group, &deep],
            None,
        ),
        (
            "search_messages('number 3999')",
            "select * from public.search_messages($1)".into(),
            "select * from v4ref.search_messages($1)".into(),
            vec![&query],
            None,
        ),
        (
            "search_messages('postgres'): common",
            "select * from public.search_messages($1)".into(),
            "select * from v4ref.search_messages($1)".into(),
            vec![&common],
            None,
        ),
        (
            "messages page via RLS (REST)",
            "select * from public.messages where conversation_id = $1 order by created_at desc limit 50".into(),
            "select * from public.messages where conversation_id = $1 and private.is_member(conversation_id) order by created_at desc limit 50".into(),
            vec![&group],
            None,
        ),
        (
            "mark_conversation_read(group)",
            "select public.mark_conversation_read($1)".into(),
            "select v4ref.mark_conversation_read($1)".into(),
            vec![&group],
            Some(other_sends.as_str()),
        ),
        (
            "send_message(1,000-member group)",
            "select public.send_message($1, 'bench')".into(),
            "select v4ref.send_message($1, 'bench')".into(),
            vec![&group],
            None,
        ),
    ];
    for (name, new_sql, ref_sql, params, before) in &calls {
        let new = time_calls(&mut client, me, new_sql, params, args.samples, *before).await?;
        let old = time_calls(&mut client, me, ref_sql, params, args.ref_samples, *before).await?;
        let (p50, p99, r50, r99) = (
            percentile(&new, 0.5),
            percentile(&new, 0.99),
            percentile(&old, 0.5),
            percentile(&old, 0.99),
        );
        println!(
            "{name:<34} {p50:>9.2} {p99:>9.2} {r50:>11.2} {r99:>11.2} {:>8.0}x",
            r50 / p50
        );
    }

    // What one message into a 1,000-member group writes, counted by PostgreSQL itself.
    // (A new connection: a backend's transaction statistics include its earlier
    // transactions' until they are flushed.)
    {
        let mut fresh = ripple::db::connect(&url).await?;
        let tx = fresh.transaction().await?;
        let claims =
            serde_json::json!({"sub": me.to_string(), "role": "authenticated"}).to_string();
        ripple::db::set_request_claims(&tx, "authenticated", &claims).await?;
        tx.query("select public.send_message($1, 'counted')", &[&group])
            .await?;
        tx.batch_execute("reset role").await?;
        let rows = tx
            .query(
                "select relname::text, n_tup_ins, n_tup_upd, n_tup_del from pg_stat_xact_user_tables \
                  where n_tup_ins + n_tup_upd + n_tup_del > 0 order by relname",
                &[],
            )
            .await?;
        let written: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} +{} ~{} -{}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, i64>(3)
                )
            })
            .collect();
        tx.commit().await?;
        println!(
            "rows written by one send_message into the group (inserted +, updated ~, deleted -): {}",
            written.join(", ")
        );
    }

    // The plan of a direct read under RLS: an index, and no function call per row.
    let plan_text: Vec<String> = {
        let tx = client.transaction().await?;
        let claims =
            serde_json::json!({"sub": me.to_string(), "role": "authenticated"}).to_string();
        ripple::db::set_request_claims(&tx, "authenticated", &claims).await?;
        let rows = tx
            .query(
                &format!(
                    "explain (analyze, costs off, timing off, summary off) \
                     select * from public.messages where conversation_id = '{group}'"
                ),
                &[],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    println!("plan of `select * from messages where conversation_id = <group>` as the caller:");
    for line in &plan_text {
        println!("  {line}");
    }
    let plan = plan_text.join("\n");
    anyhow::ensure!(
        plan.contains("Index Scan")
            && plan.contains("hashed SubPlan")
            && !plan.contains("is_member"),
        "the RLS read does not use the index and the hashed membership set"
    );
    Ok(())
}
