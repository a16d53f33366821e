-- V6: users who sign in to Ripple itself (the Supabase Auth / GoTrue API that supabase-js
-- calls: sign-up, password sign-in, refresh, sign-out). The tables follow GoTrue's names, so
-- a DBA who knows Supabase finds users where they expect them:
--
--   select id, email, created_at, last_sign_in_at from auth.users;
--   update auth.users set banned_until = 'infinity' where email = 'spam@example.com';
--   delete from auth.sessions where user_id = '...';          -- signs the user out everywhere
--
-- Only the connecting (owner) role touches these tables: requests run as anon/authenticated
-- and get no privilege here, and `auth` is not a REST schema.

create table auth.users (
  id uuid primary key default gen_random_uuid(),
  -- The JWT `aud` and `role` the user's access tokens carry.
  aud text not null default 'authenticated',
  role text not null default 'authenticated',
  -- Unique regardless of case (see the index below); stored as given.
  email text not null check (char_length(email) between 3 and 320),
  -- argon2id PHC string (`$argon2id$v=19$m=...`); null for a user who cannot sign in with a
  -- password.
  encrypted_password text,
  -- Set at sign-up while email confirmation is off (Ripple sends no mail).
  email_confirmed_at timestamptz,
  -- Set by the DBA; sign-in and refresh are refused until then.
  banned_until timestamptz,
  raw_app_meta_data jsonb not null default '{"provider": "email", "providers": ["email"]}',
  -- Whatever the client sent as `options.data` at sign-up or `data` in updateUser.
  raw_user_meta_data jsonb not null default '{}',
  last_sign_in_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index users_email_key on auth.users (lower(email));

-- One row per signed-in device: a sign-in starts a session, refreshes continue it, sign-out
-- ends it. The access token carries its id as `session_id`.
create table auth.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  refreshed_at timestamptz,
  user_agent text,
  ip inet
);
create index sessions_user_idx on auth.sessions (user_id);

-- Refresh tokens, stored as their SHA-256 only. Each refresh revokes the token it used and
-- issues a child; a session's tokens are one family. Presenting a revoked token again means
-- it was copied, so the whole family (the session) is ended.
create table auth.refresh_tokens (
  id bigserial primary key,
  token_hash bytea not null unique check (octet_length(token_hash) = 32),
  user_id uuid not null references auth.users (id) on delete cascade,
  session_id uuid not null references auth.sessions (id) on delete cascade,
  parent bigint references auth.refresh_tokens (id) on delete set null,
  revoked boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index refresh_tokens_session_idx on auth.refresh_tokens (session_id);

revoke all on auth.users, auth.sessions, auth.refresh_tokens from public, anon, authenticated;

-- A new user gets a profile, named from the sign-up metadata (`display_name`, else
-- `full_name` or `name`, else the part of the email before the @). A profile that already
-- exists with that id (created before the user, as `ripple dev`'s demo users are) is kept.
create or replace function auth.create_profile_for_new_user() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
  insert into public.profiles (id, display_name, avatar_url)
  values (
    new.id,
    left(coalesce(
      nullif(btrim(new.raw_user_meta_data ->> 'display_name'), ''),
      nullif(btrim(new.raw_user_meta_data ->> 'full_name'), ''),
      nullif(btrim(new.raw_user_meta_data ->> 'name'), ''),
      split_part(new.email, '@', 1)
    ), 100),
    case when char_length(new.raw_user_meta_data ->> 'avatar_url') <= 2048
         then new.raw_user_meta_data ->> 'avatar_url' end
  )
  on conflict (id) do nothing;
  return new;
end
$$;

create trigger users_create_profile
  after insert on auth.users
  for each row execute function auth.create_profile_for_new_user();

-- Deleting a user (the DBA's `delete from auth.users`) ends their sessions and refresh tokens
-- (cascade) but keeps their profile and messages: what happens to a person's conversations
-- is the DBA's call (`delete from public.profiles where id = ...` fails while they have sent
-- messages, by the messages table's own rule).
