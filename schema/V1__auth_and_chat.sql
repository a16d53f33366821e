-- V1: roles and auth helpers (the PostgREST/Supabase conventions), then the chat tables.
-- Versioned and append-only: never edit this file once released; add V2__... instead.

-- Roles. NOLOGIN: requests reach them only through Ripple, which sets the role per
-- transaction from the token's `role` claim. service_role bypasses RLS for trusted
-- back-office jobs, exactly as in Supabase.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  -- The connecting role must be able to SET ROLE to each of them.
  execute format('grant anon, authenticated, service_role to %I', current_user);
end
$$;

create extension if not exists pgcrypto;

-- auth: the claims of the current request, read by policies.
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

-- All claims of the request's JWT (`{}` outside a request).
create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

-- The user id (`sub`) of the request, or null for anon.
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select nullif(auth.jwt() ->> 'sub', '')::uuid
$$;

-- The role claim of the request.
create or replace function auth.role() returns text
language sql stable
as $$
  select nullif(auth.jwt() ->> 'role', '')
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role() to anon, authenticated, service_role;

-- private: helpers used by policies and triggers; not exposed over REST.
create schema if not exists private;
grant usage on schema private to anon, authenticated, service_role;

-- Tunables the DBA may change with UPDATE; one row.
create table private.settings (
  singleton boolean primary key default true check (singleton),
  -- How long after sending a message its sender may still edit it.
  message_edit_window interval not null default interval '15 minutes',
  -- Longest message body accepted, in characters.
  max_body_chars integer not null default 10000
);
insert into private.settings default values;

create type public.conversation_kind as enum ('direct', 'group');
create type public.member_role as enum ('owner', 'admin', 'member');
create type public.message_kind as enum ('text', 'image', 'video', 'audio', 'file', 'system');

-- A user's public face. id is the JWT `sub`.
create table public.profiles (
  id uuid primary key,
  display_name text not null default '' check (char_length(display_name) <= 100),
  avatar_url text check (char_length(avatar_url) <= 2048),
  last_seen_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table public.conversations (
  id uuid primary key default gen_random_uuid(),
  kind public.conversation_kind not null,
  title text check (char_length(title) <= 200),
  description text check (char_length(description) <= 2000),
  avatar_url text check (char_length(avatar_url) <= 2048),
  created_by uuid references public.profiles (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_message_at timestamptz,
  last_message_preview text,
  last_message_id uuid,
  -- "<smaller uuid>:<larger uuid>" for direct conversations, null for groups. Its unique
  -- index is what makes "one direct conversation per pair" race-free.
  direct_key text unique,
  constraint direct_has_key check ((kind = 'direct') = (direct_key is not null))
);

create table public.conversation_members (
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  user_id uuid not null references public.profiles (id) on delete cascade,
  role public.member_role not null default 'member',
  joined_at timestamptz not null default now(),
  -- Read state: everything created at or before last_read_at counts as read.
  last_read_at timestamptz,
  last_read_message_id uuid,
  archived_at timestamptz,
  muted_until timestamptz,
  primary key (conversation_id, user_id)
);
-- "My conversations" and membership checks by user.
create index conversation_members_user_idx on public.conversation_members (user_id, conversation_id);

create table public.messages (
  id uuid primary key default gen_random_uuid(),
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  -- Null only for system messages.
  sender_id uuid references public.profiles (id) on delete set null,
  kind public.message_kind not null default 'text',
  body text,
  attachment_url text check (char_length(attachment_url) <= 2048),
  attachment_filename text check (char_length(attachment_filename) <= 255),
  attachment_size bigint check (attachment_size >= 0),
  attachment_mime_type text check (char_length(attachment_mime_type) <= 255),
  reply_to_id uuid,
  forwarded_from_id uuid references public.messages (id) on delete set null,
  -- Idempotency key chosen by the sending client; a retry returns the first message.
  client_id text check (char_length(client_id) <= 200),
  -- clock_timestamp, not now(): messages sent in one transaction keep their order.
  created_at timestamptz not null default clock_timestamp(),
  edited_at timestamptz,
  deleted_at timestamptz,
  constraint messages_id_conversation unique (id, conversation_id),
  -- A reply stays inside its conversation.
  constraint messages_reply_same_conversation foreign key (reply_to_id, conversation_id)
    references public.messages (id, conversation_id) on delete set null (reply_to_id),
  constraint messages_client_id_unique unique (sender_id, client_id),
  constraint messages_system_has_no_sender check ((kind = 'system') = (sender_id is null))
);
-- History (newest first, keyset on created_at, id) and unread counting.
create index messages_history_idx on public.messages (conversation_id, created_at desc, id desc);
create index messages_reply_to_idx on public.messages (reply_to_id) where reply_to_id is not null;
create index messages_forwarded_idx on public.messages (forwarded_from_id) where forwarded_from_id is not null;
-- Full-text search on the body.
create index messages_body_search_idx on public.messages
  using gin (to_tsvector('english'::regconfig, coalesce(body, '')));

create table public.message_reactions (
  message_id uuid not null,
  -- Denormalized so policies and realtime filters need no join; kept true by the FK.
  conversation_id uuid not null,
  user_id uuid not null references public.profiles (id) on delete cascade,
  emoji text not null check (char_length(emoji) between 1 and 32),
  created_at timestamptz not null default now(),
  primary key (message_id, user_id, emoji),
  foreign key (message_id, conversation_id)
    references public.messages (id, conversation_id) on delete cascade
);
create index message_reactions_conversation_idx on public.message_reactions (conversation_id);

-- Streamed tables carry the full old row, so UPDATE and DELETE events can be authorized
-- on the row as it was.
alter table public.profiles replica identity full;
alter table public.conversations replica identity full;
alter table public.conversation_members replica identity full;
alter table public.messages replica identity full;
alter table public.message_reactions replica identity full;

alter table public.profiles enable row level security;
alter table public.conversations enable row level security;
alter table public.conversation_members enable row level security;
alter table public.messages enable row level security;
alter table public.message_reactions enable row level security;

-- Table and column privileges. RLS decides which rows; these decide which columns.
grant usage on schema public to anon, authenticated, service_role;
grant all on all tables in schema public to service_role;

grant select on public.profiles to authenticated;
grant insert (id, display_name, avatar_url) on public.profiles to authenticated;
grant update (display_name, avatar_url) on public.profiles to authenticated;

-- direct_key is an internal implementation detail: not readable by clients.
grant select (id, kind, title, description, avatar_url, created_by, created_at, updated_at,
              last_message_at, last_message_preview, last_message_id)
  on public.conversations to authenticated;
grant insert (id, kind, title, description, avatar_url, created_by) on public.conversations to authenticated;
grant update (title, description, avatar_url) on public.conversations to authenticated;

grant select on public.conversation_members to authenticated;
grant insert (conversation_id, user_id, role) on public.conversation_members to authenticated;
grant update (last_read_at, last_read_message_id, archived_at, muted_until, role)
  on public.conversation_members to authenticated;
grant delete on public.conversation_members to authenticated;

grant select on public.messages to authenticated;
grant insert (id, conversation_id, sender_id, kind, body, attachment_url, attachment_filename,
              attachment_size, attachment_mime_type, reply_to_id, forwarded_from_id, client_id)
  on public.messages to authenticated;
-- body for edits, deleted_at for soft deletes; the trigger guards the rest.
grant update (body, deleted_at) on public.messages to authenticated;

grant select, insert (message_id, conversation_id, user_id, emoji), delete
  on public.message_reactions to authenticated;
