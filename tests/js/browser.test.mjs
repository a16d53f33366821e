// The web chat app (web/) in real Chromium, driven by playwright-core, against a real
// Ripple and PostgreSQL (started by tests/tests/it/browser_app.rs). Everything goes through
// the app's stable hooks (data-testid), as a person would: sign up, find someone, chat.
//
// Alice uses a desktop-sized window, Bob a phone-sized one, Carol is the outsider.
// The tests run in order and share the three pages.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';

const BASE = process.env.RIPPLE_URL;
const SHOTS = process.env.SCREENSHOT_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'ripple-shots-'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
/** "each message appears on the other side within a second" */
const LIVE_MS = 1000;
const run = Date.now().toString(36);

let browser;
const people = {};

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`screenshot: ${file}`);
}

async function openPage(name, viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  // A step that has not happened in 5 s is a failure, not something to wait 30 s for.
  context.setDefaultTimeout(5000);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(BASE + '/');
  return { name, context, page, errors };
}

/** Signs up through the form: email and password, then "Create account". */
async function signUp(who) {
  const { page } = who;
  who.email = `${who.name.toLowerCase()}-${run}@example.com`;
  await page.getByTestId('email').fill(who.email);
  await page.getByTestId('password').fill(`pw-${run}-${who.name}!`);
  await page.getByTestId('sign-up').click();
  await page.waitForSelector('body[data-live=true]', { timeout: 10_000 });
  who.id = await page.evaluate(() => document.body.dataset.userId);
  who.displayName = await page.getByTestId('me').textContent();
}

const messages = (who) => who.page.locator('[data-testid=message]');
const messageWith = (who, text) => who.page.locator('[data-testid=message]', { hasText: text });

/**
 * Opens the action bar of the message showing `text` (a tap on its text). Retried: a
 * message arriving at that moment can move the list under the pointer, as under a finger.
 */
