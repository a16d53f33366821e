// PostgREST/Supabase parity through the real @supabase/supabase-js, pointed at Ripple.
// Run by tests/tests/it/supabase_js_rest_parity.rs, which makes a fresh database, three users
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
  if (!v) throw new Error(`${name} is not set: run this through cargo test -p ripple-tests --test it supabase_js_rest_parity::`);
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

test('embedding: messages with their senders, reactions and reactors, in one request', async () => {
  const m = ok(await bob.rpc('send_message', { conversation_id: conv, body: 'embed me' }), 'send');
  ok(await alice.from('message_reactions').insert({ message_id: m.id, conversation_id: conv, user_id: ids.alice, emoji: '👍' }), 'react a');
  ok(await bob.from('message_reactions').insert({ message_id: m.id, conversation_id: conv, user_id: ids.bob, emoji: '🎉' }), 'react b');
  await db.query("update public.profiles set avatar_url = 'https://x/b.png' where id = $1", [ids.bob]);

  // To-one with an alias, to-many, nested, ordered and limited inside.
  const rows = ok(
    await alice
      .from('messages')
      .select('id, body, sender:profiles(display_name, avatar_url), message_reactions(emoji, reactor:profiles(display_name))')
      .eq('id', m.id)
      .order('emoji', { referencedTable: 'message_reactions', ascending: false })
      .limit(1, { referencedTable: 'message_reactions' }),
    'embed',
  );
  assert.equal(rows.length, 1);
  assert.equal(rows[0].body, 'embed me');
  assert.deepEqual(rows[0].sender, { display_name: 'Bob', avatar_url: 'https://x/b.png' });
  assert.equal(rows[0].message_reactions.length, 1, 'embedded limit');
  // 🎉 (U+1F389) sorts before 👍 (U+1F44D): descending puts 👍 first.
  assert.equal(rows[0].message_reactions[0].emoji, '👍');
  assert.deepEqual(rows[0].message_reactions, [{ emoji: '👍', reactor: { display_name: 'Alice' } }]);

  // A hint names the foreign key; a filter on the embedded resource with !inner keeps only
  // messages whose sender matches; without !inner the parent stays and the embed is null.
  const fromBob = ok(
    await alice
      .from('messages')
      .select('id, sender:profiles!messages_sender_id_fkey!inner(display_name)')
      .eq('conversation_id', conv)
      .eq('sender.display_name', 'Bob'),
    'inner',
  );
  assert.ok(fromBob.length >= 1);
  assert.ok(fromBob.every((r) => r.sender.display_name === 'Bob'));
  const all = ok(
    await alice.from('messages').select('id, sender:profiles(display_name)').eq('conversation_id', conv).eq('sender.display_name', 'Bob'),
    'left',
  );
  assert.ok(all.length > fromBob.length);
  assert.ok(all.some((r) => r.sender === null));

  // Embedding through writes: the inserted row comes back with its sender.
  const ins = ok(
    await alice
      .from('messages')
      .insert({ conversation_id: conv, sender_id: ids.alice, body: 'with sender' })
      .select('id, sender:profiles(display_name)')
      .single(),
    'insert embed',
  );
  assert.deepEqual(ins.sender, { display_name: 'Alice' });

  // Errors in PostgREST's words: no relationship, several without a hint.
  fails(await alice.from('messages').select('*, conversation_bans(*)'), 400, 'PGRST200', 'no fk');
  fails(await alice.from('messages').select('*, messages(*)'), 300, 'PGRST201', 'ambiguous');

  // Negative: RLS applies to every embedded table. Eve reads Bob's profile, but his
  // messages (in a conversation she is not in) embed as nothing.
  const bobSeenByEve = ok(
    await eve.from('profiles').select('display_name, messages(id, body)').eq('id', ids.bob),
    'eve embed',
  );
  assert.deepEqual(bobSeenByEve, [{ display_name: 'Bob', messages: [] }]);
  const bobSeenByAlice = ok(
    await alice.from('profiles').select('display_name, messages(id, body)').eq('id', ids.bob),
    'alice embed',
  );
  assert.ok(bobSeenByAlice[0].messages.some((x) => x.body === 'embed me'));
  // With !inner, a parent whose embedded rows are all hidden is left out entirely.
  assert.deepEqual(
    ok(await eve.from('profiles').select('display_name, messages!inner(id)').eq('id', ids.bob), 'eve inner'),
    [],
  );
  // And Eve cannot reach the reactions through any path.
  const r = ok(await eve.from('profiles').select('id, message_reactions(emoji)').in('id', [ids.alice, ids.bob]), 'eve reactions');
  assert.equal(r.length, 2);
  assert.ok(r.every((p) => p.message_reactions.length === 0));
});

