//! Hostile clients hurt no one: each test plays one attack an outsider (or a member turned
//! hostile) can mount with real sockets against a real gateway and database, and checks
//! that the server, and everyone else on it, is unaffected.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ripple_tests::{fresh_db, JWT_SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `ripple serve` as its own process, with an open-files limit (soft and hard) of `nofile`,
/// so that exhausting descriptors cannot take the test process with it.
fn serve_with_fd_limit(db: &ripple_tests::TestDb, port: u16, nofile: u32) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(ripple_tests::ripple_bin())
        .args([
            "serve",
            "--database-url",
            &db.url,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--slot",
            &db.name,
        ])
        .env("RIPPLE_JWT_SECRET", JWT_SECRET)
        .env("RIPPLE_HEADER_READ_TIMEOUT_SECS", "2")
        .env("RIPPLE_LOG", "ripple=error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ripple serve")
}

async fn health_status(addr: std::net::SocketAddr) -> Option<u16> {
    let attempt = async {
        let mut conn = ripple_tests::http::Conn::connect(addr).await.ok()?;
        conn.send(hyper::Method::GET, "/health", &[], None)
            .await
            .ok()
            .map(|r| r.status)
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

async fn wait_healthy(addr: std::net::SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if health_status(addr).await == Some(200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
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
        wait_healthy(addr, Duration::from_secs(30)).await,
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
        child.try_wait().expect("poll child").is_none(),
        "ripple serve exited under 1,000 stalled connections"
    );
    // The stalled connections are held open by the attacker, yet a normal request gets an
    // answer once the head timeout (2 s) has cut them.
    assert!(
        wait_healthy(addr, Duration::from_secs(15)).await,
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
    assert!(
        child.try_wait().expect("poll child").is_none(),
        "still running"
    );
    assert!(wait_healthy(addr, Duration::from_secs(5)).await);
    child.kill().expect("stop ripple serve");
    let _ = child.wait();
}
