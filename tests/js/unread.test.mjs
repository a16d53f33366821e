// Live unread badges from the change stream alone, through the real @supabase/supabase-js:
// the recipe of README ("The chat database", live unread counts). The badge of a
// conversation is
//
//   conversations.counted_seq - read_counted_seq - sent_since_read - offset
//
// where the first term streams with every message (the conversation row the preview
// trigger updates), the next two with the member's own conversation_members row, and
// `offset` (other members' deleted messages after the read point) is refreshed from
// list_conversations() only when a deletion happens or the read point moves.
// Run by tests/tests/it/supabase_js_unread.rs, which passes RIPPLE_URL, RIPPLE_ANON_KEY,
// TOKEN_A (owner of GROUP_ID), TOKEN_B (member, USER_B), TOKEN_C (outsider, in
// OTHER_CONVERSATION_ID only) and USER_E (a user A adds to the group).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run this through cargo test (supabase_js_unread)`)
  return v
}
const url = env('RIPPLE_URL')
const anonKey = env('RIPPLE_ANON_KEY')
const group = env('GROUP_ID')

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

// The recipe: badges kept from the change stream, with list_conversations() only at start,
// after a deletion and after the read point moves.
function liveBadges(sb, me) {
  const state = new Map()
  const badges = { state, refreshes: 0, events: 0 }
  badges.of = (id) => {
    const s = state.get(id)
    return s ? s.counted - s.readCounted - s.sentSinceRead - s.offset : 0
  }
  badges.refresh = async () => {
    badges.refreshes += 1
    const rows = ok(await sb.rpc('list_conversations', { lim: 200 }), 'list_conversations')
    for (const c of rows) {
      state.set(c.id, {
        counted: c.counted_seq,
        lastSeq: c.last_seq,
        deleted: c.deleted_count,
        lastRead: c.last_read_seq,
        readCounted: c.read_counted_seq,
        sentSinceRead: c.sent_since_read,
        // Other members' deleted messages after the read point: what the counters alone
        // cannot know.
        offset: c.counted_seq - c.read_counted_seq - c.sent_since_read - c.unread_count,
      })
    }
  }
  badges.channel = sb
    .channel('badges')
    .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'conversations' }, ({ new: c }) => {
      badges.events += 1
      const s = state.get(c.id)
      if (!s) return
      if (c.deleted_count !== s.deleted) return badges.refresh()
      // Absolute values, so a late or repeated event cannot count twice.
      s.counted = Math.max(s.counted, c.counted_seq)
      s.lastSeq = Math.max(s.lastSeq, c.last_seq)
    })
    .on(
      'postgres_changes',
      { event: 'UPDATE', schema: 'public', table: 'conversation_members', filter: `user_id=eq.${me}` },
      ({ new: m }) => {
        badges.events += 1
        const s = state.get(m.conversation_id)
        if (!s) return
        if (m.last_read_seq !== s.lastRead) return badges.refresh()
        s.sentSinceRead = Math.max(s.sentSinceRead, m.sent_since_read)
      }
    )
  return badges
}

async function unreadFromServer(sb, conv) {
  const counts = ok(await sb.rpc('unread_counts'), 'unread_counts')
  return counts.by_conversation.find((e) => e.conversation_id === conv)?.unread_count ?? 0
}

test('a badge follows sends, own sends, edits, system messages, deletions and reads', async () => {
  const [A, B] = await Promise.all([client(env('TOKEN_A')), client(env('TOKEN_B'))])
  const badges = liveBadges(B, env('USER_B'))
  await live(badges.channel)
  await badges.refresh()
  assert.equal(badges.of(group), 0)

  const sent = []
  for (const body of ['one', 'two', 'three']) {
    sent.push(ok(await A.rpc('send_message', { conversation_id: group, body }), 'send'))
  }
  await waitFor('three unread from the stream', () => badges.of(group) === 3)
  assert.equal(await unreadFromServer(B, group), 3, 'the server agrees')

  // B's own message: the conversation's counter and B's own counter both move.
  ok(await B.rpc('send_message', { conversation_id: group, body: 'mine' }), 'own send')
  await waitFor('own counter', () => badges.state.get(group).sentSinceRead === 1)
  await waitFor('conversation counter', () => badges.state.get(group).counted === 4)
  assert.equal(badges.of(group), 3, 'one\'s own messages are not unread')

  // An edit and a system message (A adds E) change no badge.
  ok(await A.rpc('edit_message', { message_id: sent[2].id, body: 'three, edited' }), 'edit')
  const seqBefore = badges.state.get(group).lastSeq
  ok(await A.rpc('add_conversation_member', { conversation_id: group, user_id: env('USER_E') }), 'add')
  await waitFor('the system message', () => badges.state.get(group).lastSeq > seqBefore)
  assert.equal(badges.of(group), 3)
  assert.equal(await unreadFromServer(B, group), 3)
  assert.equal(badges.refreshes, 1, 'no list_conversations call since the start')

  // A deletion after B's read point: one refresh, one fewer unread.
  ok(await A.rpc('delete_message', { message_id: sent[0].id }), 'delete')
  await waitFor('the deletion', () => badges.of(group) === 2)
  assert.equal(await unreadFromServer(B, group), 2)

  // B reads: B's own row moves, the badge clears.
  ok(await B.rpc('mark_conversation_read', { conversation_id: group }), 'read')
  await waitFor('the read', () => badges.of(group) === 0)
  assert.equal(await unreadFromServer(B, group), 0)

  // And counting resumes from the new read point.
  ok(await A.rpc('send_message', { conversation_id: group, body: 'after the read' }), 'send 4')
  await waitFor('one new unread', () => badges.of(group) === 1)
  assert.equal(await unreadFromServer(B, group), 1)
  assert.equal(badges.refreshes, 3, 'start, the deletion, the read: nothing per message')
  await B.removeChannel(badges.channel)
})

test('an outsider receives no counter of a conversation it is not in', async () => {
  const [A, C] = await Promise.all([client(env('TOKEN_A')), client(env('TOKEN_C'))])
  const seen = []
  const ch = C.channel('outsider-badges')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'conversations' }, (p) => seen.push(p))
    .on('postgres_changes', { event: '*', schema: 'public', table: 'conversation_members' }, (p) =>
      seen.push(p)
    )
  await live(ch)
  ok(await A.rpc('send_message', { conversation_id: group, body: 'not for C' }), 'send')
  ok(await A.rpc('mark_conversation_read', { conversation_id: group }), 'A reads')
  // C's own conversation does reach C, so the subscription is live.
  ok(await C.rpc('send_message', { conversation_id: env('OTHER_CONVERSATION_ID'), body: 'mine' }), 'C sends')
  await waitFor('C\'s own conversation', () =>
    seen.some((p) => p.table === 'conversations' && p.new?.id === env('OTHER_CONVERSATION_ID'))
  )
  await sleep(500)
  const leaked = seen.filter((p) => (p.new?.id ?? p.new?.conversation_id ?? p.old?.conversation_id) === group)
  assert.deepEqual(leaked, [], 'nothing of the group reaches the outsider')
  assert.equal(await unreadFromServer(C, group), 0)
})
