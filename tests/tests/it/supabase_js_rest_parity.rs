//! PostgREST/Supabase parity through the real `@supabase/supabase-js` from npm: a fresh
//! database, three users and a gateway here; the client side in
//! `tests/js/rest_parity.test.mjs` (tx=rollback, strict preferences, embedding, logic
//! trees and operators, PUT, OpenAPI, broadcast from the database), each with its
//! negative case. Fails if node's tests fail, and prints their output.

use ripple_tests::node::run_node_tests;
use ripple_tests::{fresh_db, spawn_gateway};

#[tokio::test(flavor = "multi_thread")]
async fn frontends_get_postgrest_and_supabase_parity_through_supabase_js() {
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
    run_node_tests("rest_parity.test.mjs", &env, TESTS).await;
}

/// The number of `test(...)` in the JS file, so a test that silently vanished fails here.
const TESTS: u32 = 7;
