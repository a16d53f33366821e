-- Read state: receipts, unread counts.
--
-- A member has read everything created at or before conversation_members.last_read_at.
-- Unread = messages after that point, not sent by the member, not deleted, not system.
-- A trigger keeps the position form of the read point (last_read_seq, read_counted_seq,
-- sent_since_read) in step with last_read_at; counting uses those (see schema/V5).

-- Mark the conversation read up to a message (default: its newest message). Never moves
-- backwards, so an old client cannot un-read what a newer one read.
create or replace function public.mark_conversation_read(
  conversation_id uuid,
  up_to_message_id uuid default null
) returns timestamptz
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  upto public.messages;
  result timestamptz;
begin
  if not private.is_member(mark_conversation_read.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if up_to_message_id is null then
    select * into upto from public.messages x
     where x.conversation_id = mark_conversation_read.conversation_id
     order by x.seq desc limit 1;
  else
    select * into upto from public.messages x
     where x.id = up_to_message_id
       and x.conversation_id = mark_conversation_read.conversation_id;
    if not found then
      perform private.fail('P0002', 'message not found in this conversation');
    end if;
  end if;
  if upto.id is null then
    return null; -- nothing to read yet
  end if;
  update public.conversation_members m
     set last_read_at = upto.created_at,
         last_read_message_id = upto.id
   where m.conversation_id = mark_conversation_read.conversation_id
     and m.user_id = (select auth.uid())
     and (m.last_read_at is null or m.last_read_at < upto.created_at)
  returning m.last_read_at into result;
  if result is null then
    select m.last_read_at into result from public.conversation_members m
     where m.conversation_id = mark_conversation_read.conversation_id and m.user_id = (select auth.uid());
  end if;
  return result;
end
$$;

-- Unread message counts of the caller's conversations (archived ones included; muted too,
-- the client decides how to badge them):
-- {"total_unread": n, "by_conversation": [{"conversation_id": .., "unread_count": ..}]}
create or replace function public.unread_counts() returns jsonb
language sql stable security invoker set search_path = ''
as $$
  select jsonb_build_object(
    'total_unread', coalesce(sum(u.unread_count), 0),
    'by_conversation', coalesce(
      jsonb_agg(jsonb_build_object('conversation_id', u.conversation_id,
                                   'unread_count', u.unread_count)
                order by u.conversation_id)
        filter (where u.unread_count > 0),
      '[]'::jsonb))
  from private.my_unread() u
$$;

-- Who has read a message: the other members whose read point is at or past it. Only
-- members of the message's conversation see anything (RLS on both tables).
create or replace function public.message_read_by(message_id uuid)
returns table (user_id uuid, display_name text, avatar_url text, read_at timestamptz)
language sql stable security invoker set search_path = ''
as $$
  select m.user_id, p.display_name, p.avatar_url, m.last_read_at
    from public.messages x
    join public.conversation_members m on m.conversation_id = x.conversation_id
    join public.profiles p on p.id = m.user_id
   where x.id = message_read_by.message_id
     and m.user_id is distinct from x.sender_id
     and m.last_read_at >= x.created_at
   order by m.last_read_at, m.user_id
$$;

-- The client acknowledges that messages reached the device (up to a message, default the
-- newest): drives "delivered" ticks. Never moves backwards.
create or replace function public.mark_conversation_delivered(
  conversation_id uuid,
  up_to_message_id uuid default null
) returns timestamptz
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  upto timestamptz;
  result timestamptz;
begin
  if not private.is_member(mark_conversation_delivered.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if up_to_message_id is null then
    select max(x.created_at) into upto from public.messages x
     where x.conversation_id = mark_conversation_delivered.conversation_id;
  else
    select x.created_at into upto from public.messages x
     where x.id = up_to_message_id
       and x.conversation_id = mark_conversation_delivered.conversation_id;
    if not found then
      perform private.fail('P0002', 'message not found in this conversation');
    end if;
  end if;
  if upto is null then
    return null;
  end if;
  update public.conversation_members m
     set last_delivered_at = upto
   where m.conversation_id = mark_conversation_delivered.conversation_id
     and m.user_id = (select auth.uid())
     and (m.last_delivered_at is null or m.last_delivered_at < upto)
  returning m.last_delivered_at into result;
  return coalesce(result, upto);
end
$$;

-- A message's status as its sender sees it: 'read' when every other member has read it,
-- 'delivered' when it reached every other member's device (reading implies delivery),
-- else 'sent'; with the counts behind it.
create or replace function public.message_status(message_id uuid) returns jsonb
language sql stable security invoker set search_path = ''
as $$
  with msg as (
    select x.id, x.conversation_id, x.sender_id, x.created_at
      from public.messages x where x.id = message_status.message_id
  ), others as (
    select greatest(m.last_delivered_at, m.last_read_at) >= msg.created_at as delivered,
           m.last_read_at >= msg.created_at as read
      from msg join public.conversation_members m
        on m.conversation_id = msg.conversation_id and m.user_id is distinct from msg.sender_id
  )
  select case when not exists (select 1 from msg) then null else jsonb_build_object(
    'status', case
                when (select count(*) from others) > 0
                     and (select bool_and(coalesce(read, false)) from others) then 'read'
                when (select count(*) from others) > 0
                     and (select bool_and(coalesce(delivered, false)) from others) then 'delivered'
                else 'sent' end,
    'recipients', (select count(*) from others),
    'delivered', (select count(*) from others where coalesce(delivered, false)),
    'read', (select count(*) from others where coalesce(read, false)))
  end
$$;
