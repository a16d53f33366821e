-- V2: the realtime schema. Private channels are authorized the way Supabase Realtime does
-- it: RLS policies on realtime.messages decide who may read (join) and who may write (send
-- broadcasts, track presence) on a topic, and policies read the topic with realtime.topic().
-- Ripple stores nothing here: it probes the policies inside transactions it rolls back.

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

create table realtime.messages (
  id bigint generated always as identity primary key,
  -- The channel name without the `realtime:` prefix, e.g. `conversation:<uuid>`.
  topic text not null,
  -- What the row stands for: a broadcast or a presence update on the topic.
  extension text not null check (extension in ('broadcast', 'presence')),
  event text,
  payload jsonb,
  private boolean not null default true,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

alter table realtime.messages enable row level security;

-- Policies decide which rows; these grants only make the question askable.
grant select, insert (topic, extension, event, payload, private) on realtime.messages
  to anon, authenticated;
grant all on realtime.messages to service_role;

-- The topic of the channel being authorized (set per transaction by Ripple), or null.
create or replace function realtime.topic() returns text
language sql stable
as $$
  select nullif(current_setting('realtime.topic', true), '')
$$;

-- The conversation a `conversation:<uuid>` topic names, or null for any other topic (never
-- an error: a malformed topic simply matches no conversation).
create or replace function realtime.conversation_of(topic text) returns uuid
language sql immutable
as $$
  select case
    when topic ~ '^conversation:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
    then substring(topic from 14)::uuid
  end
$$;

grant execute on function realtime.topic(), realtime.conversation_of(text)
  to anon, authenticated, service_role;
