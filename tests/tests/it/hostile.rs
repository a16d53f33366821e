//! Hostile clients hurt no one: each test plays one attack an outsider (or a member turned
//! hostile) can mount with real sockets against a real gateway and database, and checks
//! that the server, and everyone else on it, is unaffected.

use crate::support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use ripple_tests::{fresh_db, spawn_gateway, RippleServe};
use serde_json::{json, Value};
use support::{changes_payload, conversation, Client, Msg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn reason(m: &Msg) -> String {
    assert_eq!(
        m.payload["status"], "error",
        "expected an error reply: {m:?}"
    );
    m.payload["response"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for the channel's `system` error and `phx_close`; returns the system message.
async fn closed_by_server(c: &mut Client, topic: &str) -> Msg {
    let t = topic.to_string();
    let sys = c
        .recv_until(|m| m.topic == t && m.event == "system" && m.payload["status"] == "error")
        .await;
    c.recv_until(|m| m.topic == t && m.event == "phx_close")
        .await;
    sys
}

/// A join of a private channel (broadcasts acknowledged, no presence) with `token`.
fn private_join(token: &str) -> Value {
    json!({"config": {"private": true, "broadcast": {"ack": true},
                      "presence": {"enabled": false}}, "access_token": token})
}

/// `ripple serve` as its own process, with an open-files limit (soft and hard) of `nofile`,
/// so that exhausting descriptors cannot take the test process with it.
fn serve_with_fd_limit(db: &ripple_tests::TestDb, port: u16, nofile: u32) -> RippleServe {
    ripple_tests::spawn_ripple_serve_limited(
        &db.url,
        &db.name,
        port,
        &[
            ("RIPPLE_HEADER_READ_TIMEOUT_SECS", "2"),
            ("RIPPLE_LOG", "ripple=error"),
        ],
        Stdio::inherit(),
        Some(nofile),
    )
}

/// Item 1: a thousand connections that never finish their request head, against a process
/// allowed only 400 open files. Before, the accept loop returned on its first EMFILE and
/// the process exited; now the connections past the budget are closed at accept, the
/// stalled ones are cut at the header-read timeout, and a normal request is answered.
#[tokio::test]
async fn a_thousand_stalled_connections_neither_stop_the_server_nor_keep_others_out() {
    let db = fresh_db().await;
    let port = ripple_tests::free_low_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = serve_with_fd_limit(&db, port, 400);
    assert!(
        ripple_tests::wait_healthy(addr, Duration::from_secs(30)).await,
        "ripple serve became healthy"
    );

    let mut stalled = Vec::new();
    for _ in 0..1000 {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
        else {
            continue;
        };
        // A request head that never ends.
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").await;
        stalled.push(s);
    }
    assert!(stalled.len() >= 900, "opened {} connections", stalled.len());
    // Let the server take (or turn away) all of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.is_running(),
        "ripple serve exited under 1,000 stalled connections"
    );
    // The stalled connections are held open by the attacker, yet a normal request gets an
    // answer once the head timeout (2 s) has cut them.
    assert!(
        ripple_tests::wait_healthy(addr, Duration::from_secs(15)).await,
        "a normal request was answered while 1,000 stalled connections were open"
    );
    // Every stalled connection was closed by the server (at accept or at the timeout).
    let mut closed = 0;
    for s in &mut stalled {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(
        closed,
        stalled.len(),
        "stalled connections the server closed"
    );
    drop(stalled);
    assert!(child.is_running(), "still running");
    assert!(ripple_tests::wait_healthy(addr, Duration::from_secs(5)).await);
    child.kill();
}

/// Item 2: a table whose `pin` column the subscriber's role may not SELECT. A filter on it
/// would reveal the value by whether changes arrive (bisection with `gt`, or one binding
/// per candidate value), so the join is refused; a filter on a readable column is
/// accepted, and closed once that column's grant is revoked.
#[tokio::test]
async fn a_filter_on_a_column_the_role_cannot_select_is_refused_and_revoking_the_grant_closes_it() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "create table public.vault (id int primary key, owner text, pin int);
             alter table public.vault replica identity full;
             grant select (id, owner) on public.vault to authenticated;
             alter publication ripple add table public.vault;",
        )
        .await
        .unwrap();
    let gw = spawn_gateway(&db).await;
    let user = db.create_user("mallory").await;
    let token = gw.token_for(user, 3600);
    let mut c = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let spec = |filter: &str| {
        changes_payload(
            &token,
            json!([{"event": "*", "schema": "public", "table": "vault", "filter": filter}]),
        )
    };
    for filter in ["pin=eq.0", "pin=gt.5000", "pin=in.(1,2,3)"] {
        let r = reason(&c.join("realtime:oracle", spec(filter)).await);
        assert!(
            r.contains("permission denied for column pin"),
            "{filter}: {r}"
        );
    }
    // One hidden column among readable ones is enough to refuse the whole join.
    let mixed = changes_payload(
        &token,
        json!([{"event": "*", "schema": "public", "table": "vault", "filter": "id=eq.1"},
               {"event": "*", "schema": "public", "table": "vault", "filter": "pin=eq.7"}]),
    );
    assert!(reason(&c.join("realtime:oracle", mixed).await).contains("column pin"));
    // A readable column is fine.
    c.join_ok("realtime:readable", spec("owner=eq.alice")).await;
    db.client
        .batch_execute("revoke select (owner) on public.vault from authenticated")
        .await
        .unwrap();
    let sys = closed_by_server(&mut c, "realtime:readable").await;
    assert!(
        sys.payload["message"]
            .as_str()
            .unwrap()
            .contains("column owner"),
        "{}",
        sys.payload
    );
}

/// Revocation follows the DBA's SQL, not a setting: the `realtime.messages` policy is
/// replaced to also read a column the chat's policy never named (`archived_at`: members who
/// archived a conversation leave its private channel), and a change to that column closes
/// the open channel. (With the columns kept by hand, `conversation_id user_id`, the UPDATE
/// was ignored and Bob kept his channel.)
#[tokio::test]
async fn a_policy_that_starts_reading_another_column_revokes_on_changes_to_it() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("alice").await;
    let bob = db.create_user("bob").await;
    let conv = conversation(&db, &[alice, bob]).await;
    db.client
        .batch_execute(
            "drop policy realtime_messages_select_members on realtime.messages;
             create policy realtime_messages_select_members on realtime.messages
               for select to authenticated
               using (
                 topic = realtime.topic()
                 and private.is_member(realtime.conversation_of(topic))
                 and not exists (
                   select 1 from public.conversation_members m
                    where m.conversation_id = realtime.conversation_of(topic)
                      and m.user_id = (select auth.uid()) and m.archived_at is not null)
               );",
        )
        .await
        .unwrap();
    // A change committed after the policy, seen by a subscriber: the gateway has read the
    // new policy by then.
    let mut watcher = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let spec = json!([{"event": "INSERT", "schema": "public", "table": "messages",
                       "filter": format!("conversation_id=eq.{conv}")}]);
    watcher
        .join_ok(
            "realtime:watch",
            changes_payload(&gw.token_for(alice, 3600), spec),
        )
        .await;
    db.client
        .execute(
            "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, 'marker')",
            &[&conv, &alice],
        )
        .await
        .unwrap();
    watcher
        .recv_until(|m| {
            m.event == "postgres_changes" && m.payload["data"]["record"]["body"] == "marker"
        })
        .await;

    let topic = format!("realtime:conversation:{conv}");
    let mut a = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let mut b = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    a.join_ok(&topic, private_join(&gw.token_for(alice, 3600)))
        .await;
    b.join_ok(&topic, private_join(&gw.token_for(bob, 3600)))
        .await;
    db.client
        .execute(
            "update public.conversation_members set archived_at = now() \
              where conversation_id = $1 and user_id = $2",
            &[&conv, &bob],
        )
        .await
        .unwrap();
    let sys = closed_by_server(&mut b, &topic).await;
    assert!(
        sys.payload["message"]
            .as_str()
            .unwrap()
            .contains("no longer have permission"),
        "{}",
        sys.payload
    );
    // Alice, who did not archive it, keeps her channel: her broadcast is acknowledged, and
    // she was told nothing.
    let r = a
        .send(
            Some("1"),
            &topic,
            "broadcast",
            json!({"type": "broadcast", "event": "typing", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(a.reply_to(&r).await.payload["status"], "ok");
    a.assert_nothing_pending().await;
}

/// Item 5: Bob is removed from a conversation while his private channel is open. Before,
/// he kept sending and receiving broadcasts until his token expired; now the removal
/// closes his channel with a `system` message, and Alice no longer hears from him.
#[tokio::test]
async fn removing_a_member_closes_his_open_private_channel() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("alice").await;
    let bob = db.create_user("bob").await;
    let conv = conversation(&db, &[alice, bob]).await;
    let topic = format!("realtime:conversation:{conv}");
    let mut a = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let mut b = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    a.join_ok(&topic, private_join(&gw.token_for(alice, 3600)))
        .await;
    b.join_ok(&topic, private_join(&gw.token_for(bob, 3600)))
        .await;
    // Both hear each other before.
    let r = b
        .send(
            Some("1"),
            &topic,
            "broadcast",
            json!({"type": "broadcast", "event": "typing", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(b.reply_to(&r).await.payload["status"], "ok");
    a.recv_until(|m| m.event == "broadcast").await;

    db.client
        .execute(
            "delete from public.conversation_members where conversation_id = $1 and user_id = $2",
            &[&conv, &bob],
        )
        .await
        .unwrap();
    let sys = closed_by_server(&mut b, &topic).await;
    assert!(
        sys.payload["message"]
            .as_str()
            .unwrap()
            .contains("no longer have permission"),
        "{}",
        sys.payload
    );
    // His channel is gone: a broadcast on it is refused, and Alice hears nothing.
    let r = b
        .send(
            Some("1"),
            &topic,
            "broadcast",
            json!({"type": "broadcast", "event": "typing", "payload": {"n": 2}}),
        )
        .await;
    assert_eq!(reason(&b.reply_to(&r).await), "unmatched topic");
    a.assert_nothing_pending().await;
    // Alice, still a member, keeps her channel.
    let r = a
        .send(
            Some("1"),
            &topic,
            "broadcast",
            json!({"type": "broadcast", "event": "typing", "payload": {"n": 3}}),
        )
        .await;
    assert_eq!(a.reply_to(&r).await.payload["status"], "ok");
}

/// Item 6: Bob, a member, tries to appear as Alice on their private channel. A presence key
/// that is not his own `sub` is refused at join; with no key he is present under his own
/// id; and whatever he puts in his metadata, `verified_sub` says who he is. On a public
/// channel any key is allowed, but `verified_sub` still tells the truth.
#[tokio::test]
async fn presence_cannot_claim_to_be_someone_else() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("alice").await;
    let bob = db.create_user("bob").await;
    let conv = conversation(&db, &[alice, bob]).await;
    let topic = format!("realtime:conversation:{conv}");
    let join = |t: &str, key: &str, private: bool| {
        json!({"config": {"private": private, "presence": {"key": key, "enabled": true}},
               "access_token": t})
    };
    let (ta, tb) = (gw.token_for(alice, 3600), gw.token_for(bob, 3600));
    let mut a = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let mut b = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    a.join_ok(&topic, join(&ta, &alice.to_string(), true)).await;
    a.recv_until(|m| m.event == "presence_state").await;

    let r = reason(&b.join(&topic, join(&tb, &alice.to_string(), true)).await);
    assert!(r.contains("InvalidPresenceKey"), "{r}");
    b.join_ok(&topic, join(&tb, "", true)).await;
    let r = b
        .send(
            Some("1"),
            &topic,
            "presence",
            json!({"type": "presence", "event": "track",
              "payload": {"name": "Alice", "verified_sub": alice.to_string()}}),
        )
        .await;
    assert_eq!(b.reply_to(&r).await.payload["status"], "ok");
    let diff = a.recv_until(|m| m.event == "presence_diff").await;
    let joins = diff.payload["joins"].as_object().unwrap();
    assert_eq!(
        joins.keys().collect::<Vec<_>>(),
        vec![&bob.to_string()],
        "{diff:?}"
    );
    let meta = &joins[&bob.to_string()]["metas"][0];
    assert_eq!(meta["verified_sub"], json!(bob.to_string()));
    assert_eq!(meta["name"], "Alice", "the app's own fields are kept");

    // A public channel: any key, but the verified sub is the tracker's.
    let mut p = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    p.join_ok("realtime:lobby", join(&tb, "alice", false)).await;
    let r = p
        .send(
            Some("1"),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track",
              "payload": {"verified_sub": alice.to_string()}}),
        )
        .await;
    // The tracker hears its own diff before the reply to its track.
    let diff = p.recv_until(|m| m.event == "presence_diff").await;
    assert_eq!(p.reply_to(&r).await.payload["status"], "ok");
    assert_eq!(
        diff.payload["joins"]["alice"]["metas"][0]["verified_sub"],
        json!(bob.to_string())
    );
    // Anonymous trackers are marked as such.
    let mut anon = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    anon.join_ok(
        "realtime:lobby",
        json!({"config": {"presence": {"key": "bob", "enabled": true}}}),
    )
    .await;
    let r = anon
        .send(
            Some("1"),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track",
              "payload": {"verified_sub": bob.to_string()}}),
        )
        .await;
    assert_eq!(anon.reply_to(&r).await.payload["status"], "ok");
    let diff = p.recv_until(|m| m.event == "presence_diff").await;
    assert_eq!(
        diff.payload["joins"]["bob"]["metas"][0]["verified_sub"],
        Value::Null
    );
}

