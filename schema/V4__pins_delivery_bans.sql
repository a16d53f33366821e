-- V4: features the chat seeds planned: pinned conversations, delivery receipts (sent /
-- delivered / read), bans (an admin removes someone who may not be added back), export.

-- Per member: pinned conversations sort first; delivery is acknowledged by the client when
-- messages reach the device, before they are read.
alter table public.conversation_members
  add column pinned_at timestamptz,
  add column last_delivered_at timestamptz;
grant update (pinned_at, last_delivered_at) on public.conversation_members to authenticated;

-- Users banned from a group: removed, and refused if anyone adds them again.
create table public.conversation_bans (
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  user_id uuid not null references public.profiles (id) on delete cascade,
  banned_by uuid references public.profiles (id) on delete set null,
  banned_at timestamptz not null default now(),
  reason text check (char_length(reason) <= 500),
  primary key (conversation_id, user_id)
);
create index conversation_bans_user_idx on public.conversation_bans (user_id);
alter table public.conversation_bans replica identity full;
alter table public.conversation_bans enable row level security;
grant select, insert (conversation_id, user_id, banned_by, reason), delete
  on public.conversation_bans to authenticated;
grant all on public.conversation_bans to service_role;
