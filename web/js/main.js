// Start-up: find Ripple's anon key, restore or ask for a session, then open the chat.
//
// Sessions come from Ripple's Supabase-compatible auth (`supabase.auth.signUp`,
// `signInWithPassword`); supabase-js keeps them in localStorage, refreshes them and hands the
// token to REST and realtime by itself. For development a raw user token (from `ripple dev`
// or `ripple token`) can be pasted instead; it lives in sessionStorage only.

import { $, toast, errorText } from './ui.js';
import { startChat } from './chat.js';

const TOKEN_KEY = 'ripple.dev-token';
const ANON_KEY = 'ripple.anon-key';

async function anonKey() {
  try {
    const r = await fetch('/ripple-web.json', { cache: 'no-store' });
    if (r.ok) {
      const { anon_key: key } = await r.json();
      if (key) return key;
    }
  } catch {
    // Served by something else than Ripple: fall through.
  }
  const saved = localStorage.getItem(ANON_KEY) || new URLSearchParams(location.search).get('apikey');
  if (saved) return saved;
  const asked = window.prompt('Ripple anon key (the apikey `ripple dev` prints):');
  if (asked) localStorage.setItem(ANON_KEY, asked.trim());
  return asked?.trim();
}

/** The claims of a JWT (not verified: Ripple verifies; this only reads who we are). */
function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return null;
  }
}

/** The profile row for `id`, created when sign-up did not make one. */
async function ensureProfile(sb, id, fallbackName) {
  const { data, error } = await sb.from('profiles').select('id, display_name').eq('id', id).maybeSingle();
  if (error) throw error;
  if (data) return data.display_name || fallbackName;
  const { error: insertError } = await sb.from('profiles').insert({ id, display_name: fallbackName });
  if (insertError && insertError.code !== '23505') throw insertError;
  return fallbackName;
}

const nameFromEmail = (email) => {
  const local = String(email || '').split('@')[0] || 'New user';
  return local.charAt(0).toUpperCase() + local.slice(1);
};

function showAuth(message) {
  $('app').hidden = true;
  $('auth').hidden = false;
  const err = $('auth-error');
  err.hidden = !message;
  err.textContent = message || '';
  setTimeout(() => $('email').focus(), 0);
}

async function enter(sb, user, signOut) {
  const name = await ensureProfile(sb, user.id, user.user_metadata?.display_name || nameFromEmail(user.email));
  $('auth').hidden = true;
  $('app').hidden = false;
  document.body.dataset.userId = user.id;
  startChat(sb, { id: user.id, name, email: user.email }, { signOut });
}

async function boot() {
  const url = location.origin;
  const key = await anonKey();
  if (!key) return showAuth('Ripple did not give this page an anon key.');

  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, '', location.pathname + location.search);
  }
  const devToken = sessionStorage.getItem(TOKEN_KEY);
  if (devToken) {
    const c = claims(devToken);
    if (c?.sub && (!c.exp || c.exp * 1000 > Date.now())) {
      // A pasted token: no auth session, the token is sent as is.
      const sb = window.supabase.createClient(url, key, { accessToken: async () => devToken });
      sb.realtime.setAuth(devToken);
      const signOut = () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); };
      try {
        return await enter(sb, { id: c.sub, email: c.email, user_metadata: {} }, signOut);
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        return showAuth(`That token did not work: ${errorText(e)}`);
      }
    }
    sessionStorage.removeItem(TOKEN_KEY);
  }

  const sb = window.supabase.createClient(url, key, {
    auth: { persistSession: true, autoRefreshToken: true, storageKey: 'ripple-chat-auth' },
  });
  const signOut = async () => {
    await sb.auth.signOut().catch(() => {});
    location.reload();
  };
  const { data: { session } } = await sb.auth.getSession();
  if (session?.user) {
    try {
      return await enter(sb, session.user, signOut);
    } catch (e) {
      await sb.auth.signOut().catch(() => {});
      return showAuth(errorText(e));
    }
  }
  showAuth();
  wireAuthForm(sb, signOut);
}

function wireAuthForm(sb, signOut) {
  const busy = (on) => { for (const id of ['sign-in', 'sign-up']) $(id).disabled = on; };
  const fail = (e) => {
    busy(false);
    const err = $('auth-error');
    err.hidden = false;
    err.textContent = errorText(e);
  };
  const creds = () => ({ email: $('email').value.trim(), password: $('password').value });

  $('auth-form').onsubmit = async (e) => {
    e.preventDefault();
    busy(true);
    const { data, error } = await sb.auth.signInWithPassword(creds());
    if (error) return fail(error);
    enter(sb, data.user, signOut).catch(fail);
  };
  $('sign-up').onclick = async () => {
    const { email, password } = creds();
    if (!$('auth-form').reportValidity()) return;
    busy(true);
    const display = nameFromEmail(email);
    const { data, error } = await sb.auth.signUp({ email, password, options: { data: { display_name: display } } });
    if (error) return fail(error);
    if (!data.session) return fail({ message: 'Account created: sign in to continue.' });
    enter(sb, data.user, signOut).catch(fail);
  };
  $('token-sign-in').onclick = () => {
    const token = $('token-input').value.trim();
    if (!claims(token)?.sub) return fail({ message: 'That is not a user token (it has no sub).' });
    sessionStorage.setItem(TOKEN_KEY, token);
    location.reload();
  };
}

boot().catch((e) => {
  console.error(e);
  toast(errorText(e));
  showAuth(errorText(e));
});