/// Item 7: the slot is dropped under Ripple (a DBA's cleanup, a failover without slots).
/// Before, Ripple recreated it with an INFO line and `/health` stayed green while changes in
/// the gap were never delivered; now every joined channel gets a `system` message saying
/// changes may have been missed, and `/health` reports the loss.
#[tokio::test]
async fn a_lost_slot_is_reported_on_health_and_to_every_joined_channel() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let user = db.create_user("alice").await;
    let token = gw.token_for(user, 3600);
    let mut changes = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    changes
        .join_ok(
            "realtime:feed",
            changes_payload(
                &token,
                json!([{"event": "*", "schema": "public", "table": "messages"}]),
            ),
        )
        .await;
    let mut lobby = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    lobby.join_ok("realtime:lobby", json!({})).await;
    assert!(ripple_tests::wait_healthy(gw.addr, Duration::from_secs(20)).await);
    let health =
        ripple_tests::http::request(gw.addr, hyper::Method::GET, "/health", &[], None).await;
    assert!(
        health.json().get("slot_lost").is_none(),
        "{}",
        health.text()
    );

    // Drop the slot between Ripple's reconnection attempts.
    let slot = db.name.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "could not drop the slot");
        let _ = db
            .client
            .execute(
                "select pg_terminate_backend(active_pid) from pg_replication_slots
                  where slot_name = $1 and active_pid is not null",
                &[&slot],
            )
            .await;
        if db
            .client
            .execute("select pg_drop_replication_slot($1)", &[&slot])
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (c, topic) in [
        (&mut changes, "realtime:feed"),
        (&mut lobby, "realtime:lobby"),
    ] {
        let sys = c
            .recv_until(|m| {
                m.topic == topic && m.event == "system" && m.payload["code"] == "changes_missed"
            })
            .await;
        assert!(
            sys.payload["message"].as_str().unwrap().contains("missed"),
            "{}",
            sys.payload
        );
    }
    // Streaming again from the new slot: ready, but degraded, naming the loss.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let health =
            ripple_tests::http::request(gw.addr, hyper::Method::GET, "/health", &[], None).await;
        let body = health.json();
        if body["status"] == "degraded" || Instant::now() > deadline {
            assert_eq!(health.status, 200, "{body}");
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["slot_lost"]["count"], 1, "{body}");
}

