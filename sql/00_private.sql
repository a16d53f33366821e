-- Helpers for policies and triggers. SECURITY DEFINER because a policy on
-- conversation_members that read conversation_members as the caller would recurse into
-- itself; these read membership as the table owner and answer only about the caller
-- (auth.uid()), so they reveal nothing the caller could not already know.

-- Is the caller a member of the conversation?
create or replace function private.is_member(conv uuid) returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (
    select 1 from public.conversation_members m
    where m.conversation_id = conv and m.user_id = (select auth.uid())
  )
$$;

-- The caller's conversations, as a set. Policies test `conversation_id in (select
-- private.my_conversation_ids())`: PostgreSQL runs the function once per statement and
-- probes a hash of its result per row, where a per-row `private.is_member(...)` call (a
-- SECURITY DEFINER function, which it cannot inline) would run once per row.
create or replace function private.my_conversation_ids() returns setof uuid
language sql stable security definer set search_path = '' rows 50
as $$
  select m.conversation_id from public.conversation_members m where m.user_id = (select auth.uid())
$$;

-- The groups the caller owns or administers, as a set (for the bans policies).
create or replace function private.my_admin_conversation_ids() returns setof uuid
language sql stable security definer set search_path = '' rows 10
as $$
  select m.conversation_id from public.conversation_members m
    join public.conversations c on c.id = m.conversation_id
   where m.user_id = (select auth.uid()) and m.role in ('owner', 'admin') and c.kind = 'group'
$$;

-- The caller's unread count per conversation, from the counters of schema/V5: one row per
-- conversation of the caller, reading messages only where some were deleted after the
-- caller's read point. Unread = messages after the read point, not sent by the caller, not
-- system messages, not deleted.
create or replace function private.my_unread()
returns table (conversation_id uuid, unread_count bigint)
language sql stable security definer set search_path = '' rows 50
as $$
  select m.conversation_id,
         c.counted_seq - m.read_counted_seq - m.sent_since_read
         - (select count(*) from public.messages x
             where x.conversation_id = m.conversation_id
               and x.deleted_at is not null and x.kind <> 'system'
               and x.seq > m.last_read_seq and x.sender_id <> m.user_id)
         - (select count(*) from private.removed_messages t
             where t.conversation_id = m.conversation_id
               and t.seq > m.last_read_seq and t.sender_id <> m.user_id)
    from public.conversation_members m
    join public.conversations c on c.id = m.conversation_id
   where m.user_id = (select auth.uid())
$$;

-- Locks the conversation row before a membership change. A message locks the conversation
-- row and then its sender's member row (schema/V5's counters); a member leaving or removed
-- locks the member row and then (member_after_change) the conversation row. Taking the
-- conversation first on the RPC paths keeps a send and a leave from deadlocking.
create or replace function private.lock_conversation(conv uuid) returns void
language sql volatile security definer set search_path = ''
as $$
  select 1 from public.conversations c where c.id = conv for no key update
$$;

-- The caller's role in the conversation, or null when not a member.
create or replace function private.my_role(conv uuid) returns public.member_role
language sql stable security definer set search_path = ''
as $$
  select m.role from public.conversation_members m
  where m.conversation_id = conv and m.user_id = (select auth.uid())
$$;

-- Is the caller an owner or admin of this group conversation?
create or replace function private.is_group_admin(conv uuid) returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (
    select 1 from public.conversation_members m
    join public.conversations c on c.id = m.conversation_id
    where m.conversation_id = conv and m.user_id = (select auth.uid())
      and m.role in ('owner', 'admin') and c.kind = 'group'
  )
$$;

-- Did the caller create this conversation in the current transaction? Lets the creator
-- seed the first members (created_at is not writable by clients, so it is always the
-- creating transaction's now()).
create or replace function private.created_by_me_now(conv uuid) returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (
    select 1 from public.conversations c
    where c.id = conv and c.created_by = auth.uid() and c.created_at = now()
  )
$$;

-- Is `who` banned from the conversation?
create or replace function private.is_banned(conv uuid, who uuid) returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (
    select 1 from public.conversation_bans b where b.conversation_id = conv and b.user_id = who
  )
$$;

create or replace function private.conversation_kind(conv uuid) returns public.conversation_kind
language sql stable security definer set search_path = ''
as $$
  select c.kind from public.conversations c where c.id = conv
$$;

-- Do the caller and `other` share a conversation? (Profiles are public to signed-in users
-- anyway; this is used to show online status only to contacts.)
create or replace function private.shares_conversation_with(other uuid) returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (
    select 1 from public.conversation_members a
    join public.conversation_members b on b.conversation_id = a.conversation_id
    where a.user_id = auth.uid() and b.user_id = other
  )
$$;

-- Is this statement running as a request's role (rather than service_role, the table
-- owner, or a SECURITY DEFINER function of ours)? Trigger guards apply to these.
create or replace function private.is_api_role() returns boolean
language sql stable set search_path = ''
as $$
  select current_user in ('anon', 'authenticated')
$$;

create or replace function private.settings() returns private.settings
language sql stable security definer set search_path = ''
as $$
  select s from private.settings s where s.singleton
$$;

-- Display name for system messages.
create or replace function private.display_name(uid uuid) returns text
language sql stable security definer set search_path = ''
as $$
  select coalesce(nullif(p.display_name, ''), 'someone') from public.profiles p where p.id = uid
$$;

-- The short text shown in conversation lists.
create or replace function private.preview(m public.messages) returns text
language sql immutable set search_path = ''
as $$
  select case
    when m.deleted_at is not null then 'Message deleted'
    when m.kind = 'text' or m.kind = 'system' then left(coalesce(m.body, ''), 120)
    else '[' || m.kind::text || '] ' || coalesce(nullif(m.body, ''), m.attachment_filename, '')
  end
$$;

-- Raise an error a frontend can show. errcode is a SQLSTATE: 42501 (not allowed),
-- 22023 (bad argument), P0002 (not found), P0001 (a rule of the chat, e.g. edit window).
create or replace function private.fail(errcode text, message text, hint text default null)
returns void
language plpgsql immutable set search_path = ''
as $$
begin
  raise exception using errcode = errcode, message = message, hint = coalesce(hint, '');
end
$$;

revoke all on all functions in schema private from public;
grant execute on all functions in schema private to anon, authenticated, service_role;
