// The chat screen: conversation list, one open conversation, side sheets.
//
// Everything goes through Ripple's public APIs with supabase-js: RPC for reads and writes
// (the SQL functions own the rules), one `postgres_changes` channel for what the database
// says changed (RLS decides what reaches us), and one private channel per conversation for
// typing (broadcast) and online dots (presence).

import {
  h, $, avatar, ICONS, micros, ms, shortTime, clock, dayLabel, lastSeen, toast, errorText,
  debounce, colorFor,
} from './ui.js';

/** Messages fetched per page of history. */
const PAGE = 30;
/** The database's default `message_edit_window`: past it the Edit action is not offered
 * (the server has the last word: a DBA may have changed the window). */
const EDIT_WINDOW_MS = 15 * 60 * 1000;
/** A typing peer sends at most this often... */
const TYPING_RESEND_MS = 2000;
/** ...stops after this much quiet... */
const TYPING_IDLE_MS = 3000;
/** ...and is forgotten after this long without news (a lost "stopped"). */
const TYPING_FORGET_MS = 6000;
const QUICK_REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
/** "Mute" lasts until the user unmutes. */
const MUTE_FOREVER = '9999-12-31T23:59:59Z';

export function startChat(sb, me, { signOut }) {
  const S = {
    tab: 'chats',
    /** id -> row of list_conversations */
    convs: new Map(),
    order: [],
    active: null,
    /** the open conversation's row (it may not be in the current tab's list) */
    activeConv: null,
    /** conversation id -> { items (oldest first), byId, hasMore, loading } */
    threads: new Map(),
    /** conversation id -> Map user id -> member row */
    members: new Map(),
    /** user id -> profile */
    profiles: new Map([[me.id, { id: me.id, display_name: me.name }]]),
    /** conversation id -> Set of user ids present on its channel */
    online: new Map(),
    /** conversation id -> Map user id -> { name, until } */
    typing: new Map(),
    /** conversation id -> private realtime channel */
    rooms: new Map(),
    joinedRooms: new Set(),
    reply: null,
    edit: null,
    selected: null,
    confirmDelete: null,
    newBelow: 0,
  };

  // ---------------------------------------------------------------- helpers

  const nameOf = (uid) => (uid === me.id ? 'You' : S.profiles.get(uid)?.display_name || 'Someone');
  const isOnline = (uid) => uid !== me.id && [...S.online.values()].some((set) => set.has(uid));
  const convOf = (id) => S.convs.get(id) || (S.activeConv?.id === id ? S.activeConv : null);
  const convName = (c) => (c.kind === 'direct' ? c.other_member?.display_name || 'Direct chat' : c.title || 'Group');
  const isMuted = (c) => c.muted_until && ms(c.muted_until) > Date.now();
  const visible = () => document.visibilityState === 'visible';
  const newId = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`);

  async function call(fn, args) {
    const { data, error } = await sb.rpc(fn, args);
    if (error) throw error;
    return data;
  }

  function typingNames(convId) {
    const t = S.typing.get(convId);
    if (!t) return [];
    const now = Date.now();
    return [...t.entries()].filter(([, v]) => v.until > now).map(([uid, v]) => S.profiles.get(uid)?.display_name || v.name);
  }

  // ---------------------------------------------------------------- the list

  async function loadList() {
    const { data, error } = await sb.rpc('list_conversations', { archived: S.tab === 'archived', lim: 100 });
    if (error) return toast(errorText(error));
    S.convs = new Map(data.map((c) => [c.id, c]));
    S.order = data.map((c) => c.id);
    for (const c of data) {
      if (c.other_member) rememberProfile(c.other_member);
      if (c.id === S.active) S.activeConv = c;
      // Unread messages reached this device: their senders get the delivered tick.
      if (Number(c.unread_count) > 0 && !(c.id === S.active && visible())) ack('delivered', c.id);
    }
    syncRooms();
    renderList();
    if (S.active) renderHeader();
  }
  const reloadList = debounce(loadList, 120);

  function rememberProfile(p) {
    S.profiles.set(p.id, { ...(S.profiles.get(p.id) || {}), ...p });
  }

  function renderList() {
    const items = S.order.map((id) => S.convs.get(id)).filter(Boolean).map(conversationItem);
    $('conversation-list').replaceChildren(...items);
    const empty = $('list-empty');
    empty.hidden = items.length > 0;
    empty.textContent = S.tab === 'archived' ? 'No archived chats.' : 'No chats yet. Start one with the New chat button.';
    document.title = titleWithUnread();
  }

  function titleWithUnread() {
    const n = [...S.convs.values()].filter((c) => !isMuted(c)).reduce((a, c) => a + Number(c.unread_count || 0), 0);
    return n > 0 ? `(${n}) Ripple Chat` : 'Ripple Chat';
  }

  function conversationItem(c) {
    const other = c.kind === 'direct' ? c.other_member : null;
    const name = convName(c);
    const unread = Number(c.unread_count || 0);
    const typers = typingNames(c.id);
    const muted = isMuted(c);
    const onlineNow = other ? isOnline(other.id) : false;
    let preview = c.last_message_preview || (c.kind === 'group' ? `${c.member_count} members` : 'No messages yet');
    const li = h('li', {
      class: `conversation${c.id === S.active ? ' active' : ''}${unread ? ' unread' : ''}${muted ? ' muted' : ''}`,
      'data-testid': 'conversation',
      'data-conversation-id': c.id,
      'data-online': onlineNow ? 'true' : 'false',
      role: 'button',
      tabindex: '0',
      onclick: () => openConversation(c.id),
      onkeydown: (e) => { if (e.key === 'Enter') openConversation(c.id); },
    },
    avatar(other?.id || c.id, name, { online: onlineNow }),
    h('div', { class: 'body' },
      h('div', { class: 'row' },
        h('span', { class: 'name', 'data-testid': 'conversation-name' }, name),
        h('span', { class: 'time' }, shortTime(c.last_message_at || c.created_at))),
      h('div', { class: 'row' },
        typers.length
          ? h('span', { class: 'preview typing-preview' }, c.kind === 'group' ? `${typers[0]} is typing…` : 'typing…')
          : h('span', { class: 'preview', 'data-testid': 'conversation-preview' }, preview),
        h('span', { class: 'flags' },
          c.pinned_at ? h('span', { title: 'Pinned', 'data-testid': 'pinned', html: ICONS.pin }) : null,
          muted ? h('span', { title: 'Muted', 'data-testid': 'muted', html: ICONS.muted }) : null,
          unread ? h('span', { class: 'unread-badge', 'data-testid': 'unread-badge' }, unread > 99 ? '99+' : String(unread)) : null))));
    return li;
  }

  // ---------------------------------------------------------------- one conversation

  async function openConversation(id) {
    S.active = id;
    S.activeConv = convOf(id);
    S.reply = S.edit = S.selected = S.confirmDelete = null;
    S.newBelow = 0;
    $('app').classList.add('in-chat');
    $('chat-empty').hidden = true;
    $('chat-pane').hidden = false;
    $('chat-menu').hidden = true;
    $('composer').value = '';
    renderContext();
    syncRooms();
    renderHeader();
    renderList();
    $('message-list').replaceChildren();
    $('history-top').textContent = 'Loading…';
    if (!S.activeConv) {
      // Opened from elsewhere (a new chat): fetch its row.
      await loadList();
      S.activeConv = convOf(id);
      if (!S.activeConv) {
        const { data } = await sb.rpc('list_conversations', { archived: true, lim: 200 });
        S.activeConv = (data || []).find((c) => c.id === id) || null;
      }
      renderHeader();
    }
    await Promise.all([loadMembers(id), S.threads.has(id) ? null : loadOlder(id, true)]);
    if (S.active !== id) return;
    renderMessages({ toBottom: true });
    markRead(id);
    if (window.matchMedia('(min-width: 761px)').matches) $('composer').focus();
  }

  function closeConversation() {
    S.active = null;
    S.activeConv = null;
    $('app').classList.remove('in-chat');
    $('chat-pane').hidden = true;
    $('chat-empty').hidden = false;
    syncRooms();
    renderList();
  }

  async function loadMembers(convId) {
    const { data, error } = await sb.from('conversation_members')
      .select('user_id, role, joined_at, last_read_at, last_delivered_at')
      .eq('conversation_id', convId);
    if (error) return toast(errorText(error));
    S.members.set(convId, new Map(data.map((m) => [m.user_id, m])));
    const unknown = data.map((m) => m.user_id).filter((u) => !S.profiles.has(u) || !('last_seen_at' in S.profiles.get(u)));
    if (unknown.length) {
      const { data: people } = await sb.from('profiles').select('id, display_name, avatar_url, last_seen_at').in('id', unknown);
      for (const p of people || []) rememberProfile(p);
    }
    if (convId === S.active) { renderHeader(); renderMessages(); }
  }

  /** Fetches the page before the oldest loaded message (or the newest page). */
  async function loadOlder(convId, first = false) {
    let t = S.threads.get(convId);
    if (!t) {
      t = { items: [], byId: new Map(), hasMore: true, loading: false };
      S.threads.set(convId, t);
    }
    if (t.loading || !t.hasMore) return;
    t.loading = true;
    const before = first ? null : t.items.find((m) => !m.pending)?.id ?? null;
    const { data, error } = await sb.rpc('get_messages', { conversation_id: convId, lim: PAGE, before_id: before });
    t.loading = false;
    if (error) { toast(errorText(error)); return; }
    t.hasMore = data.length === PAGE;
    for (const m of data) {
      if (m.sender_id) rememberProfile({ id: m.sender_id, display_name: m.sender_display_name });
      insertMessage(t, m);
    }
  }

  function insertMessage(t, m) {
    const existing = t.byId.get(m.id);
    if (existing) {
      Object.assign(existing, m, { reactions: m.reactions ?? existing.reactions });
      return existing;
    }
    if (m.client_id && m.sender_id === me.id) {
      const pending = t.byId.get(`pending-${m.client_id}`);
      if (pending) {
        t.byId.delete(pending.id);
        t.items.splice(t.items.indexOf(pending), 1);
      }
    }
    const row = { reactions: [], ...m };
    t.byId.set(row.id, row);
    const key = micros(row.created_at);
    let i = t.items.length;
    while (i > 0 && micros(t.items[i - 1].created_at) > key) i--;
    t.items.splice(i, 0, row);
    return row;
  }

  function renderHeader() {
    const c = S.activeConv;
    if (!c) {
      // Still fetching the row of a conversation just started: show no stale header.
      $('chat-name').textContent = '';
      $('presence').textContent = '';
      $('typing').hidden = true;
      $('chat-pane').dataset.room = 'joining';
      return;
    }
    const other = c.kind === 'direct' ? c.other_member : null;
    const name = convName(c);
    $('chat-avatar').replaceWith(Object.assign(avatar(other?.id || c.id, name, { size: 'sm', online: other ? isOnline(other.id) : false }), { id: 'chat-avatar' }));
    $('chat-name').textContent = name;
    const typers = typingNames(c.id);
    const typing = $('typing');
    typing.hidden = typers.length === 0;
    typing.textContent = typers.length === 0 ? ''
      : c.kind === 'direct' ? 'typing…'
        : typers.length === 1 ? `${typers[0]} is typing…` : `${typers.length} people are typing…`;
    const presence = $('presence');
    if (other) {
      const on = isOnline(other.id);
      presence.textContent = on ? 'online' : lastSeen(S.profiles.get(other.id)?.last_seen_at ?? other.last_seen_at);
      presence.className = `presence${on ? ' online' : ''}`;
      presence.dataset.online = on ? 'true' : 'false';
    } else {
      const members = S.members.get(c.id);
      const total = members?.size ?? c.member_count;
      const on = members ? [...members.keys()].filter(isOnline).length : 0;
      presence.textContent = `${total} members${on ? `, ${on} online` : ''}`;
      presence.className = 'presence';
      presence.dataset.online = on ? 'true' : 'false';
    }
    $('chat-pane').dataset.room = S.joinedRooms.has(c.id) ? 'joined' : 'joining';
    const menu = $('chat-menu');
    menu.querySelector('[data-action=pin]').textContent = c.pinned_at ? 'Unpin' : 'Pin';
    menu.querySelector('[data-action=mute]').textContent = isMuted(c) ? 'Unmute' : 'Mute';
    menu.querySelector('[data-action=archive]').textContent = c.archived_at ? 'Unarchive' : 'Archive';
    menu.querySelector('[data-action=leave]').hidden = c.kind !== 'group';
  }

  /** Where my message stands: read or delivered once every other member got that far. */
  function tickStatus(m) {
    const members = S.members.get(m.conversation_id);
    if (!members) return 'sent';
    const others = [...members.values()].filter((x) => x.user_id !== me.id);
    if (!others.length) return 'sent';
    const t = micros(m.created_at);
    if (others.every((o) => (micros(o.last_read_at) ?? -Infinity) >= t)) return 'read';
    if (others.every((o) => Math.max(micros(o.last_read_at) ?? -Infinity, micros(o.last_delivered_at) ?? -Infinity) >= t)) return 'delivered';
    return 'sent';
  }

  function canEdit(m) {
    return m.sender_id === me.id && !m.deleted_at && !m.pending && m.kind === 'text' && Date.now() - ms(m.created_at) < EDIT_WINDOW_MS;
  }

  function canDelete(m) {
    if (m.deleted_at || m.pending || m.kind === 'system') return false;
    if (m.sender_id === me.id) return true;
    const role = S.members.get(m.conversation_id)?.get(me.id)?.role;
    return S.activeConv?.kind === 'group' && (role === 'owner' || role === 'admin');
  }

  function renderMessages({ toBottom = false, keepFromBottom = null } = {}) {
    const box = $('messages');
    const t = S.threads.get(S.active);
    if (!t) return;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const fromBottom = box.scrollHeight - box.scrollTop;
    const nodes = [];
    let prev = null;
    const group = S.activeConv?.kind === 'group';
    for (const m of t.items) {
      const day = dayLabel(m.created_at);
      if (!prev || dayLabel(prev.created_at) !== day) nodes.push(h('li', { class: 'day' }, day));
      nodes.push(messageItem(m, prev, group));
      prev = m;
    }
    $('message-list').replaceChildren(...nodes);
    $('history-top').textContent = t.hasMore ? (t.loading ? 'Loading…' : '') : (t.items.length ? 'This is the beginning of the conversation' : 'No messages yet. Say hi!');
    if (toBottom || (atBottom && keepFromBottom === null)) {
      box.scrollTop = box.scrollHeight;
      S.newBelow = 0;
    } else if (keepFromBottom !== null) {
      box.scrollTop = box.scrollHeight - keepFromBottom;
    } else {
      box.scrollTop = box.scrollHeight - fromBottom;
    }
    renderJump();
  }

  function renderJump() {
    const box = $('messages');
    const far = box.scrollHeight - box.scrollTop - box.clientHeight > 200;
    $('jump').hidden = !far;
    $('jump-count').textContent = S.newBelow ? String(S.newBelow) : '';
  }

  function messageItem(m, prev, group) {
    if (m.kind === 'system') {
      return h('li', { class: 'system-line', 'data-testid': 'message', 'data-message-id': m.id, 'data-kind': 'system' }, m.body);
    }
    const mine = m.sender_id === me.id;
    const gap = prev ? ms(m.created_at) - ms(prev.created_at) : Infinity;
    const first = !prev || prev.sender_id !== m.sender_id || prev.kind === 'system' || gap > 5 * 60e3 || dayLabel(prev.created_at) !== dayLabel(m.created_at);
    const deleted = !!m.deleted_at;
    const selected = S.selected === m.id;
    const t = S.threads.get(m.conversation_id);
    let quote = null;
    if (m.reply_to_id && !deleted) {
      const q = t?.byId.get(m.reply_to_id);
      quote = h('div', { class: 'quote', 'data-testid': 'reply-quote', onclick: (e) => { e.stopPropagation(); flashMessage(m.reply_to_id); } },
        h('b', {}, q ? nameOf(q.sender_id) : 'Reply'),
        h('span', {}, q ? (q.deleted_at ? 'Message deleted' : q.body) : 'An earlier message'));
    }
    const status = mine && !m.pending ? tickStatus(m) : null;
    const meta = h('span', { class: 'meta' },
      m.edited_at && !deleted ? h('span', { 'data-testid': 'edited' }, 'edited') : null,
      h('time', { datetime: m.created_at, title: new Date(ms(m.created_at)).toLocaleString() }, clock(new Date(ms(m.created_at)))),
      mine && !deleted ? h('span', {
        class: `ticks ${status || 'pending'}`,
        'data-testid': 'ticks',
        'data-status': status || 'pending',
        title: status || 'sending',
        html: m.pending ? ICONS.clock : status === 'sent' ? ICONS.sent : ICONS.double,
      }) : null);
    const bubble = h('div', {
      class: 'bubble',
      onclick: () => { S.selected = selected ? null : m.id; S.confirmDelete = null; renderMessages(); },
    },
    group && !mine && first ? h('span', { class: 'sender', style: { '--c': colorFor(m.sender_id) } }, nameOf(m.sender_id)) : null,
    quote,
    h('span', { class: 'text', 'data-testid': 'message-text' }, deleted ? 'This message was deleted' : m.body),
    meta);
    const reactions = (m.reactions || []).filter((r) => r.count > 0);
    return h('li', {
      class: `message${mine ? ' mine' : ''}${first ? ' first' : ''}${deleted ? ' deleted' : ''}${m.pending ? ' pending' : ''}${selected ? ' selected' : ''}`,
      'data-testid': 'message',
      'data-message-id': m.id,
      'data-mine': mine ? 'true' : 'false',
      'data-deleted': deleted ? 'true' : 'false',
    },
    bubble,
    reactions.length && !deleted ? h('div', { class: 'reactions' }, reactions.map((r) => h('button', {
      class: `reaction${r.mine ? ' mine' : ''}`,
      'data-testid': 'reaction',
      'data-emoji': r.emoji,
      title: r.mine ? 'Remove your reaction' : 'React',
      onclick: () => toggleReaction(m, r.emoji),
    }, `${r.emoji} ${r.count}`))) : null,
    selected && !deleted && !m.pending ? actionBar(m) : null);
  }

  function actionBar(m) {
    const mine = (r) => (m.reactions || []).some((x) => x.emoji === r && x.mine);
    return h('div', { class: 'actions', 'data-testid': 'message-actions' },
      QUICK_REACTIONS.map((r) => h('button', { class: 'emoji', title: `React ${r}`, 'data-testid': 'react', 'data-emoji': r, onclick: () => toggleReaction(m, r, mine(r)) }, r)),
      h('span', { class: 'sep' }),
      h('button', { 'data-testid': 'reply', onclick: () => startReply(m) }, 'Reply'),
      canEdit(m) ? h('button', { 'data-testid': 'edit', onclick: () => startEdit(m) }, 'Edit') : null,
      canDelete(m) ? (S.confirmDelete === m.id
        ? h('button', { class: 'danger', 'data-testid': 'confirm-delete', onclick: () => deleteMessage(m) }, 'Delete for everyone?')
        : h('button', { class: 'danger', 'data-testid': 'delete', onclick: () => { S.confirmDelete = m.id; renderMessages(); } }, 'Delete')) : null);
  }

  function flashMessage(id) {
    const el = document.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
    if (!el) return toast('That message is further back in the history.');
    el.scrollIntoView({ block: 'center', behavior: 'smooth' });
    el.classList.add('flash');
    setTimeout(() => el.classList.remove('flash'), 1300);
  }

  // ---------------------------------------------------------------- writing

  function renderContext() {
    const box = $('compose-context');
    const m = S.edit || S.reply;
    box.hidden = !m;
    if (!m) return;
    $('compose-context-title').textContent = S.edit ? 'Edit message' : `Reply to ${nameOf(m.sender_id)}`;
    $('compose-context-body').textContent = m.body || '';
  }

  function startReply(m) {
    S.reply = m;
    S.edit = null;
    S.selected = null;
    renderContext();
    renderMessages();
    $('composer').focus();
  }

  function startEdit(m) {
    S.edit = m;
    S.reply = null;
    S.selected = null;
    $('composer').value = m.body;
    autosize();
    renderContext();
    renderMessages();
    $('composer').focus();
  }

  function cancelContext() {
    if (S.edit) $('composer').value = '';
    S.edit = S.reply = null;
    autosize();
    renderContext();
  }

  async function submit() {
    const input = $('composer');
    const body = input.value.trim();
    const convId = S.active;
    if (!body || !convId) return;
    sendTyping(false);
    if (S.edit) {
      const m = S.edit;
      S.edit = null;
      input.value = '';
      autosize();
      renderContext();
      if (body === m.body) return;
      try {
        const row = await call('edit_message', { message_id: m.id, body });
        const t = S.threads.get(row.conversation_id);
        if (t) insertMessage(t, row);
        if (S.active === row.conversation_id) renderMessages();
      } catch (e) {
        toast(errorText(e));
      }
      return;
    }
    const replyTo = S.reply;
    S.reply = null;
    renderContext();
    input.value = '';
    autosize();
    const clientId = newId();
    const t = S.threads.get(convId);
    const pending = {
      id: `pending-${clientId}`, client_id: clientId, conversation_id: convId, sender_id: me.id, kind: 'text',
      body, reply_to_id: replyTo?.id ?? null, created_at: new Date().toISOString(), pending: true, reactions: [],
    };
    if (t) { insertMessage(t, pending); renderMessages({ toBottom: true }); }
    try {
      const row = await call('send_message', { conversation_id: convId, body, reply_to_id: replyTo?.id ?? null, client_id: clientId });
      if (t) insertMessage(t, row);
    } catch (e) {
      if (t && t.byId.has(pending.id)) {
        t.byId.delete(pending.id);
        t.items.splice(t.items.indexOf(pending), 1);
      }
      if (!input.value) input.value = body;
      toast(errorText(e));
      // Removed from a group: the change stream cannot tell us (we no longer may see the
      // membership row), the refused write does.
      if (e.code === '42501' || e.code === 'P0002') {
        await loadList();
        if (S.active === convId && !S.convs.has(convId)) closeConversation();
      }
    }
    if (S.active === convId) renderMessages({ toBottom: true });
  }

  async function deleteMessage(m) {
    S.selected = S.confirmDelete = null;
    try {
      await call('delete_message', { message_id: m.id });
      m.deleted_at = m.deleted_at || new Date().toISOString();
      m.body = null;
    } catch (e) {
      toast(errorText(e));
    }
    renderMessages();
  }

  async function toggleReaction(m, emoji, mine = (m.reactions || []).some((r) => r.emoji === emoji && r.mine)) {
    S.selected = null;
    renderMessages();
    try {
      await call(mine ? 'unreact' : 'react', { message_id: m.id, emoji });
    } catch (e) {
      toast(errorText(e));
    }
  }

  // Read and delivered receipts: one call per conversation at a time, coalesced.
  const ackTimers = new Map();
  function ack(kind, convId) {
    const key = `${kind}:${convId}`;
    if (ackTimers.has(key)) return;
    ackTimers.set(key, setTimeout(async () => {
      ackTimers.delete(key);
      try {
        await call(kind === 'read' ? 'mark_conversation_read' : 'mark_conversation_delivered', { conversation_id: convId });
      } catch (e) {
        console.warn(`could not mark ${kind}`, errorText(e));
      }
    }, 50));
  }

  function markRead(convId) {
    const c = convOf(convId);
    if (c && Number(c.unread_count)) {
      c.unread_count = 0;
      renderList();
    }
    ack('read', convId);
  }

  // Typing: a broadcast on the conversation's private channel, never a database write.
  let typingSentAt = 0;
  let typingIdle = null;
  let typingConv = null;
  function sendTyping(typing) {
    const convId = typing ? S.active : typingConv;
    clearTimeout(typingIdle);
    if (!convId) return;
    const room = S.rooms.get(convId);
    if (!typing) {
      if (typingSentAt && room && S.joinedRooms.has(convId)) {
        room.send({ type: 'broadcast', event: 'typing', payload: { user_id: me.id, name: me.name, typing: false } });
      }
      typingSentAt = 0;
      typingConv = null;
      return;
    }
    if (room && S.joinedRooms.has(convId) && Date.now() - typingSentAt > TYPING_RESEND_MS) {
      room.send({ type: 'broadcast', event: 'typing', payload: { user_id: me.id, name: me.name, typing: true } });
      typingSentAt = Date.now();
      typingConv = convId;
    }
    typingIdle = setTimeout(() => sendTyping(false), TYPING_IDLE_MS);
  }

  function onTyping(convId, { user_id: uid, name, typing }) {
    if (!uid || uid === me.id) return;
    let t = S.typing.get(convId);
    if (!t) S.typing.set(convId, (t = new Map()));
    if (typing) t.set(uid, { name, until: Date.now() + TYPING_FORGET_MS });
    else t.delete(uid);
    refreshTyping(convId);
    setTimeout(() => refreshTyping(convId), TYPING_FORGET_MS + 50);
  }

  function refreshTyping(convId) {
    if (convId === S.active) renderHeader();
    renderList();
  }

  // ---------------------------------------------------------------- realtime

  /** One private channel per listed (and the open) conversation: typing and presence. */
  function syncRooms() {
    const want = new Set(S.order);
    if (S.active) want.add(S.active);
    for (const [id, room] of S.rooms) {
      if (!want.has(id)) {
        sb.removeChannel(room);
        S.rooms.delete(id);
        S.joinedRooms.delete(id);
        S.online.delete(id);
      }
    }
    for (const id of want) {
      if (S.rooms.has(id)) continue;
      const room = sb.channel(`conversation:${id}`, {
        config: { private: true, broadcast: { self: false }, presence: { key: me.id } },
      });
      room
        .on('broadcast', { event: 'typing' }, ({ payload }) => onTyping(id, payload || {}))
        .on('presence', { event: 'sync' }, () => {
          S.online.set(id, new Set(Object.keys(room.presenceState())));
          renderPresence();
        })
        .subscribe(async (status) => {
          if (status === 'SUBSCRIBED') {
            S.joinedRooms.add(id);
            await room.track({ user_id: me.id, online_at: new Date().toISOString() });
          } else {
            S.joinedRooms.delete(id);
          }
          if (id === S.active) renderHeader();
        });
      S.rooms.set(id, room);
    }
  }

  const renderPresence = debounce(() => {
    renderList();
    if (S.active) renderHeader();
  }, 30);

  let streamed = false;
  function subscribeChanges() {
    const db = sb.channel('chat-changes')
      .on('postgres_changes', { event: '*', schema: 'public', table: 'messages' }, onMessageChange)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'message_reactions' }, onReactionChange)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'conversation_members' }, onMemberChange)
      .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'conversations' }, onConversationChange)
      .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'profiles' }, ({ new: p }) => {
        if (!p?.id) return;
        rememberProfile(p);
        renderPresence();
      })
      .on('system', {}, (m) => {
        if (m?.extension === 'postgres_changes' && m?.status === 'ok') {
          // After a reconnect the stream may have moved on without us: read again.
          if (streamed) resync();
          streamed = true;
          document.body.dataset.live = 'true';
        }
      })
      .subscribe((status) => {
        if (status !== 'SUBSCRIBED') document.body.dataset.live = 'false';
      });
    return db;
  }

  function resync() {
    S.threads.clear();
    loadList();
    if (S.active) {
      const id = S.active;
      Promise.all([loadMembers(id), loadOlder(id, true)]).then(() => S.active === id && renderMessages());
    }
  }

  function onMessageChange({ eventType, new: row }) {
    if (eventType === 'DELETE' || !row?.id) return;
    const convId = row.conversation_id;
    const t = S.threads.get(convId);
    if (t) {
      const existed = t.byId.has(row.id);
      insertMessage(t, row);
      if (convId === S.active) {
        const box = $('messages');
        const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
        if (!existed && row.sender_id !== me.id && !atBottom) S.newBelow++;
        renderMessages();
      }
    }
    if (eventType === 'INSERT' && row.sender_id && row.sender_id !== me.id) {
      // The sender stopped typing by sending.
      S.typing.get(convId)?.delete(row.sender_id);
      const c = S.convs.get(convId);
      const reading = convId === S.active && visible();
      if (c) {
        c.last_message_preview = row.body;
        c.last_message_at = row.created_at;
        if (!reading) c.unread_count = Number(c.unread_count || 0) + 1;
        S.order = [...S.order].sort((a, b) => rank(S.convs.get(b)) - rank(S.convs.get(a)));
        renderList();
      }
      if (reading) ack('read', convId);
      else ack('delivered', convId);
      if (convId === S.active) renderHeader();
    }
    // The server's list is the truth for counts, previews and order.
    reloadList();
  }

  /** Pinned first, then by activity: the order list_conversations uses. */
  function rank(c) {
    if (!c) return -Infinity;
    const pinned = c.pinned_at ? 1e18 + ms(c.pinned_at) : 0;
    return pinned + (ms(c.last_message_at || c.created_at) || 0);
  }

  function onReactionChange({ eventType, new: row, old }) {
    const r = eventType === 'DELETE' ? old : row;
    if (!r?.message_id) return;
    const m = S.threads.get(r.conversation_id)?.byId.get(r.message_id);
    if (!m) return;
    m.reactions = m.reactions || [];
    let agg = m.reactions.find((x) => x.emoji === r.emoji);
    if (eventType === 'INSERT') {
      if (!agg) m.reactions.push((agg = { emoji: r.emoji, count: 0, mine: false }));
      agg.count++;
      if (r.user_id === me.id) agg.mine = true;
    } else if (eventType === 'DELETE' && agg) {
      agg.count--;
      if (r.user_id === me.id) agg.mine = false;
      if (agg.count <= 0) m.reactions = m.reactions.filter((x) => x !== agg);
    }
    if (r.conversation_id === S.active) renderMessages();
  }

  function onMemberChange({ eventType, new: row, old }) {
    const r = eventType === 'DELETE' ? old : row;
    if (!r?.conversation_id) return;
    const members = S.members.get(r.conversation_id);
    if (members) {
      if (eventType === 'DELETE') members.delete(r.user_id);
      else members.set(r.user_id, { ...(members.get(r.user_id) || {}), ...r });
      if (r.conversation_id === S.active) {
        if (!S.profiles.has(r.user_id)) loadMembers(r.conversation_id);
        renderHeader();
        renderMessages();
        if (sheetFor === r.conversation_id) showInfo();
      }
    }
    if (r.user_id === me.id || eventType !== 'UPDATE') reloadList();
  }

  function onConversationChange({ new: row }) {
    const c = convOf(row?.id);
    if (!c) return reloadList();
    Object.assign(c, {
      title: row.title, description: row.description, last_message_at: row.last_message_at,
      last_message_preview: row.last_message_preview, last_message_id: row.last_message_id,
    });
    renderList();
    if (row.id === S.active) renderHeader();
  }

  // ---------------------------------------------------------------- sheets

  let sheetFor = null;
  function openSheet(title, ...content) {
    $('sheet-title').textContent = title;
    $('sheet-body').replaceChildren(...content);
    $('sheet').hidden = false;
    $('sheet-backdrop').hidden = false;
    $('sheet-body').querySelector('[data-autofocus]')?.focus();
  }
  function closeSheet() {
    sheetFor = null;
    $('sheet').hidden = true;
    $('sheet-backdrop').hidden = true;
  }

  /** A search box over profiles; `pick(profile)` is called on a click. */
  function peopleSearch({ placeholder, exclude = () => false, pick }) {
    const results = h('ul', { class: 'people', 'data-testid': 'search-results' });
    const input = h('input', { type: 'search', 'data-testid': 'user-search', placeholder, autocomplete: 'off' });
    let seq = 0;
    const run = debounce(async () => {
      const q = input.value.trim();
      const mine = ++seq;
      let query = sb.from('profiles').select('id, display_name, avatar_url, last_seen_at').neq('id', me.id).order('display_name').limit(30);
      if (q) query = query.ilike('display_name', `%${q.replace(/[%_\\]/g, (c) => `\\${c}`)}%`);
      const { data, error } = await query;
      if (mine !== seq) return;
      if (error) return toast(errorText(error));
      const people = (data || []).filter((p) => !exclude(p.id));
      results.replaceChildren(...(people.length ? people.map((p) => {
        rememberProfile(p);
        return h('li', { class: 'person pick', 'data-testid': 'user-result', 'data-user-id': p.id, onclick: () => pick(p) },
          avatar(p.id, p.display_name, { size: 'sm', online: isOnline(p.id) }),
          h('div', { class: 'who' }, h('b', {}, p.display_name || 'Unnamed'), h('span', {}, isOnline(p.id) ? 'online' : lastSeen(p.last_seen_at) || ' ')));
      }) : [h('li', { class: 'muted small' }, q ? `Nobody called “${q}”.` : 'Nobody else is here yet.')]));
    }, 150);
    input.addEventListener('input', run);
    run();
    return { input, results };
  }

  function showNewDirect() {
    const { input, results } = peopleSearch({
      placeholder: 'Search people by name',
      pick: async (p) => {
        try {
          const id = await call('start_direct_conversation', { other_user_id: p.id });
          closeSheet();
          if (S.tab !== 'chats') setTab('chats');
          openConversation(id);
        } catch (e) {
          toast(errorText(e));
        }
      },
    });
    input.dataset.autofocus = '';
    openSheet('New chat', input, results);
  }

  function showNewGroup() {
    const chosen = new Map();
    const chips = h('div', { class: 'chips' });
    const title = h('input', { 'data-testid': 'group-title', placeholder: 'Group name', maxlength: '200', 'data-autofocus': true });
    const create = h('button', { class: 'primary', 'data-testid': 'create-group', onclick: async () => {
      if (!title.value.trim()) { title.focus(); return toast('Give the group a name.'); }
      create.disabled = true;
      try {
        const id = await call('create_group_conversation', { title: title.value.trim(), member_ids: [...chosen.keys()] });
        closeSheet();
        if (S.tab !== 'chats') setTab('chats');
        openConversation(id);
      } catch (e) {
        toast(errorText(e));
        create.disabled = false;
      }
    } }, 'Create group');
    const drawChips = () => chips.replaceChildren(...[...chosen.values()].map((p) => h('button', {
      class: 'chip', title: 'Remove', onclick: () => { chosen.delete(p.id); drawChips(); },
    }, p.display_name, h('span', { 'aria-hidden': 'true' }, '✕'))));
    const { input, results } = peopleSearch({
      placeholder: 'Add people',
      exclude: (id) => chosen.has(id),
      pick: (p) => {
        chosen.set(p.id, p);
        drawChips();
        results.querySelector(`[data-user-id="${CSS.escape(p.id)}"]`)?.remove();
        input.value = '';
        input.dispatchEvent(new Event('input'));
      },
    });
    openSheet('New group', title, h('h3', {}, 'Members'), chips, input, results, create);
  }

  async function showInfo() {
    const c = S.activeConv;
    if (!c) return;
    sheetFor = c.id;
    const members = [...(S.members.get(c.id)?.values() || [])];
    const myRole = S.members.get(c.id)?.get(me.id)?.role;
    const admin = myRole === 'owner' || myRole === 'admin';
    const other = c.kind === 'direct' ? c.other_member : null;
    const name = convName(c);
    const roleRank = { owner: 0, admin: 1, member: 2 };
    members.sort((a, b) => roleRank[a.role] - roleRank[b.role] || nameOf(a.user_id).localeCompare(nameOf(b.user_id)));
    const list = h('ul', { class: 'people', 'data-testid': 'member-list' }, members.map((m) => {
      const removable = c.kind === 'group' && m.user_id !== me.id && (myRole === 'owner' || (myRole === 'admin' && m.role === 'member'));
      return h('li', { class: 'person', 'data-testid': 'member', 'data-user-id': m.user_id },
        avatar(m.user_id, m.user_id === me.id ? me.name : nameOf(m.user_id), { size: 'sm', online: isOnline(m.user_id) }),
        h('div', { class: 'who' },
          h('b', {}, m.user_id === me.id ? `${me.name} (you)` : nameOf(m.user_id)),
          h('span', {}, isOnline(m.user_id) ? 'online' : lastSeen(S.profiles.get(m.user_id)?.last_seen_at) || ' ')),
        m.role !== 'member' ? h('span', { class: 'role' }, m.role) : null,
        removable ? h('button', { class: 'danger-btn', 'data-testid': 'remove-member', onclick: async () => {
          try {
            await call('remove_conversation_member', { conversation_id: c.id, user_id: m.user_id });
            await loadMembers(c.id);
            showInfo();
          } catch (e) {
            toast(errorText(e));
          }
        } }, 'Remove') : null);
    }));
    const parts = [
      h('div', { class: 'info-hero' },
        avatar(other?.id || c.id, name),
        h('h2', {}, name),
        h('span', { class: 'muted' }, other ? (isOnline(other.id) ? 'online' : lastSeen(S.profiles.get(other.id)?.last_seen_at)) : `Group · ${members.length} members`),
        c.description ? h('p', {}, c.description) : null),
      h('h3', {}, `${members.length} members`),
      list,
    ];
    if (c.kind === 'group' && admin) {
      const { input, results } = peopleSearch({
        placeholder: 'Add a member',
        exclude: (id) => S.members.get(c.id)?.has(id),
        pick: async (p) => {
          try {
            await call('add_conversation_member', { conversation_id: c.id, user_id: p.id });
            await loadMembers(c.id);
            showInfo();
          } catch (e) {
            toast(errorText(e));
          }
        },
      });
      parts.push(h('h3', {}, 'Add members'), input, results);
    }
    openSheet(c.kind === 'group' ? 'Group info' : 'Contact info', ...parts);
  }

  function showProfile() {
    const name = h('input', { value: me.name, maxlength: '100', 'data-testid': 'profile-name' });
    const save = h('button', { class: 'primary', onclick: async () => {
      const display = name.value.trim();
      if (!display) return;
      const { error } = await sb.from('profiles').update({ display_name: display }).eq('id', me.id);
      if (error) return toast(errorText(error));
      me.name = display;
      renderMe();
      closeSheet();
    } }, 'Save');
    openSheet('Profile',
      h('div', { class: 'info-hero' }, avatar(me.id, me.name), h('h2', {}, me.name), me.email ? h('span', { class: 'muted' }, me.email) : null),
      h('h3', {}, 'Your name'), name, save);
  }

  // ---------------------------------------------------------------- conversation menu

  async function menuAction(action) {
    $('chat-menu').hidden = true;
    const c = S.activeConv;
    if (!c) return;
    try {
      if (action === 'info') return showInfo();
      if (action === 'pin') await call('set_pinned', { conversation_id: c.id, pinned: !c.pinned_at });
      if (action === 'mute') await call('set_muted', { conversation_id: c.id, until: isMuted(c) ? null : MUTE_FOREVER });
      if (action === 'archive') {
        await call('set_archived', { conversation_id: c.id, archived: !c.archived_at });
        toast(c.archived_at ? 'Chat unarchived' : 'Chat archived');
      }
      if (action === 'leave') {
        await call('leave_conversation', { conversation_id: c.id });
        closeConversation();
      }
    } catch (e) {
      toast(errorText(e));
    }
    await loadList();
    // Archiving moves the chat out of this tab's list; keep the row's new state.
    if (S.active === c.id && !S.convs.has(c.id)) {
      const { data } = await sb.rpc('list_conversations', { archived: S.tab !== 'archived', lim: 200 });
      S.activeConv = (data || []).find((x) => x.id === c.id) || S.activeConv;
      renderHeader();
    }
  }

  function setTab(tab) {
    S.tab = tab;
    $('tab-chats').classList.toggle('active', tab === 'chats');
    $('tab-archived').classList.toggle('active', tab === 'archived');
    loadList();
  }

  // ---------------------------------------------------------------- wiring

  function autosize() {
    const el = $('composer');
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, 140)}px`;
  }

  function renderMe() {
    $('me').replaceChildren(avatar(me.id, me.name, { size: 'sm' }), h('span', { 'data-testid': 'me' }, me.name));
  }

  $('me').onclick = showProfile;
  $('new-direct').onclick = showNewDirect;
  $('new-group').onclick = showNewGroup;
  $('sign-out').onclick = signOut;
  $('tab-chats').onclick = () => setTab('chats');
  $('tab-archived').onclick = () => setTab('archived');
  $('back').onclick = closeConversation;
  $('chat-title-btn').onclick = showInfo;
  $('sheet-close').onclick = closeSheet;
  $('sheet-backdrop').onclick = closeSheet;
  $('chat-menu-btn').onclick = (e) => { e.stopPropagation(); $('chat-menu').hidden = !$('chat-menu').hidden; };
  $('chat-menu').onclick = (e) => { const a = e.target.closest('button')?.dataset.action; if (a) menuAction(a); };
  document.addEventListener('click', (e) => { if (!e.target.closest('.menu-wrap')) $('chat-menu').hidden = true; });
  $('compose-context-cancel').onclick = cancelContext;
  $('composer-form').onsubmit = (e) => { e.preventDefault(); submit(); };
  $('composer').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    if (e.key === 'Escape') cancelContext();
  });
  $('composer').addEventListener('input', () => {
    autosize();
    if ($('composer').value.trim()) sendTyping(true);
    else sendTyping(false);
  });
  $('messages').addEventListener('scroll', () => {
    const box = $('messages');
    if (box.scrollTop < 120 && S.active) {
      const id = S.active;
      const t = S.threads.get(id);
      if (t && t.hasMore && !t.loading) {
        const keep = box.scrollHeight - box.scrollTop;
        $('history-top').textContent = 'Loading…';
        loadOlder(id).then(() => S.active === id && renderMessages({ keepFromBottom: keep }));
      }
    }
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) S.newBelow = 0;
    renderJump();
  });
  $('jump').onclick = () => { const box = $('messages'); box.scrollTop = box.scrollHeight; S.newBelow = 0; renderJump(); };
  document.addEventListener('visibilitychange', () => {
    if (visible() && S.active) markRead(S.active);
    if (visible()) reloadList();
  });
  // Keep "last seen 3 min ago" true.
  setInterval(() => { if (S.active) renderHeader(); }, 30e3);

  renderMe();
  subscribeChanges();
  loadList();
  return { openConversation };
}