test('logic trees, full-text search, containment, JSON paths and casts', async () => {
  const bodies = ['the quick brown fox', 'lazy dogs sleep', 'quick thinking'];
  for (const body of bodies) ok(await alice.rpc('send_message', { conversation_id: conv, body }), body);

  const q = () => alice.from('messages').select('body').eq('conversation_id', conv);
  // or= with a nested and(): quick ones that are not about thinking, or the dogs.
  const tree = ok(
    await q().or('and(body.ilike.*quick*,body.not.like.*thinking*),body.eq.lazy dogs sleep').order('body'),
    'or/and',
  );
  assert.deepEqual(tree.map((r) => r.body), ['lazy dogs sleep', 'the quick brown fox']);
  // not.or
  const notOr = ok(await q().not('body', 'in', '("lazy dogs sleep")').like('body', '%quick%').order('body'), 'not');
  assert.deepEqual(notOr.map((r) => r.body), ['quick thinking', 'the quick brown fox']);

  // textSearch in each of its forms.
  const ts = async (query, opts) => ok(await q().textSearch('body', query, opts).order('body'), `fts ${query}`);
  assert.deepEqual((await ts("'quick' & 'fox'", { config: 'english' })).map((r) => r.body), ['the quick brown fox']);
  assert.deepEqual((await ts('dogs sleeping', { type: 'plain', config: 'english' })).map((r) => r.body), ['lazy dogs sleep']);
  assert.deepEqual((await ts('quick brown', { type: 'phrase', config: 'english' })).map((r) => r.body), ['the quick brown fox']);
  assert.deepEqual(
    (await ts('quick -fox', { type: 'websearch', config: 'english' })).map((r) => r.body),
    ['quick thinking'],
  );
  // match / imatch
  assert.deepEqual(ok(await q().filter('body', 'imatch', '^THE'), 'imatch').map((r) => r.body), ['the quick brown fox']);

  // cs / cd / ov on arrays, ranges and jsonb, and JSON paths: on a table made for this
  // test, with a policy that hides one row.
  await db.query(`
    create table public.parity_items (id int primary key, tags text[], data jsonb, span int4range);
    alter table public.parity_items enable row level security;
    create policy parity_read on public.parity_items for select to authenticated using (id < 100);
    grant select on public.parity_items to authenticated;
    insert into public.parity_items values
      (1, '{a,b}', '{"name":"one","n":1,"tags":["x"]}', '[1,5)'),
      (2, '{b,c}', '{"name":"two","n":2,"tags":["x","y"]}', '[10,20)'),
      (100, '{a,b,c}', '{"name":"hidden","n":100}', '[1,100)');
  `);
  // The catalog reloads on a miss (at most once a second).
  await new Promise((r) => setTimeout(r, 1100));
  const items = () => alice.from('parity_items').select('id').order('id');
  const ids_ = (res, what) => ok(res, what).map((r) => r.id);
  assert.deepEqual(ids_(await items().contains('tags', ['a']), 'cs'), [1]);
  assert.deepEqual(ids_(await items().containedBy('tags', ['a', 'b', 'c']), 'cd'), [1, 2]);
  assert.deepEqual(ids_(await items().overlaps('tags', ['c', 'z']), 'ov'), [2]);
  assert.deepEqual(ids_(await items().overlaps('span', '[3,4)'), 'ov range'), [1]);
  assert.deepEqual(ids_(await items().contains('data', { tags: ['y'] }), 'cs jsonb'), [2]);
  assert.deepEqual(ids_(await items().eq('data->>name', 'two'), '->>'), [2]);
  assert.deepEqual(ids_(await items().eq('data->n', 1), '->'), [1]);
  assert.deepEqual(ids_(await items().filter('id', 'isdistinct', 1), 'isdistinct'), [2]);
  assert.deepEqual(ids_(await items().is('data->>missing', null), 'is'), [1, 2]);
  const shaped = ok(
    await alice.from('parity_items').select('id::text, name:data->>name, first_tag:data->tags->0').order('id'),
    'json select',
  );
  assert.deepEqual(shaped, [
    { id: '1', name: 'one', first_tag: 'x' },
    { id: '2', name: 'two', first_tag: 'x' },
  ]);
  // Negative: filters never widen what RLS allows (row 100 matches but is hidden), and
  // a hostile value is only a value.
  assert.deepEqual(ids_(await items().or('id.eq.100,id.gt.0'), 'rls'), [1, 2]);
  assert.deepEqual(ids_(await items().or(`data->>name.eq."x') or true --"`), 'hostile'), []);
  fails(await items().or('id.eq.1,bogus'), 400, 'PGRST100', 'bad tree');
  fails(await items().filter('id', 'nope', 1), 400, 'PGRST100', 'bad op');
  fails(await alice.from('parity_items').select('id::text;drop'), 400, 'PGRST100', 'bad cast');
});

