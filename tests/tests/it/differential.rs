//! The randomized differential test of Ripple's promise: a change reaches a client if and
//! only if the database would show that row to that client, once, in commit order, through
//! faults and a `kill -9`.
//!
//! - Ground truth comes from the database, never from Ripple: an independent logical slot
//!   (`test_decoding`) created before any data records every change and every membership
//!   change in commit order. Who may see a message is computed from that history (members
//!   of its conversation right after its transaction, and, once the test adds a restrictive
//!   policy, not bodies marked `hidden:`).
//! - Ripple runs as its own process (`ripple serve`). Users are real WebSocket clients that
//!   resume from their last position whenever their connection drops.
//! - Concurrent writers call the chat functions as the users: messages, edits, soft deletes,
//!   members added and removed (each with the system message written in the same
//!   transaction). Mid-run: the gateway's pooled connections are terminated, a policy is
//!   added, the replication connection is terminated, and the gateway is killed with -9 and
//!   started again.
//!
//! A membership that changes *after* a message commits makes that (message, user) pair
//! ambiguous: Ripple judges a transaction against the database once it is visible, which
//! may already include later membership changes (PostgreSQL cannot evaluate a policy as of
//! an old snapshot). Such pairs may go either way; every other pair is exact. Only a few
//! "churning" members change, so nearly all pairs are exact; the figures say how many.
//!
//! Scale with `RIPPLE_DIFF_MESSAGES` (default 600 in CI); the full run in the closing note
//! used 20,000 (more than 100,000 expected deliveries).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use ripple_tests::{fresh_db, TestDb};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const APP_NAME: &str = "ripple_diff";

/// One change to `public.messages` as a client identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    id: String,
    op: String,
    body: Option<String>,
    deleted: bool,
}

#[derive(Default)]
struct Received {
    /// (position, change) in arrival order.
    items: Vec<(String, Key)>,
    reconnects: usize,
    too_old: usize,
    joined: bool,
    done: bool,
}

/// A user's socket, reconnecting and resuming from its last position until told to stop.
async fn client_task(
    port: u16,
    anon: String,
    token: String,
    got: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    finale: String,
) {
    let url = format!("ws://127.0.0.1:{port}/realtime/v1/websocket?apikey={anon}&vsn=1.0.0");
    let mut last: Option<String> = None;
    let mut first = true;
    'connect: while !stop.load(Ordering::Acquire) {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !first {
            got.lock().unwrap().reconnects += 1;
        }
        first = false;
        let join = json!({"topic": "realtime:all", "event": "phx_join", "ref": "1", "join_ref": "1",
            "payload": {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "messages",
                "resume": {"since": last}}]}, "access_token": token}});
        if ws
            .send(Message::Text(join.to_string().into()))
            .await
            .is_err()
        {
            continue;
        }
        let mut beat = tokio::time::interval(Duration::from_secs(5));
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = beat.tick() => {
                    let hb = json!({"topic": "phoenix", "event": "heartbeat", "ref": "hb", "payload": {}});
                    if ws.send(Message::Text(hb.to_string().into())).await.is_err() { continue 'connect; }
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Acquire) { break 'connect; }
                    continue;
                }
            };
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                _ => continue 'connect, // dropped: resume
            };
            let m: Value = serde_json::from_str(&text).unwrap();
            match m["event"].as_str() {
                Some("postgres_changes") => {
                    let d = &m["payload"]["data"];
                    let r = if d["type"] == "DELETE" {
                        &d["old_record"]
                    } else {
                        &d["record"]
                    };
                    let key = Key {
                        id: r["id"].as_str().unwrap().to_string(),
                        op: d["type"].as_str().unwrap().to_string(),
                        body: r["body"].as_str().map(str::to_string),
                        deleted: !r["deleted_at"].is_null(),
                    };
                    let position = d["position"].as_str().unwrap().to_string();
                    last = Some(position.clone());
                    let mut g = got.lock().unwrap();
                    if key.body.as_deref() == Some(finale.as_str()) {
                        g.done = true;
                    }
                    g.items.push((position, key));
                }
                Some("system") if m["payload"]["message"] == "Subscribed to PostgreSQL" => {
                    got.lock().unwrap().joined = true;
                }
                Some("system") if m["payload"]["resume"] == "too_old" => {
                    got.lock().unwrap().too_old += 1;
                }
                Some("phx_reply") if m["payload"]["status"] == "error" && m["ref"] == "1" => {
                    // Refused join (the gateway is starting): try again.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'connect;
                }
                _ => {}
            }
        }
    }
}

