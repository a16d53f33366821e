//! The chat flow through the real `@supabase/supabase-js` from npm: a fresh database, three
//! users and a gateway here; the client side in `tests/js/rest.test.mjs`, run with node's
//! own test runner. Fails if node's tests fail, and prints their output.

use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, spawn_gateway};

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_flow_works_through_supabase_js() {
    let db = fresh_db().await;
    let alice = db.create_user("Alice").await;
    let bob = db.create_user("Bob").await;
    let eve = db.create_user("Eve").await;
    let gw = spawn_gateway(&db).await;
    let env = [
        ("RIPPLE_URL", gw.url.clone()),
        ("RIPPLE_ANON_KEY", gw.anon_key.clone()),
        ("RIPPLE_DATABASE_URL", db.url.clone()),
        ("ALICE_ID", alice.to_string()),
        ("ALICE_TOKEN", gw.token_for(alice, 600)),
        ("BOB_ID", bob.to_string()),
        ("BOB_TOKEN", gw.token_for(bob, 600)),
        ("EVE_ID", eve.to_string()),
        ("EVE_TOKEN", gw.token_for(eve, 600)),
    ];
    run_node_tests("rest.test.mjs", &env, 9).await;
}