test('PUT inserts or replaces one row by its primary key; missing=default fills defaults', async () => {
  await db.query(`
    create table public.parity_notes (
      id int primary key,
      owner uuid not null default auth.uid(),
      body text,
      tag text default 'none'
    );
    alter table public.parity_notes enable row level security;
    create policy notes_own on public.parity_notes for all to authenticated
      using (owner = auth.uid()) with check (owner = auth.uid());
    grant select, insert, update, delete on public.parity_notes to authenticated;
  `);
  await new Promise((r) => setTimeout(r, 1100));
  const notes = async () =>
    (await db.query('select id, owner, body, tag from public.parity_notes order by id')).rows;
  const put = (token, path, body, prefer = 'return=representation') =>
    rest(path, { token, method: 'PUT', headers: { Prefer: prefer }, body });

  let r = await put(tokens.alice, 'parity_notes?id=eq.1', { id: 1, body: 'first' });
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), [{ id: 1, owner: ids.alice, body: 'first', tag: 'none' }]);
  r = await put(tokens.alice, 'parity_notes?id=eq.1', { id: 1, body: 'replaced', tag: 't' }, 'return=minimal');
  assert.equal(r.status, 204);
  assert.deepEqual(await notes(), [{ id: 1, owner: ids.alice, body: 'replaced', tag: 't' }]);

  // Negative: the key in the URL and the body must agree, filters must be exactly the key,
  // and Eve cannot replace Alice's row (RLS on the conflict's update).
  r = await put(tokens.alice, 'parity_notes?id=eq.1', { id: 2, body: 'x' });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).code, 'PGRST115');
  r = await put(tokens.alice, 'parity_notes?body=eq.x', { id: 1, body: 'x' });
  assert.equal(r.status, 405);
  assert.equal((await r.json()).code, 'PGRST105');
  r = await put(tokens.eve, 'parity_notes?id=eq.1', { id: 1, body: 'eve was here' });
  assert.equal(r.status, 403);
  assert.deepEqual(await notes(), [{ id: 1, owner: ids.alice, body: 'replaced', tag: 't' }]);

  // missing=default (supabase-js defaultToNull: false): left-out keys take the default.
  ok(
    await alice.from('parity_notes').insert([{ id: 2, body: 'two' }, { id: 3, body: 'three', tag: 'x' }], { defaultToNull: false }),
    'missing=default',
  );
  // The control: missing=null (supabase-js's default for bulk inserts) writes nulls.
  ok(await alice.from('parity_notes').insert([{ id: 4, body: 'four' }, { id: 5, body: 'five', tag: 'y' }]), 'missing=null');
  const rows = await notes();
  assert.deepEqual(
    rows.map((n) => [n.id, n.tag, n.owner]),
    [
      [1, 't', ids.alice],
      [2, 'none', ids.alice],
      [3, 'x', ids.alice],
      [4, null, ids.alice],
      [5, 'y', ids.alice],
    ],
  );
});

