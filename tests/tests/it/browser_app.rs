//! The web chat app (`web/`) as people use it: Ripple serves the files (and refuses paths
//! that try to leave the folder), and `tests/js/browser.test.mjs` drives the app in real
//! Chromium (Debian's `chromium`, through `playwright-core`) against a real gateway and
//! PostgreSQL. Screenshots land in `<target>/tmp/browser-screenshots/` (the path is printed).

use std::path::PathBuf;

use hyper::Method;
use ripple_tests::http::request;
use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, gateway_config, spawn_gateway, spawn_gateway_with, Gateway, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHROMIUM: &str = "/usr/bin/chromium";

fn web_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web"))
}

async fn spawn_web_gateway(db: &TestDb) -> Gateway {
    let mut config = gateway_config();
    config.web = Some(web_dir());
    spawn_gateway_with(db, config).await
}

/// One request written byte for byte (no client normalises the path first); the status
/// line and the body.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (status, body.to_string())
}

#[tokio::test]
async fn the_app_is_served_with_its_content_types() {
    let db = fresh_db().await;
    let gw = spawn_web_gateway(&db).await;
    for (path, content_type, needle) in [
        ("/", "text/html", "data-testid=\"conversation-list\""),
        ("/index.html", "text/html", "data-testid=\"composer\""),
        ("/app.css", "text/css", ".conversation"),
        ("/js/main.js", "text/javascript", "signInWithPassword"),
        ("/vendor/supabase.js", "text/javascript", "createClient"),
        ("/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let r = request(gw.addr, Method::GET, path, &[], None).await;
        assert_eq!(r.status, 200, "{path}");
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with(content_type), "{path}: {ct}");
        assert!(r.text().contains(needle), "{path} lacks {needle}");
    }
    // HEAD: the headers without the body.
    let r = request(gw.addr, Method::HEAD, "/app.css", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // The anon key the page connects with is a working key of role anon: the database,
    // not the token check, is what refuses it a table anon may not read.
    let r = request(gw.addr, Method::GET, "/ripple-web.json", &[], None).await;
    assert_eq!(r.status, 200);
    let key = r.json()["anon_key"].as_str().expect("anon_key").to_string();
    let r = request(
        gw.addr,
        Method::GET,
        "/rest/v1/profiles?select=id",
        &[("apikey", key.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["code"], "42501", "{}", r.text());

    // The API keeps its paths: an unknown file is a plain 404, other methods are not files.
    let r = request(gw.addr, Method::GET, "/nope.html", &[], None).await;
    assert_eq!(r.status, 404);
    let r = request(gw.addr, Method::POST, "/index.html", &[], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "PGRST125");
    let r = request(gw.addr, Method::GET, "/health", &[], None).await;
    assert!(r.text().contains("database"), "{}", r.text());
}

#[tokio::test]
async fn paths_that_leave_the_web_folder_are_refused() {
    let db = fresh_db().await;
    let gw = spawn_web_gateway(&db).await;
    // Files one level above web/ that exist: README.md and Cargo.toml of the repository.
    let secret = std::fs::read_to_string(web_dir().join("../Cargo.toml")).expect("Cargo.toml");
    let marker = "[workspace]";
    assert!(secret.contains(marker));
    for path in [
        "/../Cargo.toml",
        "/vendor/../../Cargo.toml",
        "/./../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/Cargo.toml",
        "/vendor/%2e%2e/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "/..\\Cargo.toml",
        "//etc/passwd",
        "/.git/config",
    ] {
        let (status, body) = raw_get(gw.addr, path).await;
        assert!(
            status.contains(" 404 ") || status.contains(" 400 "),
            "{path}: {status}"
        );
        assert!(!body.contains(marker), "{path} leaked a file: {body}");
    }
    // A symlink inside the folder that points out of it is refused too.
    let dir = std::env::temp_dir().join(format!("ripple-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp web dir");
    std::fs::write(dir.join("index.html"), "<p>inside</p>").expect("index");
    let _ = std::fs::remove_file(dir.join("leak.toml"));
    std::os::unix::fs::symlink(web_dir().join("../Cargo.toml"), dir.join("leak.toml"))
        .expect("symlink");
    let mut config = gateway_config();
    config.web = Some(dir.clone());
    let linked = spawn_gateway_with(&db, config).await;
    let (status, body) = raw_get(linked.addr, "/").await;
    assert!(
        status.contains(" 200 ") && body.contains("inside"),
        "{status}"
    );
    let (status, body) = raw_get(linked.addr, "/leak.toml").await;
    assert!(status.contains(" 404 "), "symlink out: {status}");
    assert!(!body.contains(marker));
    drop(linked);
    std::fs::remove_dir_all(&dir).expect("clean up");

    // Without --web nothing is served from disk.
    let plain = spawn_gateway(&db).await;
    let r = request(plain.addr, Method::GET, "/", &[], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "PGRST125");
    let r = request(plain.addr, Method::GET, "/ripple-web.json", &[], None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_real_browsers_and_a_third_sees_nothing() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `apt-get install chromium` (tests/run does it as root)"
    );
    let db = fresh_db().await;
    let gw = spawn_web_gateway(&db).await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    println!("browser screenshots: {}", shots.display());
    // TEMPORARY until sign-up lands (issue 11): people sign in with minted tokens.
    let mut tokens = serde_json::Map::new();
    for name in ["Alice", "Bob", "Carol"] {
        let id = db.create_user(name).await;
        tokens.insert(
            name.into(),
            serde_json::json!({ "id": id, "token": gw.token_for(id, 3600) }),
        );
    }
    let env = [
        (
            "RIPPLE_TEST_TOKENS",
            serde_json::Value::Object(tokens).to_string(),
        ),
        ("RIPPLE_URL", gw.url.clone()),
        ("SCREENSHOT_DIR", shots.display().to_string()),
        ("CHROMIUM", CHROMIUM.to_string()),
    ];
    run_node_tests("browser.test.mjs", &env, 11).await;
}
