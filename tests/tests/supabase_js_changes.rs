//! postgres_changes end to end with the real `@supabase/supabase-js`: runs
//! `tests/js/changes.test.mjs` against a real Ripple (replication -> RLS -> socket) and
//! PostgreSQL, failing with node's output when it fails.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ripple_tests::{fresh_db, spawn_gateway, JWT_SECRET};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_receives_exactly_the_changes_rls_allows() {
    assert!(
        js_dir().join("node_modules/@supabase/supabase-js").exists(),
        "run `npm ci --prefix tests/js` first (tests/run does)"
    );
    let db = fresh_db().await;
    let gw = spawn_gateway(&db).await;
    let a = db.create_user("Alice").await;
    let b = db.create_user("Bob").await;
    let c = db.create_user("Carol").await;
    let d = db.create_user("Dan").await;
    let conversation = support::conversation(&db, &[a, b]).await;
    let other = support::conversation(&db, &[c, d]).await;
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "changes.test.mjs"])
        .current_dir(js_dir())
        .env("RIPPLE_URL", &gw.url)
        .env("RIPPLE_ANON_KEY", &gw.anon_key)
        .env("RIPPLE_JWT_SECRET", JWT_SECRET)
        .env("TOKEN_A", gw.token_for(a, 3600))
        .env("TOKEN_B", gw.token_for(b, 3600))
        .env("TOKEN_C", gw.token_for(c, 3600))
        .env("USER_B", b.to_string())
        .env("CONVERSATION_ID", conversation.to_string())
        .env("OTHER_CONVERSATION_ID", other.to_string())
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
