// Small DOM and formatting helpers shared by the screens.

/** Creates an element: h('div', { class: 'x', onclick }, child, 'text', [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style' && typeof v === 'object') {
      for (const [prop, val] of Object.entries(v)) el.style.setProperty(prop.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), val);
    }
    else if (k === 'html') el.innerHTML = v; // only ever given our own constant SVG
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (id) => document.getElementById(id);

export const ICONS = {
  pin: '<svg viewBox="0 0 24 24"><path d="M16 3v2h-1v6l3 3v2h-5v5l-1 1-1-1v-5H6v-2l3-3V5H8V3h8z"/></svg>',
  muted: '<svg viewBox="0 0 24 24"><path d="M16.5 12A4.5 4.5 0 0 0 14 8v2.2l2.5 2.5V12zM19 12c0 .9-.2 1.8-.5 2.6l1.5 1.5A8.8 8.8 0 0 0 21 12c0-4.3-3-7.9-7-8.8v2.1c2.9.9 5 3.5 5 6.7zM4.3 3 3 4.3 7.7 9H3v6h4l5 5v-6.7l4.3 4.3c-.7.5-1.4.9-2.3 1.2v2.1a9 9 0 0 0 3.7-1.8l2 2 1.3-1.3L4.3 3zM12 4 9.9 6.1 12 8.2V4z"/></svg>',
  sent: '<svg viewBox="0 0 24 24"><path d="m9 16.2-4.2-4.2-1.4 1.4L9 19 21 7l-1.4-1.4z"/></svg>',
  double: '<svg viewBox="0 0 24 24"><path d="m18 7-1.4-1.4-6.3 6.3 1.4 1.4L18 7zm4.2-1.4L11.7 16.2 7.5 12l-1.4 1.4 5.6 5.6 12-12-1.5-1.4zM.4 13.4 6 19l1.4-1.4L1.8 12 .4 13.4z"/></svg>',
  clock: '<svg viewBox="0 0 24 24"><path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.3-4.5-2.7V7z"/></svg>',
};

const PALETTE = ['#65a30d', '#7c3aed', '#db2777', '#ea580c', '#2563eb', '#16a34a', '#9333ea', '#0891b2', '#c2410c', '#4f46e5'];

/** A stable colour for an id, so a person keeps theirs everywhere. */
export function colorFor(id) {
  let n = 0;
  for (const ch of String(id || '')) n = (n * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[n % PALETTE.length];
}

/** Up to two initials: the first letter or digit of the first and last words (emoji and
 * punctuation skipped, whole code points, never half a surrogate pair). */
export function initials(name) {
  const firsts = String(name || '').trim().split(/\s+/)
    .map((w) => (w.match(/[\p{L}\p{N}]/u) || [])[0])
    .filter(Boolean);
  if (!firsts.length) return '?';
  return (firsts.length > 1 ? firsts[0] + firsts[firsts.length - 1] : firsts[0]).toUpperCase();
}

export function avatar(id, name, { size = '', online = false } = {}) {
  return h('div', { class: `avatar ${size}`, style: { '--c': colorFor(id) }, 'aria-hidden': 'true' },
    initials(name), online ? h('span', { class: 'dot', title: 'online' }) : null);
}

/**
 * Microseconds since the epoch from PostgreSQL's timestamptz text (either ISO with `T` or
 * the space-separated form, with 0-6 fraction digits), so comparisons keep Postgres's
 * precision: read receipts compare a message's created_at with a member's last_read_at.
 */
export function micros(s) {
  if (!s) return null;
  if (s === 'infinity') return Infinity;
  const m = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d(?::?\d\d)?)?$/.exec(s);
  if (!m) {
    const t = Date.parse(s);
    return Number.isNaN(t) ? null : t * 1000;
  }
  let zone = m[4] || 'Z';
  if (/^[+-]\d\d$/.test(zone)) zone += ':00';
  else if (/^[+-]\d{4}$/.test(zone)) zone = zone.slice(0, 3) + ':' + zone.slice(3);
  const frac = (m[3] || '').padEnd(6, '0').slice(0, 6);
  return Date.parse(`${m[1]}T${m[2]}${zone}`) * 1000 + Number(frac);
}

export const ms = (s) => {
  const u = micros(s);
  return u === null ? null : u / 1000;
};

const sameDay = (a, b) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

/** "14:05", "Yesterday", "Mon", "12/03/2026": the list's time column. */
export function shortTime(s) {
  const t = ms(s);
  if (t === null) return '';
  const d = new Date(t);
  const now = new Date();
  if (sameDay(d, now)) return clock(d);
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return 'Yesterday';
  if (now - d < 6 * 86400e3) return d.toLocaleDateString(undefined, { weekday: 'short' });
  return d.toLocaleDateString();
}

export const clock = (d) => d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });

/** The separator above a day's first message. */
export function dayLabel(s) {
  const d = new Date(ms(s));
  const now = new Date();
  if (sameDay(d, now)) return 'Today';
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return 'Yesterday';
  return d.toLocaleDateString(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: d.getFullYear() === now.getFullYear() ? undefined : 'numeric' });
}

/** "last seen 5 minutes ago" */
export function lastSeen(s) {
  const t = ms(s);
  if (t === null) return '';
  const sec = Math.max(0, (Date.now() - t) / 1000);
  if (sec < 60) return 'last seen just now';
  if (sec < 3600) return `last seen ${Math.floor(sec / 60)} min ago`;
  const d = new Date(t);
  if (sameDay(d, new Date())) return `last seen today at ${clock(d)}`;
  return `last seen ${shortTime(s).toLowerCase()} at ${clock(d)}`;
}

let toastTimer;
export function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 3500);
}

/** The message of a PostgREST-style error, or of anything thrown. */
export function errorText(e) {
  if (!e) return 'Something went wrong';
  return e.message || e.msg || e.error_description || String(e);
}

export function debounce(fn, wait) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), wait); };
}
