// PostgREST/Supabase parity through the real @supabase/supabase-js, pointed at Ripple.
// Run by tests/tests/supabase_js_rest_parity.rs, which makes a fresh database, three users
// and a gateway, and passes them in the environment:
//   RIPPLE_URL, RIPPLE_ANON_KEY, RIPPLE_DATABASE_URL (superuser, for test setup and for
//   checking what was really committed), ALICE_ID/ALICE_TOKEN, BOB_ID/BOB_TOKEN,
//   EVE_ID/EVE_TOKEN (Eve is in no conversation).
// Every feature has its negative case: the wrong user sees and can do nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import pg from 'pg';
// Node 20 has no global WebSocket; supabase-js builds its realtime client eagerly.
import ws from 'ws';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through cargo test --test supabase_js_rest_parity`);
  return v;
};

const url = env('RIPPLE_URL');
const anonKey = env('RIPPLE_ANON_KEY');
const ids = { alice: env('ALICE_ID'), bob: env('BOB_ID'), eve: env('EVE_ID') };
const tokens = { alice: env('ALICE_TOKEN'), bob: env('BOB_TOKEN'), eve: env('EVE_TOKEN') };

const client = (token) =>
  createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: ws, params: { apikey: anonKey } },
    global: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
  });

const alice = client(tokens.alice);
const bob = client(tokens.bob);
const eve = client(tokens.eve);

// Raw HTTP, for what supabase-js does not show (response headers).
const rest = (path, { token, method = 'GET', headers = {}, body } = {}) =>
  fetch(`${url}/rest/v1/${path}`, {
    method,
    headers: {
      apikey: anonKey,
      Authorization: `Bearer ${token}`,
      'Content-Type': 'application/json',
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

let db;
let conv;
before(async () => {
  db = new pg.Client({ connectionString: env('RIPPLE_DATABASE_URL') });
  await db.connect();
  conv = ok(
    await alice.rpc('start_direct_conversation', { other_user_id: ids.bob, initial_message: 'hello bob' }),
    'conversation',
  );
});
after(async () => {
  await db?.end();
});

const ok = ({ data, error, status }, what) => {
  assert.equal(error, null, `${what}: ${JSON.stringify(error)}`);
  assert.ok(status >= 200 && status < 300, `${what}: status ${status}`);
  return data;
};

const fails = ({ data, error, status }, wantStatus, wantCode, what) => {
  assert.ok(error, `${what}: expected an error, got ${JSON.stringify(data)}`);
  assert.equal(status, wantStatus, `${what}: ${JSON.stringify(error)}`);
  assert.equal(error.code, wantCode, `${what}: ${JSON.stringify(error)}`);
  return error;
};

const messageCount = async () =>
  Number((await db.query('select count(*) from public.messages where conversation_id = $1', [conv])).rows[0].count);

test('tx=rollback answers as if written and leaves the database unchanged', async () => {
  const before = await messageCount();
  const row = ok(
    await alice
      .from('messages')
      .insert({ conversation_id: conv, sender_id: ids.alice, body: 'never committed' })
      .select('id, body')
      .single()
      .rollback(),
    'insert with rollback',
  );
  assert.equal(row.body, 'never committed');
  assert.equal(await messageCount(), before, 'the insert was rolled back');
  const gone = await db.query('select 1 from public.messages where id = $1', [row.id]);
  assert.equal(gone.rowCount, 0);

  // An RPC that writes is rolled back too.
  const m = ok(
    await alice.rpc('send_message', { conversation_id: conv, body: 'rpc never committed' }).rollback(),
    'rpc with rollback',
  );
  assert.equal(m.body, 'rpc never committed');
  assert.equal(await messageCount(), before);

  // The header says what was applied, as PostgREST's does.
  const r = await rest(`messages?id=eq.${row.id}`, {
    token: tokens.alice,
    method: 'PATCH',
    headers: { Prefer: 'tx=rollback, return=representation, handling=strict' },
    body: { body: 'edited' },
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('preference-applied'), 'return=representation, tx=rollback, handling=strict');

  // Without the preference the write commits (the control for the checks above).
  ok(await alice.from('messages').insert({ conversation_id: conv, sender_id: ids.alice, body: 'committed' }), 'insert');
  assert.equal(await messageCount(), before + 1);

  // Negative: an unknown preference with handling=strict is a 400 and writes nothing;
  // with handling=lenient it is ignored.
  const strict = await rest('messages', {
    token: tokens.alice,
    method: 'POST',
    headers: { Prefer: 'handling=strict, tx=sometimes' },
    body: { conversation_id: conv, sender_id: ids.alice, body: 'strict' },
  });
  assert.equal(strict.status, 400);
  const err = await strict.json();
  assert.equal(err.code, 'PGRST122');
  assert.equal(err.details, 'Invalid preferences: tx=sometimes');
  assert.equal(await messageCount(), before + 1);
  const lenient = await rest('messages', {
    token: tokens.alice,
    method: 'POST',
    headers: { Prefer: 'handling=lenient, tx=sometimes' },
    body: { conversation_id: conv, sender_id: ids.alice, body: 'lenient' },
  });
  assert.equal(lenient.status, 201);
  assert.equal(lenient.headers.get('preference-applied'), 'handling=lenient');
  assert.equal(await messageCount(), before + 2);
});
