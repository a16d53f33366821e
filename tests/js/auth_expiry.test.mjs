// A refresh keeps a channel alive past its first token's expiry; without one, Ripple closes
// the channel when the token expires. Run by tests/tests/it/supabase_js_auth.rs against a
// gateway whose access tokens live ACCESS_TTL_SECS seconds (RIPPLE_URL, RIPPLE_ANON_KEY).
import { test, after } from 'node:test'
import { randomUUID } from 'node:crypto'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run this through cargo test (supabase_js_auth)`)
  return v
}
const url = env('RIPPLE_URL')
const anonKey = env('RIPPLE_ANON_KEY')
const ttl = Number(env('ACCESS_TTL_SECS'))

const clients = []
after(async () => {
  await Promise.all(clients.map((c) => c.removeAllChannels().catch(() => {})))
})

async function signedUp(what) {
  const sb = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket, timeout: 5000 },
  })
  clients.push(sb)
  const { data, error } = await sb.auth.signUp({ email: `${what}-${randomUUID().slice(0, 8)}@example.com`, password: 'correct-horse-battery' })
  assert.equal(error, null, JSON.stringify(error))
  return { sb, user: data.user }
}

async function waitFor(what, cond, ms = 30000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function watch(sb, name, conversation, seen, system) {
  const channel = sb
    .channel(name)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}` }, (p) => seen.push(p.new.id))
    .on('system', {}, (m) => system.push(m))
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status))
    })
    waitFor('Subscribed to PostgreSQL', () => system.some((m) => m.extension === 'postgres_changes' && m.status === 'ok')).then(() => resolve(channel), reject)
  })
}

test('the refreshed channel outlives its first token; the unrefreshed one is closed at expiry', async () => {
  const a = await signedUp('sender')
  const b = await signedUp('refresher')
  const c = await signedUp('lapser')
  const { data: conversation, error } = await a.sb.rpc('create_group_conversation', { title: 'expiry', member_ids: [b.user.id, c.user.id] })
  assert.equal(error, null, JSON.stringify(error))
  const [seenB, seenC, systemB, systemC] = [[], [], [], []]
  const bChannel = await watch(b.sb, 'b', conversation, seenB, systemB)
  await watch(c.sb, 'c', conversation, seenC, systemC)

  // B refreshes a while before its token would expire; C does nothing.
  await sleep((ttl / 2) * 1000)
  const { error: refreshError } = await b.sb.auth.refreshSession()
  assert.equal(refreshError, null)

  // C's token expires: Ripple closes C's channel and says why.
  await waitFor("C's channel to close", () => systemC.some((m) => m.status === 'error' && /expired/i.test(m.message)))
  // B's channel lives on with its new token, and changes still flow to it.
  const { data: sent, error: sendError } = await a.sb.rpc('send_message', { conversation_id: conversation, body: 'still there?' })
  assert.equal(sendError, null, JSON.stringify(sendError))
  await waitFor('B to receive the message', () => seenB.includes(sent.id)).catch((e) => {
    throw new Error(`${e.message}; B's channel is ${bChannel.state}, its system messages: ${JSON.stringify(systemB)}`)
  })
  assert.equal(bChannel.state, 'joined')
  assert.ok(!systemB.some((m) => m.status === 'error'), JSON.stringify(systemB))
  await sleep(300)
  assert.ok(!seenC.includes(sent.id), 'the closed channel received nothing')
})
