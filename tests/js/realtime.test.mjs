// Ripple's realtime socket driven by the real @supabase/supabase-js from npm, unchanged.
// Run by tests/tests/it/supabase_js_realtime.rs, which starts PostgreSQL and Ripple and passes:
//   RIPPLE_URL, RIPPLE_ANON_KEY, TOKEN_A, TOKEN_B, TOKEN_C (A and B share CONVERSATION_ID,
//   C is an outsider).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run this through cargo test (supabase_js_realtime)`)
  return v
}
const url = env('RIPPLE_URL')
const anonKey = env('RIPPLE_ANON_KEY')
const tokens = { a: env('TOKEN_A'), b: env('TOKEN_B'), c: env('TOKEN_C') }
const conversation = env('CONVERSATION_ID')

const clients = []
after(async () => {
  await Promise.all(clients.map((c) => c.removeAllChannels().catch(() => {})))
})

async function client(token) {
  const sb = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: ws, timeout: 5000 },
  })
  await sb.realtime.setAuth(token)
  clients.push(sb)
  return sb
}

// Resolves once the channel is SUBSCRIBED; rejects with the server's reason otherwise.
function subscribe(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve()
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT')
        reject(err ?? new Error(status))
    })
  })
}

async function waitFor(what, cond, ms = 5000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

test('typing via broadcast on a private channel reaches members; outsider C cannot join', async () => {
  const [A, B, C] = await Promise.all([client(tokens.a), client(tokens.b), client(tokens.c)])
  const topic = `conversation:${conversation}`
  const heardByB = []
  const bChannel = B.channel(topic, { config: { private: true } }).on(
    'broadcast',
    { event: 'typing' },
    (msg) => heardByB.push(msg)
  )
  await subscribe(bChannel)
  const aChannel = A.channel(topic, { config: { private: true, broadcast: { ack: true } } })
  await subscribe(aChannel)

  const cChannel = C.channel(topic, { config: { private: true } })
  await assert.rejects(subscribe(cChannel), /Unauthorized/)
  await C.removeChannel(cChannel)

  // C listening on the public channel of the same name hears nothing of the private one.
  const heardByC = []
  const cPublic = C.channel(topic).on('broadcast', { event: 'typing' }, (m) => heardByC.push(m))
  await subscribe(cPublic)

  const sent = await aChannel.send({ type: 'broadcast', event: 'typing', payload: { user: 'a', typing: true } })
  assert.equal(sent, 'ok', 'acknowledged by the server')
  await waitFor('B to hear A typing', () => heardByB.length === 1)
  assert.equal(heardByB[0].event, 'typing')
  assert.deepEqual(heardByB[0].payload, { user: 'a', typing: true })

  await sleep(300)
  assert.equal(heardByC.length, 0, 'the outsider heard nothing')
  assert.equal(heardByB.length, 1, 'B heard it once; A did not hear itself')
})

test('presence: a join is seen by others, and a disconnect is seen as a leave', async () => {
  const [A, B] = await Promise.all([client(tokens.a), client(tokens.b)])
  const room = `presence:${conversation}`
  const joins = []
  const leaves = []
  const bChannel = B.channel(room, { config: { presence: { key: 'bob' } } })
    .on('presence', { event: 'join' }, ({ key }) => joins.push(key))
    .on('presence', { event: 'leave' }, ({ key }) => leaves.push(key))
  await subscribe(bChannel)
  const aChannel = A.channel(room, { config: { presence: { key: 'alice' } } })
  await subscribe(aChannel)
  assert.equal(await aChannel.track({ status: 'online' }), 'ok')

  await waitFor('alice to join', () => joins.includes('alice'))
  const state = bChannel.presenceState()
  assert.equal(state.alice[0].status, 'online')
  assert.ok(state.alice[0].presence_ref, 'each presence has a ref')

  // Alice's whole socket goes away: Bob sees her leave.
  await A.realtime.disconnect()
  await waitFor('alice to leave', () => leaves.includes('alice'))
  assert.equal(bChannel.presenceState().alice, undefined)
})

test('postgres_changes bindings are accepted as realtime-js matches them, then Subscribed to PostgreSQL', async () => {
  const B = await client(tokens.b)
  const system = []
  const channel = B.channel(`db:${conversation}`)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}` }, () => {})
    .on('postgres_changes', { event: '*', schema: 'public', table: 'conversations' }, () => {})
    .on('system', {}, (p) => system.push(p))
  // CHANNEL_ERROR here would mean the reply's bindings did not match the client's.
  await subscribe(channel)
  await waitFor('the system message', () => system.length > 0)
  assert.equal(system[0].message, 'Subscribed to PostgreSQL')
  assert.equal(system[0].status, 'ok')

  const bad = B.channel('db-bad').on('postgres_changes', { event: '*', schema: 'public', table: 'no_such_table' }, () => {})
  await assert.rejects(subscribe(bad), /does not exist/)
  await B.removeChannel(bad)
})