/// Counts broadcasts a client receives until it has heard nothing for `quiet`; None if the
/// server closed it.
async fn count_broadcasts(mut c: Client, quiet: Duration) -> (Client, usize) {
    let mut n = 0;
    while let Some(m) = c.try_recv(quiet).await {
        if m.event == "broadcast" {
            n += 1;
        }
    }
    (c, n)
}

/// Item 3: configurable limits, each answered in the protocol's error form. Before, one
/// anonymous socket relayed 76,000 broadcasts a second and the receivers were
/// disconnected as too slow; now the flood is cut to the rate, the sender is told, and the
/// receivers stay connected. Channels per socket, bindings per join, join and presence
/// payload sizes are bounded too.
#[tokio::test]
async fn limits_cut_floods_and_oversized_requests_without_hurting_anyone_else() {
    let db = fresh_db().await;
    let mut config = ripple_tests::gateway_config();
    config.broadcasts_per_second = 100;
    config.channel_broadcasts_per_second = 150;
    config.presence_per_second = 5;
    config.max_channels_per_socket = 3;
    config.max_bindings_per_join = 4;
    config.max_join_bytes = 4096;
    config.max_presence_bytes = 1024;
    config.client_queue = 100_000;
    let gw = ripple_tests::spawn_gateway_with(&db, config).await;
    let room = "realtime:room";
    let join = json!({"config": {"broadcast": {"ack": false}, "presence": {"enabled": false}}});

    // Two receivers reading as normal clients do.
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let mut r = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
        r.join_ok(room, join.clone()).await;
        receivers.push(tokio::spawn(count_broadcasts(r, Duration::from_secs(3))));
    }
    // One socket floods.
    let mut flood = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    flood.join_ok(room, join.clone()).await;
    let started = Instant::now();
    for i in 0..2000 {
        flood
            .send(
                Some("1"),
                room,
                "broadcast",
                json!({"type": "broadcast", "event": "spam", "payload": {"i": i}}),
            )
            .await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut limited: u32 = 0;
    while let Some(m) = flood.try_recv(Duration::from_secs(1)).await {
        if m.event == "phx_reply" && m.payload["status"] == "error" {
            let r = reason(&m);
            assert!(
                r.starts_with("RateLimited") && r.contains("from this socket"),
                "{r}"
            );
            limited += 1;
        }
    }
    // One second of burst, then 100 a second (the server may take up to a second more
    // than the sending did to read the last of them).
    let relayed = 2000.0 - f64::from(limited);
    assert!(
        (100.0..=100.0 + 100.0 * (elapsed + 1.0)).contains(&relayed),
        "{limited} refused of 2000 sent in {elapsed:.2}s"
    );
    // Many sockets, each under its own rate, together meet the channel's.
    let mut senders = Vec::new();
    for _ in 0..4 {
        let mut s = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
        s.join_ok(room, join.clone()).await;
        senders.push(s);
    }
    let mut channel_limited: usize = 0;
    for s in &mut senders {
        for i in 0..60 {
            s.send(
                Some("1"),
                room,
                "broadcast",
                json!({"type": "broadcast", "event": "spam", "payload": {"i": i}}),
            )
            .await;
        }
    }
    for s in &mut senders {
        while let Some(m) = s.try_recv(Duration::from_millis(500)).await {
            if m.event == "phx_reply" && m.payload["status"] == "error" {
                assert!(reason(&m).contains("on this channel"), "{m:?}");
                channel_limited += 1;
            }
        }
    }
    assert!(
        channel_limited > 0,
        "240 broadcasts in a burst exceeded the channel's 150"
    );
    for r in receivers {
        let (mut c, n) = r.await.unwrap();
        let bound = 2000 - limited as usize + 240 - channel_limited;
        assert_eq!(n, bound, "each receiver got exactly what was let through");
        assert!(n < 600, "the receivers got {n} of 2,240 broadcasts");
        // Still connected and answering.
        c.assert_nothing_pending().await;
    }

    // Bounded requests, each with its reason.
    let mut c = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let binding = json!({"event": "*", "schema": "public", "table": "messages"});
    let five =
        json!({"config": {"postgres_changes": [binding, binding, binding, binding, binding]}});
    assert!(reason(&c.join("realtime:b", five).await).contains("limit of 4 per join"));
    let big = json!({"config": {"padding": "x".repeat(5000)}});
    assert!(reason(&c.join("realtime:b", big).await).contains("more than the limit of 4096"));
    for t in ["realtime:c1", "realtime:c2", "realtime:c3"] {
        c.join_ok(t, json!({"config": {"presence": {"enabled": true}}}))
            .await;
    }
    assert!(reason(&c.join("realtime:c4", json!({})).await).starts_with("ChannelRateLimitReached"));
    // Joining one of the same topics again is a rejoin, not a fourth channel.
    c.join_ok(
        "realtime:c3",
        json!({"config": {"presence": {"enabled": true}}}),
    )
    .await;
    let r = c
        .send(
            Some("1"),
            "realtime:c1",
            "presence",
            json!({"type": "presence", "event": "track",
              "payload": {"blob": "x".repeat(2000)}}),
        )
        .await;
    assert!(reason(&c.reply_to(&r).await).contains("presence payload"));
    let mut presence_limited = 0;
    for i in 0..20 {
        let r = c
            .send(
                Some("1"),
                "realtime:c1",
                "presence",
                json!({"type": "presence", "event": "track",
                  "payload": {"i": i}}),
            )
            .await;
        let reply = c.reply_to(&r).await;
        if reply.payload["status"] == "error" {
            assert!(reason(&reply).starts_with("RateLimited"), "{reply:?}");
            presence_limited += 1;
        }
    }
    assert!(
        presence_limited >= 10,
        "{presence_limited} of 20 presence updates refused"
    );
}