async function openActions(who, text) {
  const message = messageWith(who, text);
  for (let attempt = 0; ; attempt++) {
    await message.getByTestId('message-text').click();
    try {
      await message.getByTestId('message-actions').waitFor({ timeout: 1000 });
      return message;
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

/** Sends `text` from `from` and returns how long `to` took to show it. */
async function sendAndTime(from, to, text) {
  await from.page.getByTestId('composer').fill(text);
  const started = Date.now();
  await from.page.getByTestId('send').click();
  await messageWith(to, text).waitFor({ timeout: LIVE_MS });
  return Date.now() - started;
}

before(async () => {
  // Playwright gives every launch a fresh temporary profile (its own --user-data-dir).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  people.alice = await openPage('Alice', { width: 1280, height: 800 });
  people.bob = await openPage('Bob', { width: 390, height: 800 });
  people.carol = await openPage('Carol', { width: 1024, height: 700 });
});

after(async () => {
  await browser?.close();
});

test('three people sign up through the form', async () => {
  const { alice, bob, carol } = people;
  await shot(alice.page, 'sign-in-desktop');
  await shot(bob.page, 'sign-in-phone');
  for (const who of [alice, bob, carol]) await signUp(who);
  assert.notEqual(alice.id, bob.id);
  assert.match(alice.displayName, new RegExp(`^Alice-${run}$`, 'i'));
  // A wrong password is refused with a message, and nobody is signed in.
  const stranger = await openPage('Stranger', { width: 800, height: 600 });
  await stranger.page.getByTestId('email').fill(alice.email);
  await stranger.page.getByTestId('password').fill('not-the-password');
  await stranger.page.getByTestId('sign-in').click();
  await stranger.page.locator('#auth-error').waitFor({ state: 'visible' });
  assert.equal(await stranger.page.locator('#app').isVisible(), false);
  // The right one signs in.
  await stranger.page.getByTestId('password').fill(`pw-${run}-Alice!`);
  await stranger.page.getByTestId('sign-in').click();
  await stranger.page.waitForSelector('body[data-live=true]');
  assert.equal(await stranger.page.evaluate(() => document.body.dataset.userId), alice.id);
  await stranger.context.close();
});

test('Alice finds Bob and starts a direct chat; it appears on both sides', async () => {
  const { alice, bob } = people;
  await alice.page.getByTestId('new-direct').click();
  await alice.page.getByTestId('user-search').fill(bob.displayName);
  const result = alice.page.locator(`[data-testid=user-result][data-user-id="${bob.id}"]`);
  await result.click();
  await alice.page.getByTestId('composer').waitFor();
  const item = alice.page.locator('[data-testid=conversation]');
  await item.first().waitFor();
  people.conversation = await item.first().getAttribute('data-conversation-id');
  assert.ok(people.conversation);
  // Bob's list shows it without a reload (from the change stream).
  await bob.page.locator(`[data-testid=conversation][data-conversation-id="${people.conversation}"]`).waitFor({ timeout: 2000 });
  // Bob opens it and both private channels are joined before anyone types.
  await bob.page.locator(`[data-testid=conversation][data-conversation-id="${people.conversation}"]`).click();
  for (const who of [alice, bob]) await who.page.waitForSelector('#chat-pane[data-room=joined]', { timeout: 5000 });
});

test('each message appears on the other side within a second', async () => {
  const { alice, bob } = people;
  const timings = [];
  timings.push(await sendAndTime(alice, bob, 'Hi Bob! Lunch tomorrow?'));
  timings.push(await sendAndTime(bob, alice, 'Sure, 12:30 at the usual place?'));
  timings.push(await sendAndTime(alice, bob, 'Perfect, see you there'));
  console.log(`message latency, send click to shown on the other side (ms): ${timings.join(', ')}`);
  assert.ok(timings.every((t) => t < LIVE_MS), `${timings}`);
  // Each side shows the three messages once, in order.
  for (const who of [alice, bob]) {
    assert.deepEqual(await who.page.locator('[data-testid=message-text]').allTextContents(),
      ['Hi Bob! Lunch tomorrow?', 'Sure, 12:30 at the usual place?', 'Perfect, see you there']);
  }
  // Both have the conversation open: Alice's messages turn "read".
  await alice.page.locator('[data-testid=message][data-mine=true] [data-testid=ticks][data-status=read]').nth(1).waitFor({ timeout: 3000 });
  // Online dots: each sees the other online.
  await alice.page.waitForSelector('[data-testid=presence][data-online=true]');
  await bob.page.waitForSelector('[data-testid=presence][data-online=true]');
  await shot(alice.page, 'chat-desktop');
  await shot(bob.page, 'chat-phone');
});

test('typing shows on the other side and clears', async () => {
  const { alice, bob } = people;
  const typing = alice.page.getByTestId('typing');
  assert.equal(await typing.isVisible(), false);
  await bob.page.getByTestId('composer').pressSequentially('Running a bit l', { delay: 20 });
  await typing.waitFor({ state: 'visible', timeout: LIVE_MS });
  assert.match(await typing.textContent(), /typing/);
  await alice.page.locator(`[data-testid=conversation][data-conversation-id="${people.conversation}"] .typing-preview`).waitFor();
  await shot(alice.page, 'typing-desktop');
  // Clearing the composer says "stopped" at once.
  await bob.page.getByTestId('composer').fill('');
  await bob.page.getByTestId('composer').dispatchEvent('input');
  await typing.waitFor({ state: 'hidden', timeout: 1500 });
  // Typing and then sending also clears it.
  await bob.page.getByTestId('composer').pressSequentially('Running late', { delay: 20 });
  await typing.waitFor({ state: 'visible', timeout: LIVE_MS });
  await bob.page.getByTestId('send').click();
  await typing.waitFor({ state: 'hidden', timeout: 1500 });
  await messageWith(alice, 'Running late').waitFor();
});

test('the unread badge counts up while the chat is closed and clears when opened', async () => {
  const { alice, bob } = people;
  await bob.page.getByTestId('back').click();
  const item = bob.page.locator(`[data-testid=conversation][data-conversation-id="${people.conversation}"]`);
  const badge = item.getByTestId('unread-badge');
  await item.waitFor();
  assert.equal(await badge.count(), 0);
  await alice.page.getByTestId('composer').fill('Also: bring the tickets');
  await alice.page.getByTestId('send').click();
  await badge.waitFor({ timeout: LIVE_MS });
  await assertEventually(async () => (await badge.textContent()) === '1', 'badge 1');
  await alice.page.getByTestId('composer').fill('And an umbrella ☔');
  await alice.page.getByTestId('send').click();
  await assertEventually(async () => (await badge.textContent()) === '2', 'badge 2');
  // The preview is another row's change (the conversation's) than the badge's (the
  // member's): it may render a moment after the badge.
  await assertEventually(
    async () => /umbrella/.test(await item.getByTestId('conversation-preview').textContent()),
    'preview shows the newest message',
  );
  // Delivered but not read: Alice's newest message shows two grey ticks.
  const newest = alice.page.locator('[data-testid=message][data-mine=true]').last();
  await newest.locator('[data-testid=ticks][data-status=delivered]').waitFor({ timeout: 3000 });
  await shot(bob.page, 'list-phone-unread');
  await item.click();
  await messageWith(bob, 'And an umbrella').waitFor();
  await bob.page.getByTestId('back').click();
  await item.waitFor();
  await assertEventually(async () => (await badge.count()) === 0, 'badge cleared');
  // The read receipt reaches Alice: blue ticks.
  await newest.locator('[data-testid=ticks][data-status=read]').waitFor({ timeout: 3000 });
  // Reloading Bob's page keeps it cleared (the server's count, not only the page's).
  await bob.page.reload();
  await bob.page.waitForSelector('body[data-live=true]');
  await item.waitFor();
  assert.equal(await badge.count(), 0, 'badge still cleared after reload');
  await item.click();
  await bob.page.waitForSelector('#chat-pane[data-room=joined]');
});

test('reply, react, edit and delete reach the other side', async () => {
  const { alice, bob } = people;
  // Bob replies to Alice's question.
  await openActions(bob, 'Hi Bob! Lunch tomorrow?');
  await bob.page.getByTestId('reply').click();
  await bob.page.getByTestId('composer').fill('Yes, booked a table');
  await bob.page.getByTestId('send').click();
  const reply = messageWith(alice, 'Yes, booked a table');
  await reply.waitFor({ timeout: LIVE_MS });
  assert.match(await reply.getByTestId('reply-quote').textContent(), /Lunch tomorrow/);
  // Alice reacts; Bob sees it.
  await openActions(alice, 'Yes, booked a table');
  await alice.page.locator('[data-testid=react][data-emoji="👍"]').click();
  await messageWith(bob, 'Yes, booked a table').locator('[data-testid=reaction][data-emoji="👍"]').waitFor({ timeout: LIVE_MS });
  // Alice edits her message; Bob sees the new text, marked edited.
  await openActions(alice, 'Perfect, see you there');
  await alice.page.getByTestId('edit').click();
  await alice.page.getByTestId('composer').fill('Perfect, see you at 12:30');
  await alice.page.getByTestId('send').click();
  const edited = messageWith(bob, 'Perfect, see you at 12:30');
  await edited.waitFor({ timeout: LIVE_MS });
  await edited.getByTestId('edited').waitFor();
  assert.equal(await messageWith(bob, 'see you there').count(), 0);
  // Bob may not edit or delete Alice's message: the actions are not offered.
  await openActions(bob, 'Perfect, see you at 12:30');
  assert.equal(await bob.page.getByTestId('edit').count(), 0);
  assert.equal(await bob.page.getByTestId('delete').count(), 0);
  await edited.getByTestId('message-text').click();
  // Alice deletes one; Bob sees it deleted, its text gone.
  const doomed = messageWith(alice, 'Also: bring the tickets');
  const doomedId = await doomed.getAttribute('data-message-id');
  await openActions(alice, 'Also: bring the tickets');
  await alice.page.getByTestId('delete').click();
  await alice.page.getByTestId('confirm-delete').click();
  const onBob = bob.page.locator(`[data-testid=message][data-message-id="${doomedId}"]`);
  await bob.page.locator(`[data-testid=message][data-message-id="${doomedId}"][data-deleted=true]`).waitFor({ timeout: LIVE_MS });
  assert.doesNotMatch(await onBob.textContent(), /tickets/);
  await shot(alice.page, 'edit-delete-desktop');
  await shot(bob.page, 'edit-delete-phone');
});

test('a third person sees none of it', async () => {
  const { alice, bob, carol } = people;
  // Carol's list stayed empty through all of the above.
  assert.equal(await carol.page.locator('[data-testid=conversation]').count(), 0);
  // Carol starts her own chat with Alice: a different conversation, with none of the messages.
  await carol.page.getByTestId('new-direct').click();
  await carol.page.getByTestId('user-search').fill(alice.displayName);
  await carol.page.locator(`[data-testid=user-result][data-user-id="${alice.id}"]`).click();
  await carol.page.getByTestId('composer').waitFor();
  await carol.page.waitForSelector('#chat-pane[data-room=joined]');
  const items = carol.page.locator('[data-testid=conversation]');
  await items.first().waitFor();
  assert.equal(await items.count(), 1);
  assert.notEqual(await items.first().getAttribute('data-conversation-id'), people.conversation);
  // Alice and Bob keep talking and typing; nothing reaches Carol.
  await sendAndTime(alice, bob, 'Secret plans for Friday');
  await bob.page.getByTestId('composer').pressSequentially('hmm', { delay: 20 });
  await alice.page.getByTestId('typing').waitFor({ state: 'visible' });
  await carol.page.waitForTimeout(500);
  const seen = await carol.page.locator('body').innerText();
  for (const text of ['Secret plans', 'Lunch tomorrow', 'umbrella', 'booked a table']) {
    assert.ok(!seen.includes(text), `Carol saw "${text}"`);
  }
  assert.equal(await carol.page.getByTestId('typing').isVisible(), false);
  assert.equal(await messages(carol).count(), 0);
  await bob.page.getByTestId('composer').fill('');
  await bob.page.getByTestId('composer').dispatchEvent('input');
});

test('a group: created with Carol, Bob added, Carol removed', async () => {
  const { alice, bob, carol } = people;
  await alice.page.getByTestId('new-group').click();
  await alice.page.getByTestId('group-title').fill('Weekend trip');
  await alice.page.getByTestId('user-search').fill(carol.displayName);
  await alice.page.locator(`[data-testid=user-result][data-user-id="${carol.id}"]`).click();
  await alice.page.getByTestId('create-group').click();
  await alice.page.locator('#chat-name', { hasText: 'Weekend trip' }).waitFor();
  await alice.page.waitForSelector('#chat-pane[data-room=joined]');
  const group = await alice.page.locator('[data-testid=conversation].active').getAttribute('data-conversation-id');
  const onCarol = carol.page.locator(`[data-testid=conversation][data-conversation-id="${group}"]`);
  await onCarol.waitFor({ timeout: 2000 });
  // Bob is not in it (yet): his list does not have it.
  await bob.page.getByTestId('back').click();
  const onBob = bob.page.locator(`[data-testid=conversation][data-conversation-id="${group}"]`);
  assert.equal(await onBob.count(), 0);
  // Alice adds Bob from the group's info; it appears in Bob's list.
  await alice.page.getByTestId('chat-info').click();
  await alice.page.locator('#sheet').getByTestId('user-search').fill(bob.displayName);
  await alice.page.locator(`#sheet [data-testid=user-result][data-user-id="${bob.id}"]`).click();
  await alice.page.locator(`[data-testid=member][data-user-id="${bob.id}"]`).waitFor();
  await onBob.waitFor({ timeout: 2000 });
  await alice.page.getByTestId('sheet-close').click();
  await sendAndTime(alice, await openedOn(carol, group), 'Who is driving?');
  await onBob.click();
  await messageWith(bob, 'Who is driving?').waitFor();
  await shot(alice.page, 'group-desktop');
  // Alice removes Carol; Carol can no longer write there, and the chat leaves her list.
  await alice.page.getByTestId('chat-info').click();
  await alice.page.locator(`[data-testid=member][data-user-id="${carol.id}"] [data-testid=remove-member]`).click();
  await alice.page.locator(`[data-testid=member][data-user-id="${carol.id}"]`).waitFor({ state: 'detached' });
  await alice.page.getByTestId('sheet-close').click();
  await carol.page.getByTestId('composer').fill('Can I still write?');
  await carol.page.getByTestId('send').click();
  await onCarol.waitFor({ state: 'detached', timeout: 3000 });
  await sendAndTime(alice, bob, 'Just the two of us then');
  assert.equal(await messageWith(carol, 'Just the two of us').count(), 0);
  assert.equal(await messageWith(bob, 'Can I still write?').count(), 0);
});

/** Closes a side sheet left open (so one failed step does not fail the next tests). */
async function closeSheet(who) {
  if (await who.page.locator('#sheet').isVisible()) await who.page.getByTestId('sheet-close').click();
}

async function openedOn(who, conversationId) {
  // The list re-sorts as changes arrive; a click that landed on a neighbour is retried.
  const item = who.page.locator(`[data-testid=conversation][data-conversation-id="${conversationId}"]`);
  for (let attempt = 0; ; attempt++) {
    await item.click();
    try {
      await who.page.locator(`[data-testid=conversation][data-conversation-id="${conversationId}"].active`).waitFor({ state: 'attached', timeout: 1000 });
      break;
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
  await who.page.waitForSelector('#chat-pane[data-room=joined]');
  return who;
}

test('history pages in as Alice scrolls back; pin, mute and archive', async () => {
  const { alice } = people;
  await closeSheet(alice);
  // Dora writes 75 messages to Alice from Node with supabase-js (the public API, no browser).
  const { anon_key: anonKey } = await (await fetch(`${BASE}/ripple-web.json`)).json();
  const dora = createClient(BASE, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: ws },
  });
  const { error: signUpError } = await dora.auth.signUp({ email: `dora-${run}@example.com`, password: `pw-${run}-Dora!` });
  assert.equal(signUpError, null);
  const { data: conversation, error } = await dora.rpc('start_direct_conversation', { other_user_id: alice.id });
  assert.equal(error, null);
  for (let i = 1; i <= 75; i++) {
    const { error: sendError } = await dora.rpc('send_message', { conversation_id: conversation, body: `History ${i}` });
    assert.equal(sendError, null);
  }
  const item = alice.page.locator(`[data-testid=conversation][data-conversation-id="${conversation}"]`);
  await item.waitFor({ timeout: 3000 });
  await assertEventually(async () => (await item.getByTestId('unread-badge').textContent()) === '75', 'badge 75');
  await openedOn(alice, conversation);
  // Generous: the page has just received 75 changes and fetches the first page.
  await messageWith(alice, 'History 75').waitFor({ timeout: 10_000 });
  // One page (30) first, newest at the bottom; scrolling to the top fetches the older ones.
  assert.equal(await messages(alice).count(), 30);
  const texts = () => alice.page.locator('[data-testid=message-text]').allTextContents();
  assert.equal((await texts()).at(-1), 'History 75');
  await alice.page.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
  await assertEventually(async () => (await messages(alice).count()) === 60, '60 loaded');
  await alice.page.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
  await assertEventually(async () => (await messages(alice).count()) === 75, '75 loaded');
  const all = await texts();
  assert.deepEqual(all, Array.from({ length: 75 }, (_, i) => `History ${i + 1}`), 'each once, in order');
  await alice.page.locator('#history-top', { hasText: 'beginning' }).waitFor();
  // Pin: first in the list, with the pin mark.
  await alice.page.getByTestId('chat-menu').click();
  await alice.page.getByTestId('menu-pin').click();
  await item.getByTestId('pinned').waitFor();
  assert.equal(await alice.page.locator('[data-testid=conversation]').first().getAttribute('data-conversation-id'), conversation);
  // Mute: the mark, and the server keeps it.
  await alice.page.getByTestId('chat-menu').click();
  await alice.page.getByTestId('menu-mute').click();
  await item.getByTestId('muted').waitFor();
  // Archive: out of Chats, into Archived.
  await alice.page.getByTestId('chat-menu').click();
  await alice.page.getByTestId('menu-archive').click();
  await item.waitFor({ state: 'detached' });
  await alice.page.getByTestId('tab-archived').click();
  await item.waitFor();
  await item.getByTestId('muted').waitFor();
  await alice.page.getByTestId('tab-chats').click();
  await item.waitFor({ state: 'detached' });
});

test('Bob leaves and Alice sees him go offline with a last-seen time', async () => {
  const { alice, bob } = people;
  await closeSheet(alice);
  await openedOn(alice, people.conversation);
  const presence = alice.page.getByTestId('presence');
  await presence.and(alice.page.locator('[data-online=true]')).waitFor();
  await bob.context.close();
  await alice.page.waitForSelector('[data-testid=presence][data-online=false]', { timeout: 5000 });
  await assertEventually(async () => /last seen/.test(await presence.textContent()), 'last seen shown');
});

test('no page reported an error', async () => {
  for (const who of Object.values(people)) {
    if (!who?.errors) continue;
    // Carol's refused write in the removed group is the one expected failure (403).
    const expected = (e) => who === people.carol && /status of 403/.test(e);
    assert.deepEqual(who.errors.filter((e) => !expected(e)), [], who.name);
  }
});

async function assertEventually(check, what, timeout = 2000) {
  const until = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