test('OpenAPI at /rest/v1/ describes what the caller may use, and only that', async () => {
  await db.query(`
    create function public.parity_admin_only() returns int language sql as 'select 1';
    revoke execute on function public.parity_admin_only() from public;
    grant execute on function public.parity_admin_only() to service_role;
  `);
  await new Promise((r) => setTimeout(r, 1100));
  const describe = async (token) => {
    const r = await fetch(`${url}/rest/v1/`, {
      headers: token ? { apikey: anonKey, Authorization: `Bearer ${token}` } : { apikey: anonKey },
    });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^application\/openapi\+json/);
    return r.json();
  };
  const doc = await describe(tokens.alice);
  assert.equal(doc.openapi, '3.0.3');
  assert.ok(doc.paths['/messages'].get && doc.paths['/messages'].post && doc.paths['/messages'].patch);
  assert.ok(doc.components.schemas.messages.properties.body);
  assert.equal(doc.components.schemas.messages.properties.id.format, 'uuid');
  assert.ok(doc.paths['/rpc/send_message'].post, 'a function alice may execute');
  assert.ok(doc.paths['/rpc/send_message'].post.requestBody.content['application/json'].schema.properties.conversation_id);
  assert.ok(doc.paths['/parity_notes'].put, 'PUT where insert and update are granted');

  // Negative: a function the role may not execute, and (for anon) tables granted only to
  // authenticated, are not described at all.
  assert.equal(doc.paths['/rpc/parity_admin_only'], undefined);
  const anonDoc = await describe(null);
  assert.equal(anonDoc.paths['/parity_notes'], undefined);
  assert.equal(anonDoc.paths['/parity_items'], undefined);
  assert.equal(anonDoc.components.schemas.parity_notes, undefined);
  assert.ok(Object.keys(anonDoc.paths).length < Object.keys(doc.paths).length);
  // The schema is chosen by Accept-Profile, among the exposed ones only.
  const bad = await fetch(`${url}/rest/v1/`, {
    headers: { apikey: anonKey, Authorization: `Bearer ${tokens.alice}`, 'Accept-Profile': 'private' },
  });
  assert.equal(bad.status, 406);
  assert.equal((await bad.json()).code, 'PGRST106');
});

// ---- broadcast from the database and over HTTP ------------------------------------------

const realtimeClients = [];
after(async () => {
  await Promise.all(realtimeClients.map((c) => c.removeAllChannels().catch(() => {})));
});

async function rtClient(token) {
  const sb = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: ws, timeout: 5000 },
    global: { headers: { Authorization: `Bearer ${token}` } },
  });
  await sb.realtime.setAuth(token);
  realtimeClients.push(sb);
  return sb;
}

function subscribe(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status));
    });
  });
}