/// Item 8: no oracles, no amplification. A realtime join cannot tell whether a table exists
/// in a schema the caller may not use; a 404 for a function does not echo thousands of
/// argument names; concurrent requests that find the REST catalog missing load it once.
#[tokio::test]
async fn no_table_oracle_no_echo_amplification_and_one_catalog_load_for_many_requests() {
    let db = fresh_db().await;
    db.client
        .batch_execute(
            "create schema hidden;
             create table hidden.salaries (id int primary key, amount int);
             alter publication ripple add table hidden.salaries;",
        )
        .await
        .unwrap();
    let gw = spawn_gateway(&db).await;
    let user = db.create_user("mallory").await;
    let token = gw.token_for(user, 3600);

    // Many requests at once, each finding no catalog: one load between them.
    let loads = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("ripple_rest_catalog_loads_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let metrics =
        || ripple_tests::http::request(gw.addr, hyper::Method::GET, "/metrics", &[], None);
    let before = loads(&metrics().await.text());
    let requests: Vec<_> = (0..40)
        .map(|_| {
            ripple_tests::http::rest(
                &gw,
                hyper::Method::GET,
                "/rest/v1/profiles?select=id",
                Some(&token),
                &[],
                None,
            )
        })
        .collect();
    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        loads(&metrics().await.text()) - before,
        1,
        "catalog loads for 40 requests"
    );

    // The 404 names a few arguments, not all of them.
    let args: serde_json::Map<String, Value> = (0..5000)
        .map(|i| (format!("argument_number_{i}"), json!(i)))
        .collect();
    let r = ripple_tests::http::rest(
        &gw,
        hyper::Method::POST,
        "/rest/v1/rpc/no_such_function",
        Some(&token),
        &[],
        Some(Value::Object(args)),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "PGRST202");
    assert!(r.body.len() < 2048, "a {} byte answer", r.body.len());
    assert!(r.text().contains("4990 more"), "{}", r.text());

    // A table in a schema the role cannot use answers exactly as a missing one does.
    let mut c = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let refusal = |table: &str| {
        changes_payload(
            &token,
            json!([{"event": "*", "schema": "hidden", "table": table}]),
        )
    };
    let exists = reason(&c.join("realtime:probe", refusal("salaries")).await);
    let missing = reason(&c.join("realtime:probe", refusal("nothing")).await);
    assert_eq!(
        exists.replace("salaries", "X"),
        missing.replace("nothing", "X")
    );
    let schema_used = reason(
        &c.join(
            "realtime:probe",
            changes_payload(&token, json!([{"event": "*", "schema": "hidden"}])),
        )
        .await,
    );
    let schema_missing = reason(
        &c.join(
            "realtime:probe",
            changes_payload(&token, json!([{"event": "*", "schema": "nowhere"}])),
        )
        .await,
    );
    assert_eq!(
        schema_used.replace("hidden", "X"),
        schema_missing.replace("nowhere", "X")
    );
}

