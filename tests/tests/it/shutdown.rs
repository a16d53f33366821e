//! Graceful shutdown: when the server is told to stop, a request in flight is still
//! answered, an open socket is closed with "going away" (1001), no new connection is
//! taken, and the whole stop takes no longer than the grace period even when a request
//! would take longer.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper::Method;
use ripple_tests::http::request;
use ripple_tests::{fresh_db, gateway_config, TestDb};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A gateway run by the test itself, so it can wait for `run` to return.
struct Running {
    addr: std::net::SocketAddr,
    anon_key: String,
    user_token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(db: &TestDb, grace_secs: u64) -> Running {
    let mut config = gateway_config();
    config.slot = db.name.clone();
    config.shutdown_grace_secs = grace_secs;
    let verifier = ripple::auth::JwtVerifier::new(&config.jwt_config().unwrap()).expect("verifier");
    let user = db.create_user("Sam").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let url = db.url.clone();
    let done = tokio::spawn(async move {
        ripple::server::run(listener, config, &url, async {
            let _ = stopped.await;
        })
        .await
        .expect("gateway ran");
    });
    Running {
        addr,
        anon_key: verifier.mint_for("anon", None, 3600).unwrap(),
        user_token: verifier
            .mint_for("authenticated", Some(&user.to_string()), 3600)
            .unwrap(),
        stop,
        done,
    }
}

/// `slow_answer()` sleeps `seconds` and answers 42.
async fn slow_function(db: &TestDb) {
    db.client
        .batch_execute(
            "create function public.slow_answer(seconds float8) returns int language sql as \
             $$ select pg_sleep(seconds); select 42 $$; \
             grant execute on function public.slow_answer(float8) to authenticated;",
        )
        .await
        .unwrap();
}

fn slow_call(gw: &Running, seconds: f64) -> tokio::task::JoinHandle<ripple_tests::http::Resp> {
    let (addr, apikey, auth) = (
        gw.addr,
        gw.anon_key.clone(),
        format!("Bearer {}", gw.user_token),
    );
    tokio::spawn(async move {
        request(
            addr,
            Method::POST,
            "/rest/v1/rpc/slow_answer",
            &[
                ("apikey", apikey.as_str()),
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            Some(format!(r#"{{"seconds":{seconds}}}"#).into_bytes()),
        )
        .await
    })
}

#[tokio::test]
async fn a_request_in_flight_is_answered_and_sockets_are_told_the_server_is_going_away() {
    let db = fresh_db().await;
    slow_function(&db).await;
    let gw = start(&db, 10).await;
    // Up before anything is asked of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(gw.addr, Method::GET, "/health", &[], None)
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/realtime/v1/websocket?apikey={}&vsn=1.0.0",
        gw.addr, gw.anon_key
    ))
    .await
    .expect("socket");
    let call = slow_call(&gw, 1.5);
    tokio::time::sleep(Duration::from_millis(400)).await;

    let asked = Instant::now();
    gw.stop.send(()).unwrap();
    // The socket is closed by the server, saying why.
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame in time")
    .expect("a close code");
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    // The request that was running is answered in full.
    let r = call.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "42");
    // And only then does the server stop; it takes nothing new meanwhile or after.
    tokio::time::timeout(Duration::from_secs(10), gw.done)
        .await
        .expect("the gateway stopped")
        .unwrap();
    assert!(asked.elapsed() >= Duration::from_millis(900));
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
}

#[tokio::test]
async fn a_request_longer_than_the_grace_period_does_not_hold_the_shutdown() {
    let db = fresh_db().await;
    slow_function(&db).await;
    let gw = start(&db, 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(gw.addr, Method::GET, "/health", &[], None)
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _call = slow_call(&gw, 6.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    gw.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), gw.done)
        .await
        .expect("the gateway stopped within its grace period")
        .unwrap();
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}
