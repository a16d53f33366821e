// Resuming postgres_changes with the real, unchanged @supabase/supabase-js: the app passes
// one mutable `resume` object in its bindings and keeps it current from the `system`
// position messages; when the connection drops, supabase-js reconnects and rejoins by
// itself, sending the latest position, and Ripple replays exactly what was missed.
// Run by tests/tests/it/supabase_js_resume.rs (RIPPLE_URL, RIPPLE_ANON_KEY, TOKEN_A, TOKEN_B,
// TOKEN_C, CONVERSATION_ID shared by A and B; C is an outsider).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run this through cargo test (supabase_js_resume)`)
  return v
}
const url = env('RIPPLE_URL')
const anonKey = env('RIPPLE_ANON_KEY')
const conversation = env('CONVERSATION_ID')

const clients = []
after(async () => {
  await Promise.all(clients.map((c) => c.removeAllChannels().catch(() => {})))
})

async function client(token) {
  const sb = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { headers: { Authorization: `Bearer ${token}` } },
    realtime: { transport: ws, timeout: 5000, reconnectAfterMs: () => 200 },
  })
  await sb.realtime.setAuth(token)
  clients.push(sb)
  return sb
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

// The README's recipe: one `resume` object per channel, kept current by `system` messages.
function resumable(sb, name, onChange) {
  const resume = { since: null }
  let subscribed = 0
  const channel = sb
    .channel(name)
    .on(
      'postgres_changes',
      { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}`, resume },
      onChange
    )
    .on('system', {}, (m) => {
      if (m.position) resume.since = m.position
      if (m.message === 'Subscribed to PostgreSQL') subscribed += 1
    })
  channel.subscribe()
  return { channel, resume, subscriptions: () => subscribed }
}

test('a dropped connection resumes: every missed change once, in order, then live ones', async () => {
  const [A, B, C] = await Promise.all([client(env('TOKEN_A')), client(env('TOKEN_B')), client(env('TOKEN_C'))])
  const seenByB = []
  const seenByC = []
  // (The setup's own system messages may still be streaming: only people's messages count.)
  const b = resumable(B, 'room-b', (p) => p.new.kind !== 'system' && seenByB.push(p.new.body))
  const c = resumable(C, 'room-c', (p) => seenByC.push(p.new.body))
  await waitFor('B subscribed', () => b.subscriptions() === 1)
  await waitFor('C subscribed', () => c.subscriptions() === 1)

  ok(await A.rpc('send_message', { conversation_id: conversation, body: 'one' }), 'send one')
  await waitFor('B got one', () => seenByB.includes('one'))
  assert.ok(b.resume.since, 'the position arrived with the change')

  // The network drops under B (not a clean disconnect): supabase-js reconnects by itself.
  B.realtime.socketAdapter.socket.conn.close(4000, 'network drop')
  ok(await A.rpc('send_message', { conversation_id: conversation, body: 'two' }), 'send two')
  ok(await A.rpc('send_message', { conversation_id: conversation, body: 'three' }), 'send three')
  await waitFor('B rejoined', () => b.subscriptions() === 2)
  await waitFor('B caught up', () => seenByB.length >= 3)
  ok(await A.rpc('send_message', { conversation_id: conversation, body: 'four' }), 'send four')
  await waitFor('B got four', () => seenByB.includes('four'))
  await sleep(300)
  assert.deepEqual(seenByB, ['one', 'two', 'three', 'four'], 'nothing lost, nothing twice, in order')
  assert.deepEqual(seenByC, [], 'the outsider receives nothing, replayed or live')
})