async function waitFor(what, cond, ms = 5000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('realtime.send and broadcast_changes reach the private channel members only', { timeout: 20000 }, async () => {
  const [A, B, E] = await Promise.all([rtClient(tokens.alice), rtClient(tokens.bob), rtClient(tokens.eve)]);
  const topic = `conversation:${conv}`;
  const heard = { a: [], b: [], ePublic: [] };
  const listen = (sb, into, config) =>
    sb.channel(topic, { config }).on('broadcast', { event: '*' }, (m) => into.push(m));
  await subscribe(listen(A, heard.a, { private: true }));
  await subscribe(listen(B, heard.b, { private: true }));
  // Negative: Eve may not join the private channel; on the public one of the same name she
  // must hear none of the private messages.
  const refused = E.channel(topic, { config: { private: true } });
  await assert.rejects(subscribe(refused), /Unauthorized/);
  await E.removeChannel(refused);
  await subscribe(listen(E, heard.ePublic, {}));

  // A reaction (the trigger example in sql/70_reaction_broadcast.sql).
  const [m] = ok(await alice.from('messages').select('id').eq('conversation_id', conv).limit(1), 'a message');
  ok(await alice.from('message_reactions').insert({ message_id: m.id, conversation_id: conv, user_id: ids.alice, emoji: '🔥' }), 'react');
  await waitFor('both members to hear the reaction', () => heard.a.length === 1 && heard.b.length === 1);
  const got = heard.b[0];
  assert.equal(got.event, 'reaction');
  assert.equal(got.payload.operation, 'INSERT');
  assert.equal(got.payload.table, 'message_reactions');
  assert.equal(got.payload.record.emoji, '🔥');
  assert.equal(got.payload.old_record, null);

  // realtime.send from SQL, as a member (RLS: the realtime.messages INSERT policy).
  const asUser = async (id, sql, params) => {
    await db.query('begin');
    try {
      await db.query("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)", [
        JSON.stringify({ sub: id, role: 'authenticated' }),
      ]);
      await db.query(sql, params);
      await db.query('commit');
    } catch (e) {
      await db.query('rollback');
      throw e;
    }
  };
  await asUser(ids.bob, "select realtime.send($1::jsonb, 'note', $2)", [JSON.stringify({ text: 'from sql' }), topic]);
  await waitFor('the note', () => heard.a.some((x) => x.event === 'note'));
  assert.deepEqual(heard.a.find((x) => x.event === 'note').payload, { text: 'from sql' });

  // Negative: Eve sending from SQL on the members' topic is refused by the policy (a
  // warning, her transaction still commits) and nobody hears it.
  await asUser(ids.eve, "select realtime.send($1::jsonb, 'forged', $2)", [JSON.stringify({ text: 'eve' }), topic]);
  // A public message on the same topic name reaches the public channel only.
  await db.query("select realtime.send('{\"hello\":\"all\"}'::jsonb, 'public-note', $1, false)", [topic]);
  await waitFor('the public note', () => heard.ePublic.length === 1);
  assert.equal(heard.ePublic[0].event, 'public-note');
  await sleep(300);
  assert.ok(!heard.a.some((x) => x.event === 'forged' || x.event === 'public-note'), JSON.stringify(heard.a));
  assert.ok(!heard.b.some((x) => x.event === 'forged' || x.event === 'public-note'));
  assert.equal(heard.ePublic.length, 1, 'Eve heard nothing private');
});

test('POST /api/broadcast (httpSend) is authorized by the realtime.messages INSERT policy', { timeout: 20000 }, async () => {
  const [A, B, E] = await Promise.all([rtClient(tokens.alice), rtClient(tokens.bob), rtClient(tokens.eve)]);
  const topic = `conversation:${conv}`;
  const heardByB = [];
  const heardPublic = [];
  await subscribe(B.channel(topic, { config: { private: true } }).on('broadcast', { event: '*' }, (m) => heardByB.push(m)));
  await subscribe(B.channel('lobby').on('broadcast', { event: '*' }, (m) => heardPublic.push(m)));

  // A member sends on the private channel without joining it.
  const res = await A.channel(topic, { config: { private: true } }).httpSend('typing', { who: 'alice' });
  assert.deepEqual(res, { success: true });
  await waitFor('B to hear alice', () => heardByB.length === 1);
  assert.equal(heardByB[0].event, 'typing');
  assert.deepEqual(heardByB[0].payload, { who: 'alice' });

  // Negative: Eve may not write to the members' topic; nothing is delivered.
  await assert.rejects(
    E.channel(topic, { config: { private: true } }).httpSend('typing', { who: 'eve' }),
    /Unauthorized/,
  );
  // The batch form: one refused private message refuses the whole batch.
  const batch = (token, messages) =>
    fetch(`${url}/realtime/v1/api/broadcast`, {
      method: 'POST',
      headers: { apikey: anonKey, Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ messages }),
    });
  let r = await batch(tokens.eve, [
    { topic: 'lobby', event: 'hi', payload: { n: 1 } },
    { topic, event: 'typing', payload: { who: 'eve' }, private: true },
  ]);
  assert.equal(r.status, 403);
  // Anyone with a valid key may send on a public topic.
  r = await batch(tokens.eve, [{ topic: 'lobby', event: 'hi', payload: { n: 2 } }]);
  assert.equal(r.status, 202);
  await waitFor('the lobby message', () => heardPublic.length === 1);
  assert.deepEqual(heardPublic[0].payload, { n: 2 });
  // Bad input and bad tokens get clear errors.
  r = await batch(tokens.eve, [{ topic: 'lobby' }]);
  assert.equal(r.status, 400);
  r = await batch('not-a-token', [{ topic: 'lobby', event: 'hi' }]);
  assert.equal(r.status, 401);
  await sleep(300);
  assert.equal(heardByB.length, 1, 'nothing from eve reached the members');
  assert.equal(heardPublic.length, 1, 'the refused batch delivered nothing');
});
