//! A socket's loop never waits for the database in a way that stops it: while a join waits
//! for a pooled connection, the socket still writes its queue and answers heartbeats, and
//! the frames sent meanwhile are handled afterwards, in order.

use crate::support;

use std::time::Duration;

use ripple_tests::{fresh_db, gateway_config};
use serde_json::json;
use support::{changes_payload, spawn_app, Client};

#[tokio::test]
async fn a_join_waiting_for_a_connection_does_not_stop_the_queue_or_heartbeats() {
    let db = fresh_db().await;
    let mut config = gateway_config();
    config.pool_size = 1;
    let gw = spawn_app(&db, config).await;
    let alice = db.create_user("Alice").await;
    let mut client = Client::connect(gw.addr, &gw.anon_key, "2.0.0").await;
    // A public broadcast channel, joined while the pool is free.
    client
        .join_ok(
            "realtime:room",
            json!({"config": {"broadcast": {"self": false, "ack": false},
                              "presence": {"key": "", "enabled": false},
                              "postgres_changes": [], "private": false}}),
        )
        .await;

    // Every connection of the pool is taken: a join that checks its bindings in the
    // catalog must wait.
    let held = gw.app.pool.get().await.unwrap();
    let spec = json!([{"event": "INSERT", "schema": "public", "table": "messages"}]);
    let join_ref = client
        .send(
            Some("j2"),
            "realtime:db",
            "phx_join",
            changes_payload(&gw.token_for(alice, 600), spec),
        )
        .await;
    let leave_ref = client
        .send(Some("j1"), "realtime:room", "phx_leave", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The socket is alive: a heartbeat is answered...
    let beat = client.send(None, "phoenix", "heartbeat", json!({})).await;
    let m = client
        .try_recv(Duration::from_secs(3))
        .await
        .expect("a heartbeat reply while the join waits");
    assert_eq!(
        (m.event.as_str(), m.r#ref.as_deref()),
        ("phx_reply", Some(beat.as_str())),
        "the heartbeat reply comes first: {m:?}"
    );
    // ...and what is queued for it is written (a broadcast from the database).
    let queued = ripple::realtime::db_broadcast::broadcast(
        &gw.app.realtime,
        "room",
        "ping",
        &json!({"n": 1}),
        false,
    );
    assert_eq!(queued, 1);
    let m = client
        .try_recv(Duration::from_secs(3))
        .await
        .expect("a queued broadcast while the join waits");
    assert_eq!(m.event, "broadcast");
    assert_eq!(m.payload["payload"]["n"], 1);
    // Neither the join nor the leave sent after it is answered while the pool is held.
    assert!(
        client.try_recv(Duration::from_millis(300)).await.is_none(),
        "nothing else before the connection is free"
    );

    drop(held);
    let m = client.reply_to(&join_ref).await;
    assert_eq!(m.payload["status"], "ok", "{m:?}");
    // The leave was read while the join waited, and handled after it.
    let m = client.reply_to(&leave_ref).await;
    assert_eq!(m.payload["status"], "ok", "{m:?}");
    // The room is left: a broadcast to it reaches no one.
    assert_eq!(
        ripple::realtime::db_broadcast::broadcast(
            &gw.app.realtime,
            "room",
            "ping",
            &json!({"n": 2}),
            false
        ),
        0
    );
}
