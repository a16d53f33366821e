//! The realtime socket's protocol edges, with real WebSocket clients against a real gateway
//! and database: handshake, both framings, heartbeats, bad input, joins, tokens, broadcast,
//! presence, private channels, slow readers.

use crate::support;

use std::time::Duration;

use futures_util::StreamExt;
use ripple_tests::{fresh_db, gateway_config, spawn_gateway, spawn_gateway_with};
use serde_json::{json, Value};
use support::{changes_payload, conversation, spawn_app, Client, Msg};
use tokio_tungstenite::tungstenite::Message;

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

async fn handshake_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

fn alg_none_token(claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn the_handshake_refuses_missing_bad_expired_and_alg_none_apikeys_with_401() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let base = format!("ws://{}/realtime/v1/websocket", gw.addr);
    assert_eq!(handshake_status(&format!("{base}?vsn=1.0.0")).await, 401);
    assert_eq!(
        handshake_status(&format!("{base}?apikey=garbage&vsn=1.0.0")).await,
        401
    );
    let expired = gw.sign(&json!({"role": "anon", "exp": 1}));
    assert_eq!(
        handshake_status(&format!("{base}?apikey={expired}")).await,
        401
    );
    // Signed with our secret, but naming the superuser: never acted on.
    let superuser = gw.sign(&json!({"role": "postgres", "exp": 99999999999i64}));
    assert_eq!(
        handshake_status(&format!("{base}?apikey={superuser}")).await,
        401
    );
    let none = alg_none_token(&json!({"role": "service_role", "exp": 99999999999i64}));
    assert_eq!(
        handshake_status(&format!("{base}?apikey={none}")).await,
        401
    );
    let other_secret = ripple::auth::JwtVerifier::new(&ripple::auth::JwtConfig {
        secret: Some(ripple::auth::Secret::new(
            "another-secret-another-secret-another",
        )),
        ..Default::default()
    })
    .unwrap()
    .mint_for("anon", None, 60)
    .unwrap();
    assert_eq!(
        handshake_status(&format!("{base}?apikey={other_secret}")).await,
        401
    );
    assert_eq!(
        handshake_status(&format!("{base}?apikey={}&vsn=9.9.9", gw.anon_key)).await,
        400
    );
    // The good key, on both paths; and the header form.
    assert_eq!(
        handshake_status(&format!("{base}?apikey={}", gw.anon_key)).await,
        101
    );
    let alt = format!(
        "ws://{}/socket/websocket?apikey={}&vsn=2.0.0",
        gw.addr, gw.anon_key
    );
    assert_eq!(handshake_status(&alt).await, 101);
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("{base}?vsn=1.0.0").into_client_request().unwrap();
    req.headers_mut()
        .insert("x-api-key", gw.anon_key.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn heartbeats_are_answered_in_both_framings() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    for vsn in ["1.0.0", "2.0.0"] {
        let mut c = Client::connect(gw.addr, &gw.anon_key, vsn).await;
        let r = c.send(None, "phoenix", "heartbeat", json!({})).await;
        let m = c.recv().await;
        assert_eq!(m.topic, "phoenix");
        assert_eq!(m.event, "phx_reply");
        assert_eq!(m.r#ref.as_deref(), Some(r.as_str()));
        assert_eq!(m.payload, json!({"status": "ok", "response": {}}));
    }
}

#[tokio::test]
async fn a_silent_socket_is_closed_and_a_heartbeating_one_is_not() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.ws_idle_timeout_secs = 2;
    let gw = spawn_gateway_with(&db, config).await;
    let mut silent = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    let mut alive = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let r = alive.send(None, "phoenix", "heartbeat", json!({})).await;
        assert_eq!(alive.reply_to(&r).await.payload["status"], "ok");
    }
    // The silent one was closed by the server (a close frame, then end of stream).
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent socket stays open");
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn malformed_frames_and_unknown_events_get_error_replies_and_the_socket_survives() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let mut c = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    // Not JSON at all: nothing to address a reply to, so a phx_error on the socket topic.
    c.send_raw(Message::Text("{{{".into())).await;
    let m = c.recv().await;
    assert_eq!(
        (m.topic.as_str(), m.event.as_str()),
        ("phoenix", "phx_error")
    );
    assert!(m.payload["reason"]
        .as_str()
        .unwrap()
        .contains("MalformedMessage"));
    // The wrong framing for the version.
    c.send_raw(Message::Text(
        r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#.into(),
    ))
    .await;
    assert_eq!(c.recv().await.event, "phx_error");
    // A bad field with a ref: an error reply to that ref.
    c.send_raw(Message::Text(r#"[null,"77","realtime:x",42,{}]"#.into()))
        .await;
    let m = c.recv().await;
    assert_eq!(m.r#ref.as_deref(), Some("77"));
    assert!(reason(&m).contains("event must be a string"));
    // A binary frame that is not a broadcast push.
    c.send_raw(Message::Binary(vec![9, 1, 2, 3].into())).await;
    assert_eq!(c.recv().await.event, "phx_error");
    // Unknown event on the phoenix topic, and on a topic never joined.
    let r = c.send(None, "phoenix", "dance", json!({})).await;
    assert!(reason(&c.reply_to(&r).await).contains("UnknownEvent"));
    let r = c
        .send(
            None,
            "realtime:never",
            "broadcast",
            json!({"type": "broadcast", "event": "e"}),
        )
        .await;
    assert_eq!(reason(&c.reply_to(&r).await), "unmatched topic");
    // Unknown event on a joined channel.
    c.join_ok(
        "realtime:room",
        json!({"config": {"presence": {"enabled": false}}}),
    )
    .await;
    let r = c.send(Some("1"), "realtime:room", "shout", json!({})).await;
    assert!(reason(&c.reply_to(&r).await).contains("UnknownEvent"));
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_that_socket_only() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.max_body_bytes = 4096;
    let gw = spawn_gateway_with(&db, config).await;
    let mut big = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let mut other = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let huge = "x".repeat(10_000);
    let _ = big
        .send(None, "phoenix", "heartbeat", json!({ "pad": huge }))
        .await;
    assert!(
        big.try_recv(Duration::from_secs(5)).await.is_none(),
        "closed, no reply"
    );
    other.assert_nothing_pending().await;
}

#[tokio::test]
async fn joins_in_both_framings_echo_the_bindings_with_integer_ids_then_say_subscribed() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let token = gw.token_for(alice, 600);
    for vsn in ["1.0.0", "2.0.0"] {
        let mut c = Client::connect(gw.addr, &gw.anon_key, vsn).await;
        let specs = json!([
            {"event": "INSERT", "schema": "public", "table": "messages",
             "filter": "conversation_id=eq.5f0c7a5e-1a8e-4b2e-9d5e-0b9f1c2d3e4f"},
            {"event": "*", "schema": "public", "table": "conversations"}
        ]);
        let reply = c
            .join("realtime:room", changes_payload(&token, specs.clone()))
            .await;
        assert_eq!(reply.payload["status"], "ok", "{}", reply.payload);
        assert_eq!(
            reply.join_ref, reply.r#ref,
            "the join reply carries the join ref"
        );
        let got = reply.payload["response"]["postgres_changes"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(got.len(), 2);
        for (g, s) in got.iter().zip(specs.as_array().unwrap()) {
            assert!(g["id"].is_u64(), "ids are integers: {g}");
            for k in ["event", "schema", "table", "filter"] {
                assert_eq!(g[k], s[k], "field {k} echoed as sent");
            }
        }
        assert_ne!(got[0]["id"], got[1]["id"]);
        let sys = c.recv().await;
        assert_eq!(sys.event, "system");
        assert_eq!(sys.join_ref, reply.join_ref);
        assert_eq!(
            sys.payload,
            json!({"extension": "postgres_changes", "status": "ok",
                   "message": "Subscribed to PostgreSQL", "channel": "room"})
        );
    }
}

#[tokio::test]
async fn bad_topics_missing_tables_and_bad_filters_are_refused_with_reasons() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let token = gw.token_for(alice, 600);
    let mut c = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    assert!(reason(&c.join("realtime:", json!({})).await).starts_with("TopicNameRequired"));
    assert_eq!(reason(&c.join("lobby", json!({})).await), "unmatched topic");
    assert!(reason(
        &c.join("realtime:x", json!({"config": {"private": 1}}))
            .await
    )
    .starts_with("InvalidJoinPayload"));
    let bad = |spec: Value| changes_payload(&token, json!([spec]));
    let cases = [
        (
            json!({"event": "*", "schema": "public", "table": "nope"}),
            "does not exist",
        ),
        (
            json!({"event": "*", "schema": "nope", "table": "messages"}),
            "does not exist",
        ),
        (json!({"event": "*", "schema": "nope"}), "does not exist"),
        (
            json!({"event": "*", "schema": "private", "table": "settings"}),
            "not in publication",
        ),
        (
            json!({"event": "SELECT", "schema": "public", "table": "messages"}),
            "SELECT",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "messages", "filter": "nope=eq.1"}),
            "does not exist",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "messages", "filter": "conversation_id=eq.12"}),
            "not a valid uuid",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "messages", "filter": "body=like.%a%"}),
            "not supported",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "messages", "filter": "body"}),
            "column=operator.value",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "messages",
                "filter": format!("attachment_size=in.({})", (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join(","))}),
            "at most 100",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "messages", "filter": "created_at=gt.yesterday"}),
            "timestamptz",
        ),
    ];
    for (spec, want) in cases {
        let r = reason(&c.join("realtime:bad", bad(spec.clone())).await);
        assert!(
            r.starts_with("InvalidPostgresChanges") || r.starts_with("InvalidJoinPayload"),
            "{spec}: {r}"
        );
        assert!(r.contains(want), "{spec}: `{r}` should mention `{want}`");
    }
    // The refused joins left nothing behind, and the socket still works.
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn bad_expired_and_alg_none_tokens_in_a_join_are_refused() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let mut c = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let join = |t: &str| json!({"config": {"presence": {"enabled": false}}, "access_token": t});
    let expired = gw.token_for(alice, -10);
    assert!(reason(&c.join("realtime:a", join(&expired)).await).contains("expired"));
    let none =
        alg_none_token(&json!({"role": "service_role", "sub": alice, "exp": 99999999999i64}));
    assert!(reason(&c.join("realtime:a", join(&none)).await).contains("algorithm"));
    let forged = {
        let t = gw.token_for(alice, 600);
        let (head, _) = t.rsplit_once('.').unwrap();
        format!("{head}.AAAA")
    };
    assert!(reason(&c.join("realtime:a", join(&forged)).await).starts_with("JwtSignatureError"));
    assert!(reason(&c.join("realtime:a", join("not-a-jwt")).await).starts_with("MalformedJWT"));
    let no_role = gw.sign(&json!({"sub": alice, "exp": 99999999999i64}));
    assert!(reason(&c.join("realtime:a", join(&no_role)).await).contains("role"));
    c.join_ok("realtime:a", join(&gw.token_for(alice, 600)))
        .await;
}

