// Sign-up, sign-in and tokens through the real @supabase/supabase-js against Ripple's auth
// service (/auth/v1), then REST, RPC and realtime as the signed-in user.
// Run by tests/tests/it/supabase_js_auth.rs, which passes RIPPLE_URL and RIPPLE_ANON_KEY, the
// per-email rate limit (RATE_PER_EMAIL attempts per RATE_WINDOW_MS), and for the JWKS test a
// JWKS file's private keys (JWKS_RSA_PEM with kid JWKS_RSA_KID, JWKS_ED_PEM with JWKS_ED_KID).
import { test, after } from 'node:test'
import { createSign, sign as edSign, randomUUID } from 'node:crypto'
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
const PASSWORD = 'correct-horse-battery'

const clients = []
after(async () => {
  await Promise.all(clients.map((c) => c.removeAllChannels().catch(() => {})))
})

// A client as an app would make one on Node 20 (no native WebSocket: pass `ws`). Sessions
// are kept in memory; refreshes happen when the test asks.
function client() {
  const sb = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket, timeout: 5000 },
  })
  clients.push(sb)
  return sb
}

const email = (what) => `${what}-${randomUUID().slice(0, 8)}@example.com`

function ok({ data, error }, what) {
  assert.equal(error, null, `${what}: ${JSON.stringify(error)}`)
  return data
}

async function signedUp(what, data = {}) {
  const sb = client()
  const address = email(what)
  const res = ok(await sb.auth.signUp({ email: address, password: PASSWORD, options: { data } }), `sign up ${what}`)
  return { sb, address, user: res.user, session: res.session }
}

