// postgres_changes through the real @supabase/supabase-js, end to end: writes go through
// Ripple's REST/RPC, come back through the replication stream, and reach only the
// subscribers the database's RLS lets see them.
// Run by tests/tests/it/supabase_js_changes.rs, which passes RIPPLE_URL, RIPPLE_ANON_KEY,
// TOKEN_A, TOKEN_B, TOKEN_C (A and B share CONVERSATION_ID; C is an outsider with its own
// conversation OTHER_CONVERSATION_ID with D), and USER_B with RIPPLE_JWT_SECRET so the
// expiry test can mint B's short-lived tokens when it needs them.
import { test, after } from 'node:test'
import { createHmac } from 'node:crypto'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run this through cargo test (supabase_js_changes)`)
  return v
}
const url = env('RIPPLE_URL')
const anonKey = env('RIPPLE_ANON_KEY')
const conversation = env('CONVERSATION_ID')
const otherConversation = env('OTHER_CONVERSATION_ID')

// An HS256 token for B, valid for `seconds`, signed like Ripple's own.
function tokenForB(seconds) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const now = Math.floor(Date.now() / 1000)
  const head = b64({ alg: 'HS256', typ: 'JWT' })
  const body = b64({ sub: env('USER_B'), role: 'authenticated', iat: now, exp: now + seconds })
  const sig = createHmac('sha256', env('RIPPLE_JWT_SECRET')).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

const clients = []
after(async () => {
  await Promise.all(clients.map((c) => c.removeAllChannels().catch(() => {})))
})

async function client(token) {
  const sb = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { headers: { Authorization: `Bearer ${token}` } },
    realtime: { transport: ws, timeout: 5000 },
  })
  await sb.realtime.setAuth(token)
  clients.push(sb)
  return sb
}

// Subscribes and resolves once Ripple says the change subscription is live ("Subscribed
// to PostgreSQL"): writes committed after that are delivered.
function live(channel) {
  return new Promise((resolve, reject) => {
    channel.on('system', {}, (msg) => {
      if (msg?.extension === 'postgres_changes' && msg?.status === 'ok') resolve()
      else if (msg?.status === 'error') reject(new Error(msg.message))
    })
    channel.subscribe((status, err) => {
      if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status))
    })
  })
}

async function waitFor(what, cond, ms = 8000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function ok({ data, error }, what) {
  assert.equal(error, null, `${what}: ${JSON.stringify(error)}`)
  return data
}

test('B receives A\'s message, its edit and its deletion; outsider C receives nothing', async () => {
  const [A, B, C] = await Promise.all([
    client(env('TOKEN_A')),
    client(env('TOKEN_B')),
    client(env('TOKEN_C')),
  ])
  const seenByB = []
  const seenByC = []
  const bChannel = B.channel('b-messages').on(
    'postgres_changes',
    { event: '*', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}` },
    (p) => seenByB.push(p)
  )
  // C subscribes to the whole table with no filter: only RLS stands between C and the rows.
  const cChannel = C.channel('c-messages')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'messages' }, (p) => seenByC.push(p))
    .on('postgres_changes', { event: '*', schema: 'public', table: 'message_reactions' }, (p) =>
      seenByC.push(p)
    )
  await Promise.all([live(bChannel), live(cChannel)])

  const sent = ok(await A.rpc('send_message', { conversation_id: conversation, body: 'hello B' }), 'send')
  // (System messages the setup's membership triggers wrote may stream in too.)
  await waitFor('B to receive the insert', () => seenByB.some((p) => p.new?.id === sent.id))
  const insert = seenByB.find((p) => p.new?.id === sent.id)
  assert.equal(insert.eventType, 'INSERT')
  assert.equal(insert.schema, 'public')
  assert.equal(insert.table, 'messages')
  assert.equal(insert.new.id, sent.id)
  assert.equal(insert.new.body, 'hello B')
  assert.match(insert.commit_timestamp, /^\d{4}-\d\d-\d\dT/)

  ok(await A.rpc('edit_message', { message_id: sent.id, body: 'hello B (edited)' }), 'edit')
  await waitFor('B to receive the edit', () => seenByB.some((p) => p.eventType === 'UPDATE'))
  const edit = seenByB.find((p) => p.eventType === 'UPDATE')
  assert.equal(edit.new.body, 'hello B (edited)')
  assert.equal(edit.old.body, 'hello B', 'the old row comes along (replica identity full)')

  ok(await A.rpc('delete_message', { message_id: sent.id }), 'delete')
  await waitFor('B to receive the soft delete', () =>
    seenByB.some((p) => p.eventType === 'UPDATE' && p.new.deleted_at)
  )
  const del = seenByB.find((p) => p.eventType === 'UPDATE' && p.new.deleted_at)
  assert.equal(del.new.body, null, 'a deleted message carries no body')

  // A real DELETE, judged on the old row: a reaction added and removed.
  const other = ok(await B.rpc('send_message', { conversation_id: conversation, body: 'react to me' }), 'send 2')
  ok(await A.rpc('react', { message_id: other.id, emoji: '👍' }), 'react')
  ok(await A.rpc('unreact', { message_id: other.id, emoji: '👍' }), 'unreact')
  const reactions = []
  const bReactions = B.channel('b-reactions').on(
    'postgres_changes',
    { event: 'DELETE', schema: 'public', table: 'message_reactions' },
    (p) => reactions.push(p)
  )
  await live(bReactions)
  ok(await A.rpc('react', { message_id: other.id, emoji: '🎉' }), 'react 2')
  ok(await A.rpc('unreact', { message_id: other.id, emoji: '🎉' }), 'unreact 2')
  // (The 👍 delete, committed just before this channel joined, may arrive too.)
  await waitFor('B to receive the reaction delete', () => reactions.some((r) => r.old.emoji === '🎉'))
  assert.ok(reactions.every((r) => r.eventType === 'DELETE'))

  // Give anything that might leak time to arrive, then check C saw nothing of A and B's
  // conversation (C does see the system messages of its own conversation with D).
  await sleep(500)
  const leaked = seenByC.filter(
    (p) => (p.new?.conversation_id ?? p.old?.conversation_id) !== otherConversation
  )
  assert.deepEqual(leaked, [], 'the outsider received no insert, edit, delete or reaction')
  // And C's subscription was live all along: C's own conversation reaches C.
  const own = ok(await C.rpc('send_message', { conversation_id: otherConversation, body: 'mine' }), 'c sends')
  await waitFor('C to receive its own message', () => seenByC.some((p) => p.new?.id === own.id))
})

