-- Conversations and membership: the RPCs frontends call.

-- Get or create the direct conversation between the caller and other_user_id, optionally
-- sending a first message. Concurrent calls by both users make one conversation.
--
-- SECURITY DEFINER, because it must (1) find an existing conversation through direct_key,
-- a column clients cannot read, and (2) add the other user as a member, which no policy
-- lets a user do to another in a direct chat. It acts only for auth.uid() and checks it.
create or replace function public.start_direct_conversation(
  other_user_id uuid,
  initial_message text default null
) returns uuid
language plpgsql volatile security definer set search_path = ''
as $$
declare
  me uuid := auth.uid();
  k text;
  conv uuid;
begin
  if me is null then
    perform private.fail('42501', 'sign in to start a conversation');
  end if;
  if other_user_id is null or other_user_id = me then
    perform private.fail('22023', 'choose another user to talk to');
  end if;
  if not exists (select 1 from public.profiles p where p.id = other_user_id) then
    perform private.fail('P0002', 'that user does not exist');
  end if;
  if not exists (select 1 from public.profiles p where p.id = me) then
    perform private.fail('P0002', 'create your profile first');
  end if;
  k := least(me, other_user_id)::text || ':' || greatest(me, other_user_id)::text;
  -- The unique index on direct_key serialises racing callers: the loser waits for the
  -- winner's commit, inserts nothing, and then finds the winner's row.
  insert into public.conversations (kind, created_by, direct_key)
  values ('direct', me, k)
  on conflict (direct_key) do nothing
  returning id into conv;
  if conv is not null then
    insert into public.conversation_members (conversation_id, user_id, role)
    values (conv, me, 'member'), (conv, other_user_id, 'member');
  else
    select c.id into strict conv from public.conversations c where c.direct_key = k;
  end if;
  if initial_message is not null and btrim(initial_message) <> '' then
    -- Sent as the caller, who is a member by now; the message triggers validate it.
    insert into public.messages (conversation_id, sender_id, kind, body)
    values (conv, me, 'text', initial_message);
  end if;
  return conv;
end
$$;

-- Create a group with the caller as owner and member_ids as members.
create or replace function public.create_group_conversation(
  title text,
  member_ids uuid[] default '{}'
) returns uuid
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  me uuid := auth.uid();
  conv uuid := gen_random_uuid();
begin
  if me is null then
    perform private.fail('42501', 'sign in to create a group');
  end if;
  if title is null or btrim(title) = '' then
    perform private.fail('22023', 'a group needs a title');
  end if;
  if exists (select 1 from unnest(member_ids) u(id)
             where not exists (select 1 from public.profiles p where p.id = u.id)) then
    perform private.fail('P0002', 'one of the members does not exist');
  end if;
  insert into public.conversations (id, kind, title, created_by)
  values (conv, 'group', btrim(create_group_conversation.title), me);
  insert into public.conversation_members (conversation_id, user_id, role)
  values (conv, me, 'owner');
  insert into public.conversation_members (conversation_id, user_id, role)
  select distinct conv, u.id, 'member'::public.member_role
    from unnest(member_ids) u(id) where u.id is not null and u.id <> me;
  perform private.system_message(conv, private.display_name(me) || ' created the group "'
                                       || btrim(create_group_conversation.title) || '"');
  return conv;
end
$$;

