// The chat flow entirely through the real @supabase/supabase-js, pointed at Ripple.
// Run by tests/tests/it/supabase_js_rest.rs, which makes a fresh database, three users and a
// gateway, and passes them in the environment:
//   RIPPLE_URL, RIPPLE_ANON_KEY, RIPPLE_DATABASE_URL (superuser, for test setup only),
//   ALICE_ID/ALICE_TOKEN, BOB_ID/BOB_TOKEN, EVE_ID/EVE_TOKEN (Eve is in no conversation).
// Each step has its negative case: an outsider gets an error or nothing, never a row.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import pg from 'pg';
// Node 20 has no global WebSocket; supabase-js builds its realtime client eagerly.
import ws from 'ws';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through cargo test -p ripple-tests --test it supabase_js_rest::`);
  return v;
};

const url = env('RIPPLE_URL');
const anonKey = env('RIPPLE_ANON_KEY');
const ids = { alice: env('ALICE_ID'), bob: env('BOB_ID'), eve: env('EVE_ID') };

const client = (token) =>
  createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: ws },
    global: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
  });

const alice = client(env('ALICE_TOKEN'));
const bob = client(env('BOB_TOKEN'));
const eve = client(env('EVE_TOKEN'));
const anon = client(null);

let db;
before(async () => {
  db = new pg.Client({ connectionString: env('RIPPLE_DATABASE_URL') });
  await db.connect();
});
after(async () => {
  await db?.end();
});

// Shared by the steps, which run in order.
let conv;
const sent = [];

const ok = ({ data, error, status }, what) => {
  assert.equal(error, null, `${what}: ${JSON.stringify(error)}`);
  assert.ok(status >= 200 && status < 300, `${what}: status ${status}`);
  return data;
};

const fails = ({ data, error, status }, wantStatus, wantCode, what) => {
  assert.ok(error, `${what}: expected an error, got ${JSON.stringify(data)}`);
  assert.equal(status, wantStatus, `${what}: ${JSON.stringify(error)}`);
  assert.equal(error.code, wantCode, `${what}: ${JSON.stringify(error)}`);
  assert.equal(data, null, `${what}: no data with an error`);
  return error;
};

test('start a direct conversation, the same one from either side', async () => {
  conv = ok(
    await alice.rpc('start_direct_conversation', { other_user_id: ids.bob, initial_message: 'hi bob' }),
    'alice starts',
  );
  assert.match(conv, /^[0-9a-f-]{36}$/);
  const fromBob = ok(await bob.rpc('start_direct_conversation', { other_user_id: ids.alice }), 'bob starts');
  assert.equal(fromBob, conv);
  // Negative: talking to oneself, to nobody, or as nobody.
  fails(await alice.rpc('start_direct_conversation', { other_user_id: ids.alice }), 400, '22023', 'self');
  fails(
    await alice.rpc('start_direct_conversation', { other_user_id: '00000000-0000-4000-8000-000000000000' }),
    404,
    'P0002',
    'unknown user',
  );
  fails(await anon.rpc('start_direct_conversation', { other_user_id: ids.bob }), 401, '42501', 'anon');
});

test('send messages by rpc and by table insert', async () => {
  for (const body of ['one', 'two banana', 'three']) {
    const m = ok(await alice.rpc('send_message', { conversation_id: conv, body }), `send ${body}`);
    assert.equal(m.body, body);
    assert.equal(m.sender_id, ids.alice);
    assert.equal(m.conversation_id, conv);
    sent.push(m);
  }
  const reply = ok(
    await bob
      .from('messages')
      .insert({ conversation_id: conv, sender_id: ids.bob, body: 'four from bob', reply_to_id: sent[0].id })
      .select('id, body, reply_to_id')
      .single(),
    'insert',
  );
  assert.equal(reply.body, 'four from bob');
  assert.equal(reply.reply_to_id, sent[0].id);
  sent.push(reply);
  // A client_id makes a retry return the first message instead of a second one.
  const a = ok(await bob.rpc('send_message', { conversation_id: conv, body: 'once', client_id: 'c-1' }), 'once');
  const b = ok(await bob.rpc('send_message', { conversation_id: conv, body: 'once', client_id: 'c-1' }), 'retry');
  assert.equal(a.id, b.id);
  sent.push(a);

  // Negative: Eve cannot send into it, neither by rpc nor by insert, nor as Alice.
  fails(await eve.rpc('send_message', { conversation_id: conv, body: 'let me in' }), 403, '42501', 'eve rpc');
  fails(
    await eve.from('messages').insert({ conversation_id: conv, sender_id: ids.eve, body: 'sneak' }),
    403,
    '42501',
    'eve insert',
  );
  fails(
    await eve.from('messages').insert({ conversation_id: conv, sender_id: ids.alice, body: 'forged' }),
    403,
    '42501',
    'eve as alice',
  );
  fails(await alice.rpc('send_message', { conversation_id: conv, body: '   ' }), 400, '22023', 'empty body');
  const { rows } = await db.query(
    "select count(*)::int as n from messages where body in ('let me in', 'sneak', 'forged')",
  );
  assert.equal(rows[0].n, 0);
});

test('list conversations with unread counts, then read them', async () => {
  const list = ok(await bob.rpc('list_conversations'), 'bob lists');
  assert.equal(list.length, 1);
  assert.equal(list[0].id, conv);
  assert.equal(list[0].kind, 'direct');
  assert.equal(list[0].other_member.display_name, 'Alice');
  assert.equal(list[0].unread_count, 4, 'hi bob + three from alice');
  assert.equal(list[0].last_message_preview, 'once');
  const counts = ok(await bob.rpc('unread_counts'), 'bob counts');
  assert.deepEqual(counts, { total_unread: 4, by_conversation: [{ conversation_id: conv, unread_count: 4 }] });
  // supabase-js filters and orders a set-returning function's rows too.
  const filtered = ok(
    await bob.rpc('list_conversations').eq('kind', 'group').select('id'),
    'filtered list',
  );
  assert.deepEqual(filtered, []);

  ok(await bob.rpc('mark_conversation_read', { conversation_id: conv }), 'mark read');
  const after = ok(await bob.rpc('list_conversations', { lim: 10 }), 'after');
  assert.equal(after[0].unread_count, 0);
  assert.deepEqual(ok(await bob.rpc('unread_counts'), 'counts after'), { total_unread: 0, by_conversation: [] });

  // Negative: Eve has no conversations and cannot mark this one read.
  assert.deepEqual(ok(await eve.rpc('list_conversations'), 'eve lists'), []);
  assert.deepEqual(ok(await eve.rpc('unread_counts'), 'eve counts'), { total_unread: 0, by_conversation: [] });
  fails(await eve.rpc('mark_conversation_read', { conversation_id: conv }), 404, 'P0002', 'eve marks');
  fails(await anon.rpc('list_conversations'), 401, '42501', 'anon lists');
});

test('page history with get_messages and before_id, and with select/order/range', async () => {
  const seen = [];
  let before_id;
  for (;;) {
    const args = { conversation_id: conv, lim: 2 };
    if (before_id) args.before_id = before_id;
    const page = ok(await bob.rpc('get_messages', args), 'page');
    if (page.length === 0) break;
    assert.ok(page.length <= 2);
    seen.push(...page.map((m) => m.body));
    before_id = page[page.length - 1].id;
  }
  assert.deepEqual(seen, ['once', 'four from bob', 'three', 'two banana', 'one', 'hi bob']);

  const { data, count, error } = await bob
    .from('messages')
    .select('id, body', { count: 'exact' })
    .eq('conversation_id', conv)
    .order('created_at', { ascending: false })
    .range(1, 2);
  assert.equal(error, null);
  assert.equal(count, 6);
  assert.deepEqual(data.map((m) => m.body), ['four from bob', 'three']);
  const first = ok(
    await bob.from('messages').select('body').eq('conversation_id', conv).order('created_at').limit(1),
    'oldest',
  );
  assert.deepEqual(first, [{ body: 'hi bob' }]);

  // Negative: Eve gets 404 for the history and no rows from the table, even by id.
  fails(await eve.rpc('get_messages', { conversation_id: conv }), 404, 'P0002', 'eve history');
  assert.deepEqual(ok(await eve.from('messages').select(), 'eve messages'), []);
  assert.deepEqual(ok(await eve.from('messages').select().eq('id', sent[0].id), 'eve by id'), []);
  const none = await eve.from('messages').select('id', { count: 'exact', head: true });
  assert.equal(none.count, 0);
  assert.equal(ok(await eve.from('messages').select().eq('id', sent[0].id).maybeSingle(), 'maybe'), null);
  // A before_id from another conversation is refused, not followed.
  fails(
    await bob.rpc('get_messages', { conversation_id: conv, before_id: '00000000-0000-4000-8000-000000000000' }),
    400,
    '22023',
    'foreign before_id',
  );
});

test('edit within the window, and not after it', async () => {
  const target = sent[1];
  const edited = ok(await alice.rpc('edit_message', { message_id: target.id, body: 'two bananas' }), 'edit');
  assert.equal(edited.body, 'two bananas');
  assert.ok(edited.edited_at);

  // Negative: Bob cannot edit Alice's message (it is not his to update: not found).
  fails(await bob.rpc('edit_message', { message_id: target.id, body: 'mine now' }), 403, '42501', 'bob edits');
  const viaTable = await bob.from('messages').update({ body: 'mine now' }, { count: 'exact' }).eq('id', target.id);
  assert.equal(viaTable.error, null);
  assert.equal(viaTable.count, 0, 'the update policy leaves Bob no row');
  fails(await eve.rpc('edit_message', { message_id: target.id, body: 'eve' }), 404, 'P0002', 'eve edits');

  // Make the message older than the edit window (setup as the database owner).
  await db.query("update messages set created_at = now() - interval '1 hour' where id = $1", [target.id]);
  const late = fails(
    await alice.rpc('edit_message', { message_id: target.id, body: 'too late' }),
    400,
    'P0001',
    'after the window',
  );
  assert.match(late.message, /edit window/);
  const late2 = await alice.from('messages').update({ body: 'too late' }).eq('id', target.id);
  assert.equal(late2.status, 400);
  assert.equal(late2.error.code, 'P0001');
  const { rows } = await db.query('select body from messages where id = $1', [target.id]);
  assert.equal(rows[0].body, 'two bananas');
});

test('delete: only the sender, and a deleted message stays deleted', async () => {
  const target = sent[2];
  // Negative first: Bob and Eve cannot delete Alice's message.
  fails(await bob.rpc('delete_message', { message_id: target.id }), 403, '42501', 'bob deletes');
  fails(await eve.rpc('delete_message', { message_id: target.id }), 404, 'P0002', 'eve deletes');
  const r = await alice.rpc('delete_message', { message_id: target.id });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.status, 204);
  assert.equal(r.data, null);
  const page = ok(await bob.rpc('get_messages', { conversation_id: conv, lim: 50 }), 'history');
  const gone = page.find((m) => m.id === target.id);
  assert.ok(gone.deleted_at);
  assert.equal(gone.body, null);
  fails(await alice.rpc('edit_message', { message_id: target.id, body: 'back' }), 400, 'P0001', 'edit deleted');
  fails(await bob.rpc('react', { message_id: target.id, emoji: '👍' }), 400, 'P0001', 'react to deleted');
});

test('react, see the counts, and unreact', async () => {
  const target = sent[0];
  const r = await bob.rpc('react', { message_id: target.id, emoji: '👍' });
  assert.equal(r.error, null, JSON.stringify(r.error));
  assert.equal(r.status, 204);
  ok(await alice.rpc('react', { message_id: target.id, emoji: '👍' }), 'alice reacts');
  ok(await bob.rpc('react', { message_id: target.id, emoji: '👍' }), 'idempotent');
  const history = ok(await alice.rpc('get_messages', { conversation_id: conv, lim: 50 }), 'history');
  const m = history.find((x) => x.id === target.id);
  assert.deepEqual(m.reactions, [{ emoji: '👍', count: 2, mine: true }]);
  const rows = ok(
    await alice.from('message_reactions').select('user_id, emoji').eq('message_id', target.id).order('user_id'),
    'reactions table',
  );
  assert.deepEqual(rows.map((x) => x.emoji), ['👍', '👍']);

  // Negative: Eve cannot react, see reactions, or remove someone else's.
  fails(await eve.rpc('react', { message_id: target.id, emoji: '👎' }), 404, 'P0002', 'eve reacts');
  assert.deepEqual(ok(await eve.from('message_reactions').select(), 'eve reactions'), []);
  const del = await eve.from('message_reactions').delete({ count: 'exact' }).eq('message_id', target.id);
  assert.equal(del.error, null);
  assert.equal(del.count, 0);
  fails(await bob.rpc('react', { message_id: target.id, emoji: '' }), 400, '22023', 'empty emoji');

  ok(await bob.rpc('unreact', { message_id: target.id, emoji: '👍' }), 'unreact');
  const { rows: left } = await db.query('select user_id from message_reactions where message_id = $1', [target.id]);
  assert.deepEqual(left.map((x) => x.user_id), [ids.alice]);
});

test('search finds only what the caller may read', async () => {
  const hits = ok(await bob.rpc('search_messages', { query: 'banana' }), 'bob searches');
  assert.deepEqual(hits.map((h) => h.body), ['two bananas']);
  assert.match(hits[0].headline, /<b>bananas<\/b>/);
  // By GET too: search is stable, and supabase-js can send it as a query string.
  const viaGet = ok(await bob.rpc('search_messages', { query: 'banana', lim: 5 }, { get: true }), 'get');
  assert.deepEqual(viaGet.map((h) => h.id), hits.map((h) => h.id));
  // Deleted messages are not found.
  assert.deepEqual(ok(await bob.rpc('search_messages', { query: 'three' }), 'deleted'), []);

  // Negative: Eve finds nothing, anon may not search.
  assert.deepEqual(ok(await eve.rpc('search_messages', { query: 'banana' }), 'eve searches'), []);
  fails(await anon.rpc('search_messages', { query: 'banana' }), 401, '42501', 'anon searches');
});

test('tables: profiles and conversations under their grants', async () => {
  const me = ok(await alice.from('profiles').select('id, display_name').eq('id', ids.alice).single(), 'me');
  assert.deepEqual(me, { id: ids.alice, display_name: 'Alice' });
  ok(await alice.from('profiles').update({ display_name: 'Alice A.' }).eq('id', ids.alice), 'rename');
  // Negative: renaming someone else changes nothing; anon reads no profiles.
  const other = await alice.from('profiles').update({ display_name: 'Bobby' }, { count: 'exact' }).eq('id', ids.bob);
  assert.equal(other.count, 0);
  const { rows } = await db.query('select display_name from profiles where id = $1', [ids.bob]);
  assert.equal(rows[0].display_name, 'Bob');
  fails(await anon.from('profiles').select(), 401, '42501', 'anon profiles');

  // `*` is what the role may read: no direct_key; asking for it is refused.
  const convs = ok(await alice.from('conversations').select(), 'conversations');
  assert.equal(convs.length, 1);
  assert.equal(convs[0].id, conv);
  assert.ok(!('direct_key' in convs[0]));
  fails(await alice.from('conversations').select('direct_key'), 403, '42501', 'direct_key');
  assert.deepEqual(ok(await eve.from('conversations').select(), 'eve conversations'), []);
  assert.deepEqual(ok(await eve.from('conversation_members').select(), 'eve members'), []);
  // A table that does not exist, and one that is not exposed.
  fails(await alice.from('nope').select(), 404, 'PGRST205', 'missing table');
  fails(await alice.from('settings').select(), 404, 'PGRST205', 'private table');
  fails(await alice.schema('private').from('settings').select(), 406, 'PGRST106', 'private schema');
});