test('filters pick the rows; a filter on another conversation receives nothing', async () => {
  const [A, B] = await Promise.all([client(env('TOKEN_A')), client(env('TOKEN_B'))])
  const eqOther = []
  const inOurs = []
  const insertsOnly = []
  const ch = B.channel('b-filters')
    .on(
      'postgres_changes',
      { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${otherConversation}` },
      (p) => eqOther.push(p)
    )
    .on(
      'postgres_changes',
      { event: '*', schema: 'public', table: 'messages', filter: `conversation_id=in.(${conversation},${otherConversation})` },
      (p) => inOurs.push(p)
    )
    .on(
      'postgres_changes',
      { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}` },
      (p) => insertsOnly.push(p)
    )
  await live(ch)
  const m = ok(await A.rpc('send_message', { conversation_id: conversation, body: 'filtered' }), 'send')
  ok(await A.rpc('edit_message', { message_id: m.id, body: 'filtered, edited' }), 'edit')
  await waitFor('the in-filter to see insert and update', () =>
    inOurs.some((p) => p.eventType === 'UPDATE' && p.new.id === m.id)
  )
  await sleep(300)
  // Changes of earlier tests may still be arriving; judge only this test's message.
  const ours = (list) => list.filter((p) => p.new?.id === m.id)
  assert.equal(eqOther.length, 0)
  assert.deepEqual(ours(inOurs).map((p) => p.eventType), ['INSERT', 'UPDATE'])
  assert.deepEqual(ours(insertsOnly).map((p) => p.eventType), ['INSERT'], 'the INSERT binding does not get the UPDATE')
  assert.ok(insertsOnly.every((p) => p.eventType === 'INSERT'))
})

test('a refreshed token keeps the subscription; an expired one ends it', async () => {
  const A = await client(env('TOKEN_A'))
  const B = await client(tokenForB(3))
  const seen = []
  const ch = B.channel('b-expiring').on(
    'postgres_changes',
    { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}` },
    (p) => seen.push(p)
  )
  await live(ch)
  // Refresh with a fresh token: still subscribed, still receiving.
  await B.realtime.setAuth(tokenForB(3600))
  ok(await A.rpc('send_message', { conversation_id: conversation, body: 'after refresh' }), 'send')
  await waitFor('delivery after refresh', () => seen.some((p) => p.new.body === 'after refresh'))

  // A second client whose short token is never refreshed is closed when it expires.
  const B2 = await client(tokenForB(3))
  const seen2 = []
  const closed = []
  const ch2 = B2.channel('b2-expiring')
    .on(
      'postgres_changes',
      { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}` },
      (p) => seen2.push(p)
    )
    .on('system', {}, (m) => {
      if (m?.status === 'error') closed.push(m)
    })
  await live(ch2)
  await waitFor('the expired channel to be told', () => closed.length > 0, 15000)
  assert.match(JSON.stringify(closed[0]), /expired/i)
  ok(await A.rpc('send_message', { conversation_id: conversation, body: 'after expiry' }), 'send 2')
  await waitFor('the live client to get it', () => seen.some((p) => p.new.body === 'after expiry'))
  await sleep(300)
  assert.ok(
    !seen2.some((p) => p.new.body === 'after expiry'),
    'nothing reaches a channel whose token expired'
  )
})