-- Add a member to a group (owners and admins only; enforced by the INSERT policy).
create or replace function public.add_conversation_member(
  conversation_id uuid,
  user_id uuid,
  role public.member_role default 'member'
) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  if not private.is_member(add_conversation_member.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if not private.is_group_admin(add_conversation_member.conversation_id) then
    perform private.fail('42501', 'only group owners and admins can add members');
  end if;
  if add_conversation_member.role = 'owner' then
    perform private.fail('22023', 'a group has one owner');
  end if;
  if not exists (select 1 from public.profiles p where p.id = add_conversation_member.user_id) then
    perform private.fail('P0002', 'that user does not exist');
  end if;
  insert into public.conversation_members (conversation_id, user_id, role)
  values (add_conversation_member.conversation_id, add_conversation_member.user_id,
          add_conversation_member.role)
  on conflict do nothing;
end
$$;

-- Remove a member from a group (owners any, admins plain members; the DELETE policy).
create or replace function public.remove_conversation_member(
  conversation_id uuid,
  user_id uuid
) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  if not private.is_member(remove_conversation_member.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if private.conversation_kind(remove_conversation_member.conversation_id) <> 'group' then
    perform private.fail('P0001', 'members cannot be removed from a direct conversation');
  end if;
  perform private.lock_conversation(remove_conversation_member.conversation_id);
  delete from public.conversation_members m
   where m.conversation_id = remove_conversation_member.conversation_id
     and m.user_id = remove_conversation_member.user_id;
  if not found then
    perform private.fail('42501', 'you cannot remove that member',
                         'owners remove anyone, admins remove members');
  end if;
end
$$;

-- Leave a group. Direct conversations are archived instead (set_archived).
create or replace function public.leave_conversation(conversation_id uuid) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  if not private.is_member(leave_conversation.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if private.conversation_kind(leave_conversation.conversation_id) <> 'group' then
    perform private.fail('P0001', 'you cannot leave a direct conversation',
                         'archive it with set_archived instead');
  end if;
  perform private.lock_conversation(leave_conversation.conversation_id);
  delete from public.conversation_members m
   where m.conversation_id = leave_conversation.conversation_id and m.user_id = (select auth.uid());
end
$$;

-- Archive or unarchive a conversation for the caller only.
create or replace function public.set_archived(conversation_id uuid, archived boolean)
returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  update public.conversation_members m
     set archived_at = case when set_archived.archived then now() else null end
   where m.conversation_id = set_archived.conversation_id and m.user_id = (select auth.uid());
  if not found then
    perform private.fail('P0002', 'conversation not found');
  end if;
end
$$;

-- Mute notifications for the caller until a time (null unmutes).
create or replace function public.set_muted(conversation_id uuid, until timestamptz)
returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  update public.conversation_members m set muted_until = set_muted.until
   where m.conversation_id = set_muted.conversation_id and m.user_id = (select auth.uid());
  if not found then
    perform private.fail('P0002', 'conversation not found');
  end if;
end
$$;

-- Change a group's title, description or avatar (owners and admins: the UPDATE policy).
create or replace function public.update_group(
  conversation_id uuid,
  title text default null,
  description text default null,
  avatar_url text default null
) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  update public.conversations c
     set title = coalesce(nullif(btrim(update_group.title), ''), c.title),
         description = coalesce(update_group.description, c.description),
         avatar_url = coalesce(update_group.avatar_url, c.avatar_url)
   where c.id = update_group.conversation_id;
  if not found then
    perform private.fail('42501', 'only group owners and admins can change the group');
  end if;
end
$$;

-- Pin or unpin a conversation for the caller (pinned ones list first).
create or replace function public.set_pinned(conversation_id uuid, pinned boolean)
returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  update public.conversation_members m
     set pinned_at = case when set_pinned.pinned then coalesce(m.pinned_at, now()) else null end
   where m.conversation_id = set_pinned.conversation_id and m.user_id = (select auth.uid());
  if not found then
    perform private.fail('P0002', 'conversation not found');
  end if;
end
$$;

-- Ban a user from a group: removes them if present and refuses adding them again
-- (owners and admins; the policies on conversation_bans and conversation_members decide).
create or replace function public.ban_member(
  conversation_id uuid,
  user_id uuid,
  reason text default null
) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  if not private.is_member(ban_member.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if not private.is_group_admin(ban_member.conversation_id) then
    perform private.fail('42501', 'only group owners and admins can ban');
  end if;
  insert into public.conversation_bans (conversation_id, user_id, banned_by, reason)
  values (ban_member.conversation_id, ban_member.user_id, auth.uid(), ban_member.reason)
  on conflict do nothing;
  perform private.lock_conversation(ban_member.conversation_id);
  delete from public.conversation_members m
   where m.conversation_id = ban_member.conversation_id and m.user_id = ban_member.user_id;
end
$$;

-- Lift a ban (the user is not re-added; an admin may add them again).
create or replace function public.unban_member(conversation_id uuid, user_id uuid)
returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  delete from public.conversation_bans b
   where b.conversation_id = unban_member.conversation_id and b.user_id = unban_member.user_id;
  if not found then
    perform private.fail('P0002', 'no such ban');
  end if;
end
$$;
