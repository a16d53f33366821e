//! The chat flow through the real `@supabase/supabase-js` from npm: a fresh database, three
//! users and a gateway here; the client side in `tests/js/rest.test.mjs`, run with node's
//! own test runner. Fails if node's tests fail, and prints their output.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ripple_tests::{fresh_db, spawn_gateway};

/// node's tests do a few dozen requests; this only guards against a hang.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_flow_works_through_supabase_js() {
    let dir = js_dir();
    assert!(
        dir.join("node_modules/@supabase/supabase-js").is_dir()
            && dir.join("node_modules/pg").is_dir()
            && dir.join("node_modules/ws").is_dir(),
        "the npm packages of tests/js are not installed: run `npm ci --prefix tests/js` \
         (tests/run does it for you)"
    );

    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let eve = db.create_user("Eve").await;
    let gw = spawn_gateway(&db).await;

    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&dir)
        .args(["--test", "--test-reporter=spec", "rest.test.mjs"])
        .env("RIPPLE_URL", &gw.url)
        .env("RIPPLE_ANON_KEY", &gw.anon_key)
        .env("RIPPLE_DATABASE_URL", &db.url)
        .env("ALICE_ID", alice.to_string())
        .env("ALICE_TOKEN", gw.token_for(alice, 600))
        .env("BOB_ID", bob.to_string())
        .env("BOB_TOKEN", gw.token_for(bob, 600))
        .env("EVE_ID", eve.to_string())
        .env("EVE_TOKEN", gw.token_for(eve, 600))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("could not run node (node 20 or newer is needed): {e}"),
    };
    let output = tokio::time::timeout(NODE_TIMEOUT, child.wait_with_output())
        .await
        .expect("node's tests did not finish in time")
        .expect("node's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "node --test rest.test.mjs failed ({}): see its output above",
        output.status
    );
    // A run that skipped or cancelled its tests would also exit 0.
    assert!(summary(&stdout, "pass") > 0, "node ran no test");
    for none in ["fail", "cancelled", "skipped", "todo"] {
        assert_eq!(summary(&stdout, none), 0, "node reported {none} tests");
    }
}

/// A count from the spec reporter's closing lines (`ℹ pass 9`).
fn summary(out: &str, what: &str) -> u32 {
    out.lines()
        .filter_map(|l| l.trim_start_matches(['ℹ', '#', ' ']).strip_prefix(what))
        .filter_map(|rest| rest.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("node printed no `{what}` count"))
}