/// Median time from commit to delivery of `n` messages to `c`.
async fn delivery_p50(
    db: &ripple_tests::TestDb,
    c: &mut Client,
    conv: uuid::Uuid,
    sender: uuid::Uuid,
    n: usize,
) -> Duration {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("probe {i}");
        db.client
            .execute(
                "insert into public.messages (conversation_id, sender_id, body) values ($1, $2, $3)",
                &[&conv, &sender, &body],
            )
            .await
            .unwrap();
        let committed = Instant::now();
        c.recv_until(|m| {
            m.event == "postgres_changes" && m.payload["data"]["record"]["body"] == body.as_str()
        })
        .await;
        times.push(committed.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// Item 4: an outsider's socket holds as many always-true and unindexable bindings as it
/// may. Before, a join of 10,000 such bindings was accepted and every one of them ran for
/// every change; now that join is refused, what one socket holds is bounded (200 by
/// default), and a real subscriber's delivery latency stays within 2x of what it is when
/// the same outsider holds one binding (each distinct identity costs an authorization
/// check per change whatever it subscribes to, so that is the fair reference).
#[tokio::test]
async fn hostile_bindings_do_not_slow_a_real_subscriber() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("alice").await;
    let bob = db.create_user("bob").await;
    let conv = conversation(&db, &[alice, bob]).await;
    let mut real = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    real.join_ok(
        "realtime:inbox",
        changes_payload(
            &gw.token_for(bob, 3600),
            json!([{"event": "INSERT", "schema": "public", "table": "messages",
                    "filter": format!("conversation_id=eq.{conv}")}]),
        ),
    )
    .await;
    // The test cluster runs with synchronous_commit off, where a commit may wait up to
    // wal_writer_delay (200 ms) before it streams: that would hide the fan-out's cost.
    db.client
        .batch_execute("set synchronous_commit = on")
        .await
        .unwrap();

    let always = json!({"event": "*", "schema": "public", "table": "messages"});
    // Signed-up outsiders: they may read the columns, RLS shows them no rows.
    let mallory = db.create_user("mallory").await;
    let mt = gw.token_for(mallory, 3600);
    let hostile = |bindings: Vec<Value>| json!({"config": {"postgres_changes": bindings}, "access_token": mt});
    // The reference: the same outsider subscribed once, as any other user could be (each
    // distinct identity costs one authorization check per change, attacker or not).
    let mut one = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    one.join_ok("realtime:one", hostile(vec![always.clone()]))
        .await;
    delivery_p50(&db, &mut real, conv, alice, 5).await; // warm up

    // Latency on a shared machine is noisy: the comparison is made in up to three rounds
    // (reference, then attack), and one round within bounds passes. A regression (before
    // the limits: 2.5 ms -> 313 ms) fails every round.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let base = delivery_p50(&db, &mut real, conv, alice, 31).await;
        let mut a = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
        let huge: Vec<Value> = (0..10_000).map(|_| always.clone()).collect();
        let r = reason(&a.join("realtime:amplify", hostile(huge)).await);
        assert!(r.contains("more than the limit"), "{r}");
        // A hundred identical always-true bindings are one subscription: one id, echoed for
        // each of them.
        let same: Vec<Value> = (0..100).map(|_| always.clone()).collect();
        let reply = a.join_ok("realtime:amplify0", hostile(same)).await;
        let ids: std::collections::BTreeSet<u64> = reply.payload["response"]["postgres_changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        // Distinct unindexable filters, each true for every row, cannot be merged: the most
        // one socket may hold is two channels of 100 (the first joined again, replacing it).
        for (topic, prefix) in [("realtime:amplify0", "x"), ("realtime:amplify1", "y")] {
            let distinct: Vec<Value> = (0..100)
                .map(|i| json!({"event": "*", "schema": "public", "table": "messages", "filter": format!("body=neq.{prefix}{i}")}))
                .collect();
            a.join_ok(topic, hostile(distinct)).await;
        }
        let r = reason(
            &a.join("realtime:amplify2", hostile(vec![always.clone()]))
                .await,
        );
        assert!(r.contains("per socket"), "{r}");
        let attacked = delivery_p50(&db, &mut real, conv, alice, 31).await;
        eprintln!("p50 delivery: {base:?} with 1 hostile binding, {attacked:?} with 201");
        rounds.push((base, attacked));
        if attacked <= base * 2 + Duration::from_millis(2) {
            return;
        }
        drop(a); // the attacker leaves; the next round measures the reference again
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("p50 under attack against the reference, in each round: {rounds:?}");
}

/// Item 6, pool isolation: slow RPCs hold every REST connection (proved by a cheap REST
/// read that cannot get one). Meanwhile `/health` still says ready, a change still reaches
/// its subscriber, and removing a member still closes his private channel, each well
/// before the slow RPCs end: health, deliveries and revocation run on the pipeline's own
/// connections. Before, the re-check waited behind the RPCs (the 6 s of `pg_sleep`).
#[tokio::test]
async fn rest_saturation_delays_neither_health_nor_deliveries_nor_revocation() {
    const SLEEP_SECS: u64 = 6;
    const PROMPT: Duration = Duration::from_millis(2500);
    let db = fresh_db().await;
    db.client
        .batch_execute(&format!(
            "create function public.slow_rpc() returns int language sql volatile as
               $$ select pg_sleep({SLEEP_SECS}); select 1 $$;
             grant execute on function public.slow_rpc() to authenticated;"
        ))
        .await
        .unwrap();
    let mut config = ripple_tests::gateway_config();
    config.pool_size = 2;
    config.statement_timeout_ms = 30_000;
    let gw = ripple_tests::spawn_gateway_with(&db, config).await;
    let alice = db.create_user("alice").await;
    let bob = db.create_user("bob").await;
    let conv = conversation(&db, &[alice, bob]).await;
    let topic = format!("realtime:conversation:{conv}");
    let bob_token = gw.token_for(bob, 3600);
    let mut b = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    b.join_ok(&topic, private_join(&bob_token)).await;
    let mut watcher = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    watcher
        .join_ok(
            "realtime:room",
            changes_payload(
                &gw.token_for(alice, 3600),
                json!([{"event": "INSERT", "schema": "public", "table": "messages"}]),
            ),
        )
        .await;

    // Twice as many slow RPCs as REST connections.
    let alice_token = gw.token_for(alice, 3600);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let (addr, key, auth) = (
            gw.addr,
            gw.anon_key.clone(),
            format!("Bearer {alice_token}"),
        );
        slow.push(tokio::spawn(async move {
            ripple_tests::http::request(
                addr,
                hyper::Method::POST,
                "/rest/v1/rpc/slow_rpc",
                &[
                    ("apikey", key.as_str()),
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                Some(b"{}".to_vec()),
            )
            .await
            .status
        }));
    }
    let saturated_at = Instant::now();
    loop {
        let sleeping: i64 = db
            .client
            .query_one(
                "select count(*) from pg_stat_activity where datname = current_database()
                   and query like '%slow_rpc%' and state = 'active' and pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if sleeping >= 2 {
            break;
        }
        assert!(
            saturated_at.elapsed() < Duration::from_secs(5),
            "RPCs never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // REST really is saturated: a cheap read cannot get a connection meanwhile.
    let cheap = tokio::time::timeout(
        Duration::from_millis(800),
        ripple_tests::http::request(
            gw.addr,
            hyper::Method::GET,
            "/rest/v1/profiles?select=id&limit=1",
            &[
                ("apikey", gw.anon_key.as_str()),
                ("authorization", &format!("Bearer {alice_token}")),
            ],
            None,
        ),
    )
    .await;
    assert!(cheap.is_err(), "the REST pool was not saturated");

    let started = Instant::now();
    assert_eq!(
        ripple_tests::health_status(gw.addr).await,
        Some(200),
        "health while REST is busy"
    );
    assert!(
        started.elapsed() < PROMPT,
        "health took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    db.as_user(alice)
        .query(
            "select public.send_message($1, $2)",
            &[&conv, &"still here"],
        )
        .await;
    let m = watcher
        .recv_until(|m| {
            m.event == "postgres_changes" && m.payload["data"]["record"]["body"] == "still here"
        })
        .await;
    assert_eq!(m.payload["data"]["type"], "INSERT");
    assert!(
        started.elapsed() < PROMPT,
        "delivery took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    db.client
        .execute(
            "delete from public.conversation_members where conversation_id = $1 and user_id = $2",
            &[&conv, &bob],
        )
        .await
        .unwrap();
    let sys = closed_by_server(&mut b, &topic).await;
    let took = started.elapsed();
    assert!(
        sys.payload["message"]
            .as_str()
            .unwrap()
            .contains("no longer have permission"),
        "{}",
        sys.payload
    );
    assert!(
        took < PROMPT,
        "revocation waited {took:?} behind REST (RPCs sleep {SLEEP_SECS} s)"
    );
    // The slow RPCs themselves were served, not dropped.
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
}

/// VmRSS and VmHWM (peak) of a process, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("status field")
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Item 5, the memory bounds, measured on `ripple serve` as its own process with its
/// default settings. Before: three sockets that never read held 450 MB, 40 presence
/// trackers with 500 KB payloads took 931 MB, a late joiner got a 20 MB `presence_state`,
/// and a 600,000-change streamed transaction cost +1 GB until its abort. Here, in turn:
/// ten sockets that never read on a channel flooded with 64 KiB broadcasts (22 MiB each
/// unbounded), 40 trackers at
/// the largest payload allowed (500 KB ones are refused), a late joiner, and a 300,000-row
/// streamed transaction (128 MiB as the server streams it) held open, then aborted (half
/// the rows, with bigger ones: the server's decoding of every row is what costs CPU
/// here, on a machine shared with the other tests).
///
/// The ceiling, 256 MiB of peak RSS, is the sum of what the limits allow: the never-read
/// sockets' queues (8 MiB each, `RIPPLE_CLIENT_QUEUE_BYTES`, until they are disconnected:
/// 80 MiB for ten), presence at 4 KiB a tracker, the streamed transactions' memory budget
/// (64 MiB, `RIPPLE_STREAMED_MEMORY_BYTES`) and the idle server (about 20 MiB), with room
/// for the allocator. Measured here: idle 19, after the flood 111, after presence 117,
/// with the open transaction 181, peak 185 MiB. The streamed transaction alone must add
/// less than 100 MiB: held whole as sent it would add 128 MiB, and as assembled rows
/// (before the spill) it added 275 MiB, for a peak of 396 MiB.
#[tokio::test]
async fn memory_attacks_keep_the_server_under_its_rss_ceiling() {
    const CEILING_MIB: u64 = 256;
    const STREAMED_GROWTH_MIB: u64 = 100;
    const ROWS: i32 = 300_000;
    // Its 300,000-row transaction stays open for seconds: on the shared cluster every
    // replication slot other tests create meanwhile would wait for it to end (a new logical
    // slot waits for the transactions running anywhere in the cluster).
    let db = ripple_tests::own_cluster("hostile_memory").fresh_db().await;
    db.client
        .batch_execute(
            "create table public.bulk (id int primary key, body text);
             alter publication ripple add table public.bulk;",
        )
        .await
        .unwrap();
    let port = ripple_tests::free_low_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut serve = ripple_tests::spawn_ripple_serve(&db, port, None);
    assert!(ripple_tests::wait_healthy(addr, Duration::from_secs(30)).await);
    let pid = serve.pid();
    let anon =
        ripple::auth::JwtVerifier::new(&ripple_tests::gateway_config().jwt_config().unwrap())
            .unwrap()
            .mint_for("anon", None, 3600)
            .unwrap();
    let (idle, _) = rss_mib(pid);

    // Slow readers: ten sockets join and never read again; five senders flood 64 KiB
    // broadcasts (400 of them, within the rate limits) at the channel.
    let join = json!({"config": {"broadcast": {"ack": false}, "presence": {"enabled": false}}});
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut c = Client::connect_small_buffer(addr, &anon, "1.0.0").await;
        c.join_ok("realtime:flood", join.clone()).await;
        slow.push(c);
    }
    // One sender, paced to stay within its rate limit (100 a second): 360 broadcasts,
    // 22 MiB for each reader.
    let blob = "x".repeat(64 * 1024);
    let mut sender = Client::connect(addr, &anon, "1.0.0").await;
    sender.join_ok("realtime:flood", join.clone()).await;
    for round in 0..4 {
        for i in 0..90 {
            sender
                .send(
                    None,
                    "realtime:flood",
                    "broadcast",
                    json!({"type": "broadcast", "event": "blob",
                           "payload": {"round": round, "i": i, "blob": blob}}),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (after_flood, _) = rss_mib(pid);

    // Presence: a 500 KB payload is refused; 40 trackers at the largest allowed size.
    let presence_join = |key: &str| json!({"config": {"presence": {"key": key, "enabled": true}}});
    let mut big = Client::connect(addr, &anon, "1.0.0").await;
    big.join_ok("realtime:lobby", presence_join("big")).await;
    let r = big
        .send(
            Some("1"),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track",
                   "payload": {"pad": "p".repeat(500_000)}}),
        )
        .await;
    assert!(reason(&big.reply_to(&r).await).contains("presence payload"));
    let mut trackers = Vec::new();
    for i in 0..40 {
        let mut c = Client::connect(addr, &anon, "1.0.0").await;
        c.join_ok("realtime:lobby", presence_join(&format!("t{i}")))
            .await;
        let r = c
            .send(
                Some("1"),
                "realtime:lobby",
                "presence",
                json!({"type": "presence", "event": "track",
                       "payload": {"pad": "p".repeat(3900)}}),
            )
            .await;
        assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
        trackers.push(c);
    }
    // A late joiner gets everyone's state, bounded by the payload limit.
    let mut late = Client::connect(addr, &anon, "1.0.0").await;
    late.join_ok("realtime:lobby", presence_join("late")).await;
    let state = late.recv_until(|m| m.event == "presence_state").await;
    let state_bytes = state.payload.to_string().len();
    assert_eq!(state.payload.as_object().unwrap().len(), 40);
    assert!(
        state_bytes < 40 * 6000,
        "presence_state of {state_bytes} bytes"
    );
    let (after_presence, _) = rss_mib(pid);

    // A large transaction, streamed by the server while in progress, then aborted.
    let other = db.connect().await;
    other
        .batch_execute(&format!(
            "begin; insert into public.bulk select g, repeat('x', 400) from generate_series(1, {ROWS}) g;"
        ))
        .await
        .unwrap();
    // Wait until the server has decoded all of it (what it has not streamed yet stays in
    // its own decoding memory, at most logical_decoding_work_mem).
    let end: String = db
        .client
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let caught_up: bool = db
            .client
            .query_one(
                "select coalesce((select r.sent_lsn >= $2::text::pg_lsn from pg_stat_replication r
                   join pg_replication_slots s on s.active_pid = r.pid where s.slot_name = $1), false)",
                &[&db.name, &end],
            )
            .await
            .unwrap()
            .get(0);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the stream never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let Ripple take in what was sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let streamed_bytes: i64 = db
        .client
        .query_one(
            "select coalesce(sum(stream_bytes), 0)::int8 from pg_stat_replication_slots where slot_name = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    let (with_open_transaction, _) = rss_mib(pid);
    other.batch_execute("rollback").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after_abort, peak) = rss_mib(pid);
    let metrics = ripple_tests::http::request(addr, hyper::Method::GET, "/metrics", &[], None)
        .await
        .text();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    eprintln!(
        "RSS MiB: idle {idle}, after flood {after_flood}, after presence {after_presence}, \
         with the open streamed transaction {with_open_transaction}, after its abort \
         {after_abort}, peak {peak} (ceiling {CEILING_MIB}); server streamed {} MiB; \
         spilled {} MiB in {} transaction(s)",
        streamed_bytes >> 20,
        metric("ripple_replication_spilled_bytes_total") as u64 >> 20,
        metric("ripple_replication_spilled_transactions_total"),
    );
    assert!(
        streamed_bytes > 100 << 20,
        "the server streamed the transaction ({streamed_bytes} bytes)"
    );
    assert!(
        with_open_transaction.saturating_sub(after_presence) < STREAMED_GROWTH_MIB,
        "the streamed transaction took {} MiB",
        with_open_transaction.saturating_sub(after_presence)
    );
    assert!(metric("ripple_replication_spilled_transactions_total") >= 1.0);
    assert!(peak < CEILING_MIB, "peak RSS {peak} MiB");

    // The server still serves everyone: the trackers are all still present and a new
    // broadcast reaches a reader.
    let mut reader = Client::connect(addr, &anon, "1.0.0").await;
    reader.join_ok("realtime:after", join.clone()).await;
    sender.join_ok("realtime:after", join).await;
    sender
        .send(
            None,
            "realtime:after",
            "broadcast",
            json!({"type": "broadcast", "event": "hello", "payload": {}}),
        )
        .await;
    assert_eq!(
        reader.recv_until(|m| m.event == "broadcast").await.payload["event"],
        "hello"
    );
    drop((slow, trackers, late, big));
    serve.kill();
}