/// `name[type]:value` pairs of a test_decoding tuple.
fn parse_tuple(s: &str) -> HashMap<String, Option<String>> {
    let mut out = HashMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let Some(open) = s[i..].find('[') else { break };
        let name = s[i..i + open].to_string();
        let Some(close) = s[i + open..].find("]:") else {
            break;
        };
        i = i + open + close + 2;
        if b.get(i) == Some(&b'\'') {
            let mut v = String::new();
            i += 1;
            loop {
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        v.push('\'');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                let ch = s[i..].chars().next().unwrap();
                v.push(ch);
                i += ch.len_utf8();
            }
            out.insert(name, Some(v));
        } else {
            let end = s[i..].find(' ').map(|e| i + e).unwrap_or(b.len());
            let v = &s[i..end];
            out.insert(name, (v != "null").then(|| v.to_string()));
            i = end;
        }
    }
    out
}

/// What the truth slot says, in commit order.
enum Event {
    Member {
        conv: String,
        user: String,
        present: bool,
    },
    Message {
        key: Key,
        conv: String,
    },
}

async fn truth(db: &TestDb, slot: &str) -> Vec<Event> {
    let rows = db
        .client
        .query(
            "select data from pg_logical_slot_get_changes($1, null, null)",
            &[&slot],
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for r in rows {
        let data: String = r.get(0);
        let Some(rest) = data.strip_prefix("table ") else {
            continue;
        };
        let (table, rest) = rest.split_once(": ").unwrap();
        let (op, tuple) = rest.split_once(':').unwrap();
        let tuple = match tuple.find("new-tuple: ") {
            Some(p) => &tuple[p + "new-tuple: ".len()..],
            None => tuple.trim_start(),
        };
        let t = parse_tuple(tuple);
        let get = |k: &str| t.get(k).cloned().flatten().unwrap_or_default();
        match table {
            // Membership is rows coming and going; UPDATEs (read pointers, counters) are not.
            "public.conversation_members" if op != "UPDATE" => out.push(Event::Member {
                conv: get("conversation_id"),
                user: get("user_id"),
                present: op != "DELETE",
            }),
            "public.messages" => out.push(Event::Message {
                key: Key {
                    id: get("id"),
                    op: op.to_string(),
                    body: t.get("body").cloned().flatten(),
                    deleted: t.get("deleted_at").cloned().flatten().is_some(),
                },
                conv: get("conversation_id"),
            }),
            _ => {}
        }
    }
    out
}

async fn as_user(
    client: &mut tokio_postgres::Client,
    user: &str,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    ripple::db::set_request_claims(
        &tx,
        "authenticated",
        &json!({"sub": user, "role": "authenticated"}).to_string(),
    )
    .await?;
    tx.batch_execute(sql).await?;
    tx.commit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_allowed_change_reaches_every_allowed_subscriber_exactly_once() {
    let messages: usize = std::env::var("RIPPLE_DIFF_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let n_users = if messages >= 5000 { 40 } else { 12 };
    let n_convs = if messages >= 5000 { 16 } else { 6 };
    let seed: u64 = std::env::var("RIPPLE_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("differential: seed {seed} (RIPPLE_DIFF_SEED), {messages} messages");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let db = fresh_db().await;
    let truth_slot = format!("{}_truth", db.name);
    // Before any data: the independent record of every change.
    db.client
        .query(
            "select pg_create_logical_replication_slot($1, 'test_decoding')",
            &[&truth_slot],
        )
        .await
        .unwrap();
    let mut users = Vec::new();
    for i in 0..n_users {
        users.push(db.create_user(&format!("user{i}")).await.to_string());
    }
    // Conversations with an owner and random members; one churning member each.
    let mut convs: Vec<(String, String, Vec<String>, String)> = Vec::new(); // (id, owner, members, churner)
    for _ in 0..n_convs {
        let mut members: Vec<String> = users.clone();
        rand::seq::SliceRandom::shuffle(&mut members[..], &mut rng);
        members.truncate(rng.gen_range(3..=8.min(n_users)));
        let owner = members[0].clone();
        let churner = users
            .iter()
            .find(|u| !members.contains(u))
            .cloned()
            .unwrap();
        let mut c = db.connect().await;
        let others: Vec<Uuid> = members[1..].iter().map(|m| m.parse().unwrap()).collect();
        let tx = c.transaction().await.unwrap();
        ripple::db::set_request_claims(
            &tx,
            "authenticated",
            &json!({"sub": owner, "role": "authenticated"}).to_string(),
        )
        .await
        .unwrap();
        let id: Uuid = tx
            .query_one(
                "select public.create_group_conversation('diff', $1)",
                &[&others],
            )
            .await
            .unwrap()
            .get(0);
        tx.commit().await.unwrap();
        convs.push((id.to_string(), owner, members, churner));
    }
    // Everyone is in the finale room: its last message tells each client the run is over.
    let finale_conv = {
        let mut c = db.connect().await;
        let others: Vec<Uuid> = users[1..].iter().map(|m| m.parse().unwrap()).collect();
        let tx = c.transaction().await.unwrap();
        ripple::db::set_request_claims(
            &tx,
            "authenticated",
            &json!({"sub": users[0], "role": "authenticated"}).to_string(),
        )
        .await
        .unwrap();
        let id: Uuid = tx
            .query_one(
                "select public.create_group_conversation('finale', $1)",
                &[&others],
            )
            .await
            .unwrap()
            .get(0);
        tx.commit().await.unwrap();
        id.to_string()
    };

    let port = ripple_tests::free_low_port();
    let keys =
        ripple::auth::JwtVerifier::new(&ripple_tests::gateway_config().jwt_config().unwrap())
            .unwrap();
    let anon = keys.mint_for("anon", None, 36000).unwrap();
    let mut ripple = ripple_tests::spawn_ripple_serve(&db, port, Some(APP_NAME));

    let stop = Arc::new(AtomicBool::new(false));
    let finale = "the end".to_string();
    let mut received = Vec::new();
    let mut clients = Vec::new();
    for u in &users {
        let got = Arc::new(Mutex::new(Received::default()));
        received.push(got.clone());
        let token = keys.mint_for("authenticated", Some(u), 36000).unwrap();
        clients.push(tokio::spawn(client_task(
            port,
            anon.clone(),
            token,
            got,
            stop.clone(),
            finale.clone(),
        )));
    }
    // Everyone subscribed before the workload starts; the truth is checked from the start
    // marker on (what came before was setup, streamed before anyone listened).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !received.iter().all(|r| r.lock().unwrap().joined) {
        assert!(Instant::now() < deadline, "clients could not subscribe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start_marker = "the start".to_string();
    {
        let mut c = db.connect().await;
        as_user(
            &mut c,
            &users[0],
            &format!("select public.send_message('{finale_conv}', '{start_marker}')"),
        )
        .await
        .unwrap();
    }

    let started = Instant::now();
    let done_ops = Arc::new(AtomicUsize::new(0));
    let hidden_phase = Arc::new(AtomicBool::new(false));
    let convs = Arc::new(convs);
    let mut writers = Vec::new();
    let n_writers = 6;
    for w in 0..n_writers {
        let (url, convs, done_ops, hidden_phase) = (
            db.url.clone(),
            convs.clone(),
            done_ops.clone(),
            hidden_phase.clone(),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w as u64 + 1));
        writers.push(tokio::spawn(async move {
            let mut client = ripple::db::connect(&url).await.unwrap();
            let mut mine: Vec<(String, String)> = Vec::new(); // (message id, sender)
            let mut n = 0;
            while done_ops.fetch_add(1, Ordering::AcqRel) < messages {
                n += 1;
                let (conv, owner, members, churner) = &convs[rng.gen_range(0..convs.len())];
                let roll: u32 = rng.gen_range(0..100);
                let result = if roll < 4 && w == 0 {
                    // The churner comes or goes, with the system message in the same transaction.
                    let present: bool = {
                        let rows = client
                            .query(
                                "select 1 from public.conversation_members where conversation_id = $1::text::uuid and user_id = $2::text::uuid",
                                &[conv, churner],
                            )
                            .await
                            .unwrap();
                        !rows.is_empty()
                    };
                    let f = if present { "remove_conversation_member" } else { "add_conversation_member" };
                    as_user(&mut client, owner, &format!("select public.{f}('{conv}', '{churner}')")).await
                } else if roll < 12 && !mine.is_empty() {
                    let (id, sender) = mine[rng.gen_range(0..mine.len())].clone();
                    if roll < 9 {
                        as_user(&mut client, &sender, &format!("select public.edit_message('{id}', 'edit {w}-{n}')")).await
                    } else {
                        // Deleted once: a second delete would repeat the same change.
                        mine.retain(|(m, _)| *m != id);
                        as_user(&mut client, &sender, &format!("select public.delete_message('{id}')")).await
                    }
                } else {
                    let sender = &members[rng.gen_range(0..members.len())];
                    let hidden = hidden_phase.load(Ordering::Acquire) && rng.gen_bool(0.3);
                    let body = if hidden { format!("hidden: {w}-{n}") } else { format!("msg {w}-{n}") };
                    let tx = client.transaction().await.unwrap();
                    ripple::db::set_request_claims(&tx, "authenticated", &json!({"sub": sender, "role": "authenticated"}).to_string())
                        .await
                        .unwrap();
                    let r = tx
                        .query_one("select (public.send_message($1::text::uuid, $2)).id::text", &[conv, &body])
                        .await;
                    match r {
                        Ok(row) => {
                            tx.commit().await.unwrap();
                            mine.push((row.get(0), sender.clone()));
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                };
                // Chat rules may refuse (an edit after a delete...): that is the database's
                // answer, and the truth slot only records what committed.
                let _ = result;
            }
        }));
    }

    // Faults, at fractions of the workload.
    let at = |f: f64| (messages as f64 * f) as usize;
    let wait_for = |k: usize| {
        let done_ops = done_ops.clone();
        async move {
            while done_ops.load(Ordering::Acquire) < k {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(at(0.2)).await;
    let terminated: i64 = db
        .client
        .query_one(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
              where application_name = $1 and backend_type = 'client backend') t",
            &[&APP_NAME],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("fault: terminated {terminated} pooled connection(s)");
    wait_for(at(0.35)).await;
    db.client
        .batch_execute(
            "create policy diff_hide_marked on public.messages as restrictive for select
               to authenticated using (body is null or body not like 'hidden:%')",
        )
        .await
        .unwrap();
    hidden_phase.store(true, Ordering::Release);
    eprintln!("fault: policy added");
    wait_for(at(0.5)).await;
    let walsenders: i64 = db
        .client
        .query_one(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
              where application_name = $1 and backend_type = 'walsender') t",
            &[&APP_NAME],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("fault: terminated {walsenders} walsender(s)");
    wait_for(at(0.7)).await;
    ripple.kill();
    eprintln!("fault: gateway killed with -9");
    tokio::time::sleep(Duration::from_millis(800)).await;
    ripple = ripple_tests::spawn_ripple_serve(&db, port, Some(APP_NAME));
    eprintln!("fault: gateway started again");

    for w in writers {
        w.await.unwrap();
    }
    let wrote_in = started.elapsed();
    {
        let mut c = db.connect().await;
        as_user(
            &mut c,
            &users[0],
            &format!("select public.send_message('{finale_conv}', '{finale}')"),
        )
        .await
        .unwrap();
    }
    let catch_up = Duration::from_secs(120.max(messages as u64 / 40));
    let deadline = Instant::now() + catch_up;
    while Instant::now() < deadline && !received.iter().all(|r| r.lock().unwrap().done) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let behind = received.iter().filter(|r| !r.lock().unwrap().done).count();
    assert_eq!(
        behind, 0,
        "{behind} client(s) had not received the final message {catch_up:?} after the writers finished"
    );
    // Anything still in flight (there should be nothing: the finale is last).
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for c in clients {
        let _ = c.await;
    }
    ripple.kill();

    // The truth, replayed in commit order.
    let events = truth(&db, &truth_slot).await;
    let mut members: HashSet<(String, String)> = HashSet::new();
    let mut changed_later: HashMap<(String, String), usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Event::Member { conv, user, .. } = e {
            changed_later.insert((conv.clone(), user.clone()), i);
        }
    }
    // Per user: the exact expected changes (in order), the ambiguous ones, and the order.
    let mut expected: HashMap<&str, Vec<Key>> = HashMap::new();
    let mut ambiguous: HashMap<&str, HashSet<Key>> = HashMap::new();
    let mut order: HashMap<Key, usize> = HashMap::new();
    let mut in_run = false;
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Member {
                conv,
                user,
                present,
            } => {
                if *present {
                    members.insert((conv.clone(), user.clone()));
                } else {
                    members.remove(&(conv.clone(), user.clone()));
                }
            }
            Event::Message { key, conv } => {
                in_run |= key.body.as_deref() == Some(start_marker.as_str());
                if !in_run {
                    continue;
                }
                order.entry(key.clone()).or_insert(i);
                let marked = key
                    .body
                    .as_deref()
                    .is_some_and(|b| b.starts_with("hidden:"));
                for u in &users {
                    let pair = (conv.clone(), u.clone());
                    let visible = members.contains(&pair) && !marked;
                    let later = changed_later.get(&pair).is_some_and(|&j| j > i);
                    if later {
                        ambiguous.entry(u.as_str()).or_default().insert(key.clone());
                    } else if visible {
                        expected.entry(u.as_str()).or_default().push(key.clone());
                    }
                }
            }
        }
    }

    let (mut leaked, mut lost, mut duplicated, mut out_of_order) = (0, 0, 0, 0);
    let (mut exact, mut delivered, mut reconnects, mut too_old, mut ambiguous_pairs) =
        (0, 0, 0, 0, 0);
    for (u, got) in users.iter().zip(&received) {
        let got = got.lock().unwrap();
        reconnects += got.reconnects;
        too_old += got.too_old;
        delivered += got.items.len();
        let want = expected.get(u.as_str()).cloned().unwrap_or_default();
        let maybe = ambiguous.get(u.as_str()).cloned().unwrap_or_default();
        exact += want.len();
        ambiguous_pairs += maybe.len();
        let mut seen: HashSet<&Key> = HashSet::new();
        let mut last_pos = String::new();
        let mut last_order = 0;
        let wanted: HashSet<&Key> = want.iter().collect();
        let from_start = got
            .items
            .iter()
            .position(|(_, k)| k.body.as_deref() == Some(start_marker.as_str()))
            .expect("every client received the start marker");
        for (pos, key) in &got.items[from_start..] {
            if !seen.insert(key) {
                duplicated += 1;
                eprintln!("duplicate for {u}: {key:?}");
            }
            if pos <= &last_pos {
                out_of_order += 1;
            }
            last_pos = pos.clone();
            if key.body.as_deref() == Some(finale.as_str()) {
                continue;
            }
            match order.get(key) {
                Some(&o) => {
                    if o < last_order {
                        out_of_order += 1;
                    }
                    last_order = o;
                }
                None => {
                    leaked += 1;
                    eprintln!("not in the truth, for {u}: {key:?}");
                    continue;
                }
            }
            if !wanted.contains(key) && !maybe.contains(key) {
                leaked += 1;
                eprintln!("leaked to {u}: {key:?}");
            }
        }
        for k in &want {
            if k.body.as_deref() == Some(finale.as_str()) {
                continue;
            }
            if !seen.contains(k) {
                lost += 1;
                eprintln!("lost for {u}: {k:?}");
            }
        }
    }
    eprintln!(
        "differential: {messages} operations by {n_writers} writers in {wrote_in:.1?}; {} users, {} conversations; \
         {exact} exact expected deliveries, {ambiguous_pairs} ambiguous pairs, {delivered} delivered; \
         {reconnects} reconnects, {too_old} too-old resumes; \
         leaked {leaked}, lost {lost}, duplicated {duplicated}, out of order {out_of_order}",
        users.len(),
        convs.len() + 1,
    );
    assert!(
        exact > messages,
        "the run produced deliveries to check ({exact})"
    );
    assert!(
        reconnects >= users.len(),
        "every client lived through the kill -9"
    );
    assert_eq!(
        (leaked, lost, duplicated, out_of_order, too_old),
        (0, 0, 0, 0, 0)
    );
    db.client
        .query("select pg_drop_replication_slot($1)", &[&truth_slot])
        .await
        .unwrap();
}
