//! Runs `tests/js/realtime.test.mjs` (node's test runner, the real `@supabase/supabase-js`
//! from npm) against a real Ripple and PostgreSQL, and fails with node's output when it
//! fails.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ripple_tests::{fresh_db, spawn_gateway};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Installs the locked npm dependencies once, when they are not there yet.
async fn ensure_node_modules() {
    let dir = js_dir();
    if dir.join("node_modules/@supabase/supabase-js").exists()
        && dir.join("node_modules/ws").exists()
    {
        return;
    }
    let out = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .await
        .expect("npm is required for the supabase-js tests");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_realtime_typing_on_a_private_channel_and_presence() {
    ensure_node_modules().await;
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let conversation = support::conversation(&db, &[a, b]).await;
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "realtime.test.mjs"])
        .current_dir(js_dir())
        .env("RIPPLE_URL", &gw.url)
        .env("RIPPLE_ANON_KEY", &gw.anon_key)
        .env("TOKEN_A", gw.token_for(a, 3600))
        .env("TOKEN_B", gw.token_for(b, 3600))
        .env("TOKEN_C", gw.token_for(c, 3600))
        .env("CONVERSATION_ID", conversation.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("node tests finished within 2 minutes")
        .expect("node is required for the supabase-js tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("pass 3"),
        "all node tests ran and passed:\n{stdout}"
    );
}