#[tokio::test]
async fn a_hundred_channels_on_one_socket_each_get_their_own_messages() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let token = gw.token_for(alice, 600);
    let mut c = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    for i in 0..100 {
        let spec = json!([{"event": "*", "schema": "public", "table": "messages",
                           "filter": format!("conversation_id=eq.{}", uuid::Uuid::new_v4())}]);
        let mut payload = changes_payload(&token, spec);
        payload["config"]["broadcast"]["self"] = json!(true);
        c.join_ok(&format!("realtime:room-{i}"), payload).await;
    }
    // A broadcast on each channel comes back on that channel only.
    for i in (0..100).rev() {
        let topic = format!("realtime:room-{i}");
        c.send(
            Some("1"),
            &topic,
            "broadcast",
            json!({"type": "broadcast", "event": "n", "payload": {"i": i}}),
        )
        .await;
    }
    for i in (0..100).rev() {
        let m = c.recv().await;
        assert_eq!(m.topic, format!("realtime:room-{i}"));
        assert_eq!(m.payload["payload"]["i"], i);
    }
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn broadcast_honours_self_and_ack_across_framings_including_binary_frames() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let mut a = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    let mut b = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    let mut quiet = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    a.join_ok(
        "realtime:room",
        json!({"config": {"broadcast": {"self": true, "ack": true}, "presence": {"enabled": false}}}),
    )
    .await;
    b.join_ok(
        "realtime:room",
        json!({"config": {"broadcast": {"self": false, "ack": false}, "presence": {"enabled": false}}}),
    )
    .await;
    quiet
        .join_ok(
            "realtime:elsewhere",
            json!({"config": {"presence": {"enabled": false}}}),
        )
        .await;
    // A's JSON broadcast: A gets it back (self) and an ack; B gets it.
    let r = a
        .send(
            Some("1"),
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "typing", "payload": {"who": "a"}}),
        )
        .await;
    let mut got_ack = false;
    let mut got_self = false;
    for _ in 0..2 {
        let m = a.recv().await;
        if m.event == "phx_reply" {
            assert_eq!(m.r#ref.as_deref(), Some(r.as_str()));
            assert_eq!(m.payload["status"], "ok");
            got_ack = true;
        } else {
            assert_eq!(m.event, "broadcast");
            assert_eq!(m.payload["payload"], json!({"who": "a"}));
            got_self = true;
        }
    }
    assert!(got_ack && got_self);
    let m = b.recv().await;
    assert_eq!(m.event, "broadcast");
    assert_eq!(
        m.payload,
        json!({"type": "broadcast", "event": "typing", "payload": {"who": "a"}})
    );
    // B's broadcast without self: B gets nothing back, and no ack (not asked for).
    b.send(
        Some("1"),
        "realtime:room",
        "broadcast",
        json!({"type": "broadcast", "event": "typing", "payload": {"who": "b"}}),
    )
    .await;
    assert_eq!(a.recv().await.payload["payload"], json!({"who": "b"}));
    b.assert_nothing_pending().await;
    // A kind 3 binary push (JSON-encoded) from A reaches B as JSON text.
    let frame = {
        let (jr, r, topic, ev, meta) = ("1", "9", "realtime:room", "cursor", "");
        let mut f = vec![
            3,
            jr.len() as u8,
            r.len() as u8,
            topic.len() as u8,
            ev.len() as u8,
            meta.len() as u8,
            1,
        ];
        for s in [jr, r, topic, ev, meta] {
            f.extend_from_slice(s.as_bytes());
        }
        f.extend_from_slice(br#"{"x":1}"#);
        f
    };
    a.send_raw(Message::Binary(frame.into())).await;
    let m = b.recv().await;
    assert_eq!(
        m.payload,
        json!({"type": "broadcast", "event": "cursor", "payload": {"x": 1}})
    );
    quiet.assert_nothing_pending().await;
}

#[tokio::test]
async fn presence_state_on_join_and_diffs_on_track_and_on_disconnect() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let presence = |key: &str| json!({"config": {"presence": {"key": key, "enabled": true}}});
    let mut a = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    a.join_ok("realtime:lobby", presence("alice")).await;
    assert_eq!(a.recv().await.event, "presence_state");
    let r = a
        .send(
            Some("1"),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"status": "online"}}),
        )
        .await;
    let mut seen_reply = false;
    let mut seen_diff = false;
    for _ in 0..2 {
        let m = a.recv().await;
        match m.event.as_str() {
            "phx_reply" => {
                assert_eq!(m.r#ref.as_deref(), Some(r.as_str()));
                seen_reply = true;
            }
            "presence_diff" => {
                assert_eq!(m.payload["joins"]["alice"]["metas"][0]["status"], "online");
                seen_diff = true;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(seen_reply && seen_diff);
    let mut b = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    b.join_ok("realtime:lobby", presence("bob")).await;
    let state = b.recv().await;
    assert_eq!(state.event, "presence_state");
    assert_eq!(state.payload["alice"]["metas"][0]["status"], "online");
    assert!(state.payload["alice"]["metas"][0]["phx_ref"].is_string());
    // Alice's socket goes away: Bob sees her leave.
    drop(a);
    let diff = b.recv_until(|m| m.event == "presence_diff").await;
    assert_eq!(
        diff.payload["leaves"]["alice"]["metas"][0]["status"],
        "online"
    );
    assert_eq!(diff.payload["joins"], json!({}));
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_channel_and_an_expired_one_closes_it() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let mut c = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    let short = gw.token_for(alice, 3);
    c.join_ok(
        "realtime:room",
        json!({"config": {"presence": {"enabled": false}}, "access_token": short}),
    )
    .await;
    // Refresh with a longer token before expiry: the channel outlives the first token.
    let r = c
        .send(
            Some("1"),
            "realtime:room",
            "access_token",
            json!({"access_token": gw.token_for(alice, 600)}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.assert_nothing_pending().await;
    // An expired token ends the channel: system error, then phx_close.
    c.send(
        Some("1"),
        "realtime:room",
        "access_token",
        json!({"access_token": gw.token_for(alice, -5)}),
    )
    .await;
    let sys = c.recv().await;
    assert_eq!(sys.event, "system");
    assert_eq!(sys.payload["status"], "error");
    assert!(sys.payload["message"].as_str().unwrap().contains("expired"));
    assert_eq!(sys.payload["channel"], "room");
    let close = c.recv().await;
    assert_eq!(
        (close.topic.as_str(), close.event.as_str()),
        ("realtime:room", "phx_close")
    );
    assert_eq!(close.join_ref.as_deref(), Some("1"));
    // The channel is gone.
    let r = c
        .send(
            Some("1"),
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "e"}),
        )
        .await;
    assert_eq!(reason(&c.reply_to(&r).await), "unmatched topic");
}

#[tokio::test]
async fn a_channel_whose_token_expires_while_connected_is_closed() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let alice = db.create_user("Alice").await;
    let mut c = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    c.join_ok(
        "realtime:room",
        json!({"config": {"presence": {"enabled": false}}, "access_token": gw.token_for(alice, 2)}),
    )
    .await;
    let mut other = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    other
        .join_ok(
            "realtime:room",
            json!({"config": {"presence": {"enabled": false}}, "access_token": gw.token_for(alice, 600)}),
        )
        .await;
    let sys = c.recv().await;
    assert_eq!(sys.event, "system");
    assert!(sys.payload["message"]
        .as_str()
        .unwrap()
        .starts_with("Token has expired"));
    assert_eq!(c.recv().await.event, "phx_close");
    other.assert_nothing_pending().await;
}

#[tokio::test]
async fn private_channels_admit_members_only_and_carry_their_broadcasts() {
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let (alice, bob, carol) = (
        db.create_user("Alice").await,
        db.create_user("Bob").await,
        db.create_user("Carol").await,
    );
    let conv = conversation(&db, &[alice, bob]).await;
    let topic = format!("realtime:conversation:{conv}");
    let private = |t: &str| json!({"config": {"private": true, "broadcast": {"ack": true}, "presence": {"enabled": false}}, "access_token": t});
    let mut a = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    let mut b = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    let mut c = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    a.join_ok(&topic, private(&gw.token_for(alice, 600))).await;
    b.join_ok(&topic, private(&gw.token_for(bob, 600))).await;
    let refused = reason(&c.join(&topic, private(&gw.token_for(carol, 600))).await);
    assert!(refused.starts_with("Unauthorized"), "{refused}");
    // The anon key alone is no member either.
    assert!(
        reason(&c.join(&topic, json!({"config": {"private": true}})).await)
            .starts_with("Unauthorized")
    );
    // A topic no policy covers is closed to everyone.
    assert!(reason(
        &a.join("realtime:lobby", private(&gw.token_for(alice, 600)))
            .await
    )
    .starts_with("Unauthorized"));
    // Carol on the public channel of the same name hears nothing of the private one.
    c.join_ok(
        &topic,
        json!({"config": {"presence": {"enabled": false}}, "access_token": gw.token_for(carol, 600)}),
    )
    .await;
    let r = a
        .send(
            Some("1"),
            &topic,
            "broadcast",
            json!({"type": "broadcast", "event": "typing", "payload": {"who": "alice"}}),
        )
        .await;
    assert_eq!(a.reply_to(&r).await.payload["status"], "ok");
    assert_eq!(b.recv().await.payload["payload"], json!({"who": "alice"}));
    c.assert_nothing_pending().await;
    // Bob leaves the conversation: his refreshed token no longer admits him.
    db.client
        .execute(
            "delete from public.conversation_members where conversation_id = $1 and user_id = $2",
            &[&conv, &bob],
        )
        .await
        .unwrap();
    b.send(
        Some("1"),
        &topic,
        "access_token",
        json!({"access_token": gw.token_for(bob, 700)}),
    )
    .await;
    let sys = b.recv().await;
    assert_eq!(sys.event, "system");
    assert!(sys.payload["message"]
        .as_str()
        .unwrap()
        .contains("no longer have permission"));
    assert_eq!(b.recv().await.event, "phx_close");
}

#[tokio::test]
async fn a_slow_reader_is_told_and_disconnected_while_others_keep_receiving() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.client_queue = 32;
    // This is about slow readers, not about the broadcast rate limits (tests/hostile.rs).
    config.broadcasts_per_second = 100_000;
    config.channel_broadcasts_per_second = 100_000;
    let gw = spawn_app(&db, config).await;
    let join = json!({"config": {"presence": {"enabled": false}}});
    let mut slow = Client::connect_small_buffer(gw.addr, &gw.anon_key, "2.0.0").await;
    slow.join_ok("realtime:flood", join.clone()).await;
    let mut fast = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    fast.join_ok("realtime:flood", join.clone()).await;
    let mut sender = Client::connect(gw.addr, &gw.anon_key, "1.0.0").await;
    sender.join_ok("realtime:flood", join).await;
    // `slow` stops reading now. 200 broadcasts of 64 KiB, paced by what `fast` takes in.
    let blob = "x".repeat(64 * 1024);
    let total = 200;
    for burst in 0..total / 10 {
        for i in 0..10 {
            sender
                .send(Some("1"), "realtime:flood", "broadcast",
                      json!({"type": "broadcast", "event": "blob", "payload": {"n": burst * 10 + i, "blob": blob}}))
                .await;
        }
        for i in 0..10 {
            let m = fast.recv().await;
            assert_eq!(
                m.payload["payload"]["n"],
                burst * 10 + i,
                "the fast reader misses nothing, in order"
            );
        }
    }
    // The slow reader finally reads: some broadcasts, then the reason, then the end.
    let mut received = 0;
    let goodbye = loop {
        match slow.try_recv(Duration::from_secs(15)).await {
            Some(m) if m.event == "broadcast" => received += 1,
            Some(m) => break Some(m),
            None => break None,
        }
    };
    let goodbye = goodbye.expect("the slow reader is told why before being disconnected");
    assert_eq!(goodbye.event, "system");
    assert_eq!(goodbye.payload["status"], "error");
    assert!(
        goodbye.payload["message"]
            .as_str()
            .unwrap()
            .contains("too slow"),
        "{goodbye:?}"
    );
    assert!(
        received < total,
        "it could not have received everything ({received})"
    );
    assert!(
        slow.try_recv(Duration::from_secs(5)).await.is_none(),
        "then the socket closes"
    );
    fast.assert_nothing_pending().await;
    assert_eq!(
        gw.app
            .realtime
            .topics
            .member_count(&ripple::realtime::topics::TopicKey {
                private: false,
                topic: "realtime:flood".into()
            }),
        2,
        "the slow reader's channel is gone"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_429_until_one_closes() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.max_sockets = 2;
    let gw = spawn_gateway_with(&db, config).await;
    let url = format!(
        "ws://{}/realtime/v1/websocket?apikey={}&vsn=1.0.0",
        gw.addr, gw.anon_key
    );
    let (first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (_second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(handshake_status(&url).await, 429);
    drop(first);
    // The slot frees once the server notices the close.
    let mut status = 0;
    for _ in 0..100 {
        status = handshake_status(&url).await;
        if status == 101 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 101);
}