async function waitFor(what, cond, ms = 8000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// The raw token endpoint, as supabase-js calls it, for checks the client hides.
async function refreshRaw(refreshToken) {
  const res = await fetch(`${url}/auth/v1/token?grant_type=refresh_token`, {
    method: 'POST',
    headers: { apikey: anonKey, 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  })
  return { status: res.status, body: await res.json() }
}

// Resolves once Ripple says the change subscription is live.
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

test('sign up returns a session, the user, and creates the profile from the metadata', async () => {
  const sb = client()
  const events = []
  sb.auth.onAuthStateChange((event) => events.push(event))
  const address = email('dora')
  const { user, session } = ok(
    await sb.auth.signUp({ email: address, password: PASSWORD, options: { data: { display_name: 'Dora' } } }),
    'sign up'
  )
  assert.ok(session?.access_token && session.refresh_token, 'a session straight away (no email confirmation)')
  assert.equal(session.token_type, 'bearer')
  assert.equal(user.email, address)
  assert.equal(user.user_metadata.display_name, 'Dora')
  assert.ok(user.email_confirmed_at, 'confirmed at sign-up')
  await waitFor('SIGNED_IN', () => events.includes('SIGNED_IN'))

  // getSession and getUser agree with the sign-up.
  const { session: current } = ok(await sb.auth.getSession(), 'getSession')
  assert.equal(current.user.id, user.id)
  const { user: fetched } = ok(await sb.auth.getUser(), 'getUser')
  assert.equal(fetched.id, user.id)
  assert.equal(fetched.email, address)

  // The trigger made the profile, readable as the user over REST.
  const rows = ok(await sb.from('profiles').select('id, display_name').eq('id', user.id), 'profile')
  assert.deepEqual(rows, [{ id: user.id, display_name: 'Dora' }])

  // The same email again, in another case: refused.
  const again = await client().auth.signUp({ email: address.toUpperCase(), password: PASSWORD })
  assert.equal(again.error?.code, 'user_already_exists')
  assert.equal(again.error?.status, 422)

  // A short password: refused with GoTrue's weak_password.
  const weak = await client().auth.signUp({ email: email('weak'), password: 'short' })
  assert.equal(weak.error?.code, 'weak_password')
  assert.deepEqual(weak.error?.reasons, ['length'])
})

test('sign in; RPC and tables as the user; an outsider and anon see nothing of it', async () => {
  const { address, user } = await signedUp('erin', { display_name: 'Erin' })
  const other = await signedUp('frank')
  const sb = client()
  const { session, user: signedIn } = ok(
    await sb.auth.signInWithPassword({ email: address, password: PASSWORD }),
    'sign in'
  )
  assert.equal(signedIn.id, user.id)
  assert.ok(session.expires_at > Date.now() / 1000)

  const conversation = ok(await sb.rpc('create_group_conversation', { title: 'Erin only' }), 'create group')
  const mine = ok(await sb.from('conversations').select('id, title'), 'list as erin')
  assert.deepEqual(mine, [{ id: conversation, title: 'Erin only' }])

  const theirs = ok(await other.sb.from('conversations').select('id'), 'list as frank')
  assert.deepEqual(theirs, [], 'the outsider sees no conversation')
  const anon = client()
  const denied = await anon.rpc('create_group_conversation', { title: 'nope' })
  assert.ok(denied.error, 'anon cannot create a conversation')
  const anonProfiles = await anon.from('profiles').select('id')
  assert.equal(anonProfiles.error?.code, '42501', 'anon may not read profiles at all')
})

test('subscribe as the user; a refresh keeps the channel alive and changes flowing', async () => {
  const a = await signedUp('gina')
  const b = await signedUp('hal')
  const conversation = ok(
    await a.sb.rpc('create_group_conversation', { title: 'G and H', member_ids: [b.user.id] }),
    'create group'
  )
  const seen = []
  const events = []
  b.sb.auth.onAuthStateChange((event) => events.push(event))
  const channel = b.sb
    .channel('hal-messages')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${conversation}` }, (p) => seen.push(p.new))
  await live(channel)

  const first = ok(await a.sb.rpc('send_message', { conversation_id: conversation, body: 'before refresh' }), 'send')
  await waitFor('the first message', () => seen.some((m) => m.id === first.id))

  const before = (await b.sb.auth.getSession()).data.session
  // A second later, so the new access token's iat (and so the token) differs.
  await sleep(1100)
  const { session: refreshed } = ok(await b.sb.auth.refreshSession(), 'refresh')
  assert.notEqual(refreshed.access_token, before.access_token)
  assert.notEqual(refreshed.refresh_token, before.refresh_token)
  await waitFor('TOKEN_REFRESHED', () => events.includes('TOKEN_REFRESHED'))
  // supabase-js hands the new token to realtime itself.
  await waitFor('realtime to carry the new token', () => b.sb.realtime.accessTokenValue === refreshed.access_token)

  const second = ok(await a.sb.rpc('send_message', { conversation_id: conversation, body: 'after refresh' }), 'send 2')
  await waitFor('the second message', () => seen.some((m) => m.id === second.id))
  assert.equal(channel.state, 'joined')
  // REST as the refreshed user still works.
  ok(await b.sb.from('conversations').select('id').eq('id', conversation), 'read after refresh')
})

test('a reused refresh token ends its whole family', async () => {
  const { sb, session } = await signedUp('ivan')
  const first = session.refresh_token
  const { session: next } = ok(await sb.auth.refreshSession(), 'refresh')
  assert.notEqual(next.refresh_token, first)

  // The rotated token again (a thief's copy): refused, and the session it belonged to ends...
  const reused = await refreshRaw(first)
  assert.equal(reused.status, 400)
  assert.equal(reused.body.error_code, 'refresh_token_already_used')
  // ...so the legitimate newest token is dead too.
  const after = await refreshRaw(next.refresh_token)
  assert.equal(after.status, 400)
  assert.equal(after.body.error_code, 'refresh_token_not_found')
  // And the access token's session is gone for /user.
  const { error } = await sb.auth.getUser(next.access_token)
  assert.ok(error, 'getUser with an ended session fails')
})

test('sign out revokes the refresh token; scopes local, others and global', async () => {
  const { sb, address, session } = await signedUp('jo')
  const events = []
  sb.auth.onAuthStateChange((event) => events.push(event))
  ok(await sb.auth.signOut(), 'sign out')
  await waitFor('SIGNED_OUT', () => events.includes('SIGNED_OUT'))
  assert.equal((await sb.auth.getSession()).data.session, null)
  const dead = await refreshRaw(session.refresh_token)
  assert.equal(dead.status, 400)
  assert.equal(dead.body.error_code, 'refresh_token_not_found')

  // Three devices.
  const devices = []
  for (let i = 0; i < 3; i++) {
    const d = client()
    const { session: s } = ok(await d.auth.signInWithPassword({ email: address, password: PASSWORD }), `device ${i}`)
    devices.push({ d, s })
  }
  // Device 0 signs out only itself.
  ok(await devices[0].d.auth.signOut({ scope: 'local' }), 'local')
  assert.equal((await refreshRaw(devices[0].s.refresh_token)).status, 400)
  const d1 = ok(await devices[1].d.auth.refreshSession(), 'device 1 still signed in')
  // Device 1 signs out the others: device 2 is out, device 1 stays in.
  ok(await devices[1].d.auth.signOut({ scope: 'others' }), 'others')
  assert.equal((await refreshRaw(devices[2].s.refresh_token)).status, 400)
  assert.ok((await devices[1].d.auth.getSession()).data.session, 'device 1 keeps its session')
  ok(await devices[1].d.auth.refreshSession(), 'device 1 refreshes')
  // Global: device 1 ends everything, its own session included.
  const d1Token = (await devices[1].d.auth.getSession()).data.session.refresh_token
  assert.notEqual(d1Token, d1.session.refresh_token)
  ok(await devices[1].d.auth.signOut({ scope: 'global' }), 'global')
  assert.equal((await refreshRaw(d1Token)).status, 400)
})

test('a wrong password and an unknown email get the same answer', async () => {
  const { address } = await signedUp('kim')
  const wrong = await client().auth.signInWithPassword({ email: address, password: 'not-the-password' })
  const unknown = await client().auth.signInWithPassword({ email: email('nobody'), password: 'not-the-password' })
  for (const { error } of [wrong, unknown]) {
    assert.equal(error?.name, 'AuthApiError')
    assert.equal(error.status, 400)
    assert.equal(error.code, 'invalid_credentials')
    assert.equal(error.message, 'Invalid login credentials')
  }
  assert.equal(wrong.data.session, null)
  assert.equal(unknown.data.session, null)
})

test('updateUser changes the password and merges the metadata', async () => {
  const { sb, address } = await signedUp('lee', { display_name: 'Lee', team: 'blue' })
  const events = []
  sb.auth.onAuthStateChange((event) => events.push(event))
  const { user } = ok(await sb.auth.updateUser({ data: { team: null, mood: 'happy' } }), 'metadata')
  assert.deepEqual(user.user_metadata, { display_name: 'Lee', mood: 'happy' })
  await waitFor('USER_UPDATED', () => events.includes('USER_UPDATED'))
  const same = await sb.auth.updateUser({ password: PASSWORD })
  assert.equal(same.error?.code, 'same_password')
  const weak = await sb.auth.updateUser({ password: 'x' })
  assert.equal(weak.error?.code, 'weak_password')
  ok(await sb.auth.updateUser({ password: 'a-brand-new-secret' }), 'password')

  const old = await client().auth.signInWithPassword({ email: address, password: PASSWORD })
  assert.equal(old.error?.code, 'invalid_credentials')
  const { user: again } = ok(
    await client().auth.signInWithPassword({ email: address, password: 'a-brand-new-secret' }),
    'sign in with the new password'
  )
  assert.equal(again.user_metadata.mood, 'happy')
})

test('the per-email rate limit trips, answers 429, and recovers', async () => {
  const { address } = await signedUp('mo')
  const perEmail = Number(env('RATE_PER_EMAIL'))
  const windowMs = Number(env('RATE_WINDOW_MS'))
  const codes = []
  for (let i = 0; i < perEmail + 5; i++) {
    const { error } = await client().auth.signInWithPassword({ email: address, password: 'wrong-password' })
    codes.push(error?.code)
  }
  assert.ok(codes.includes('over_request_rate_limit'), `tripped: ${codes}`)
  const limited = await client().auth.signInWithPassword({ email: address, password: PASSWORD })
  assert.equal(limited.error?.status, 429, 'even the right password waits')
  // Another email is not limited.
  const { address: other } = await signedUp('nia')
  ok(await client().auth.signInWithPassword({ email: other, password: PASSWORD }), 'another email')
  // One attempt comes back every window / capacity.
  await sleep(windowMs / perEmail + 300)
  ok(await client().auth.signInWithPassword({ email: address, password: PASSWORD }), 'after the window')
})

// A JWT as another issuer signs it (an identity provider, Supabase's asymmetric keys).
function foreignToken(alg, pem, kid, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const input = `${b64({ alg, typ: 'JWT', kid })}.${b64(claims)}`
  const sig =
    alg === 'EdDSA'
      ? edSign(null, Buffer.from(input), pem)
      : createSign('RSA-SHA256').update(input).sign(pem)
  return `${input}.${sig.toString('base64url')}`
}

test('tokens of another issuer verify against its JWKS by kid; an unknown kid is refused', async () => {
  const { user } = await signedUp('oz')
  const now = Math.floor(Date.now() / 1000)
  const claims = { sub: user.id, role: 'authenticated', aud: 'authenticated', iss: env('JWKS_ISSUER'), iat: now, exp: now + 600 }
  const asUser = (token) =>
    createClient(url, anonKey, {
      accessToken: async () => token,
      realtime: { transport: WebSocket, timeout: 5000 },
    })
  for (const [alg, pem, kid] of [
    ['RS256', env('JWKS_RSA_PEM'), env('JWKS_RSA_KID')],
    ['EdDSA', env('JWKS_ED_PEM'), env('JWKS_ED_KID')],
  ]) {
    const sb = asUser(foreignToken(alg, pem, kid, claims))
    clients.push(sb)
    const id = ok(await sb.rpc('create_group_conversation', { title: `via ${alg}` }), `rpc with ${alg}`)
    const rows = ok(await sb.from('conversations').select('id').eq('id', id), `read with ${alg}`)
    assert.equal(rows.length, 1)
    // Realtime runs as the user too (the `accessToken` option, not the anon key).
    const seen = []
    const channel = sb
      .channel(`foreign-${alg}`)
      .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'messages', filter: `conversation_id=eq.${id}` }, (p) => seen.push(p.new.id))
    await live(channel)
    const sent = ok(await sb.rpc('send_message', { conversation_id: id, body: `signed with ${alg}` }), `send with ${alg}`)
    await waitFor(`the message sent with ${alg}`, () => seen.includes(sent.id))
  }
  // Signed by the RSA key but naming a kid the JWKS does not have: refused.
  const unknown = asUser(foreignToken('RS256', env('JWKS_RSA_PEM'), 'no-such-kid', claims))
  clients.push(unknown)
  const { error } = await unknown.from('conversations').select('id')
  assert.equal(error?.code, 'PGRST301')
  assert.match(error.message, /kid/)
  // Another issuer: refused.
  const evil = asUser(foreignToken('RS256', env('JWKS_RSA_PEM'), env('JWKS_RSA_KID'), { ...claims, iss: 'https://evil.example' }))
  clients.push(evil)
  assert.equal((await evil.from('conversations').select('id')).error?.code, 'PGRST301')
})

// The system message that follows a postgres_changes join.
function systemMessage(channel) {
  return new Promise((resolve, reject) => {
    channel.on('system', {}, (msg) => {
      if (msg?.extension === 'postgres_changes') resolve(msg)
    })
    channel.subscribe((status, err) => {
      if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status))
    })
  })
}

test('a channel joined before signing in is told the anon key cannot read the table', async () => {
  const anon = client()
  const spec = { event: '*', schema: 'public', table: 'messages' }
  const msg = await systemMessage(anon.channel('anon-messages').on('postgres_changes', spec, () => {}))
  assert.equal(msg.status, 'ok')
  assert.ok(
    msg.warnings?.some((w) => /role anon has no SELECT privilege on public\.messages/.test(w) && /sign in/.test(w)),
    `warned: ${JSON.stringify(msg)}`
  )
  // Signed in, the same join carries no such warning.
  const { sb } = await signedUp('pat')
  const mine = await systemMessage(sb.channel('user-messages').on('postgres_changes', spec, () => {}))
  assert.equal(mine.status, 'ok')
  assert.ok(!(mine.warnings ?? []).some((w) => /SELECT/.test(w)), JSON.stringify(mine))
})
