//! The chat functions as they were at schema V4 (before the counters of V5), for measuring
//! and checking the V5 implementation against in the same database: `bench_chat_db` prints
//! ratios against them and the chat_scale tests compare answers with them.
//!
//! Created in a schema `v4ref` that only benchmarks and tests create. V4's policies called
//! `private.is_member(conversation_id)` on every row; that call is written into the queries
//! here, so the reference pays what V4 paid (the tables' V5 policies apply on top).

/// The V4 functions (sql/ as of schema V4), renamed into `v4ref`, with V4's messages policy
/// (`private.is_member(conversation_id)`, per row) written out where V4's RLS applied it.
pub const SQL: &str = r#"
create schema v4ref;
grant usage on schema v4ref to authenticated;

create function v4ref.unread_counts() returns jsonb
language sql stable security invoker set search_path = ''
as $$
  with counts as (
    select m.conversation_id,
           (select count(*) from public.messages x
             where x.conversation_id = m.conversation_id
               and private.is_member(x.conversation_id)
               and x.created_at > coalesce(m.last_read_at, '-infinity')
               and x.sender_id is distinct from m.user_id
               and x.kind <> 'system'
               and x.deleted_at is null) as unread_count
      from public.conversation_members m
     where m.user_id = auth.uid()
       and private.is_member(m.conversation_id)
  )
  select jsonb_build_object(
    'total_unread', coalesce(sum(unread_count), 0),
    'by_conversation', coalesce(
      jsonb_agg(jsonb_build_object('conversation_id', conversation_id,
                                   'unread_count', unread_count)
                order by conversation_id)
        filter (where unread_count > 0),
      '[]'::jsonb))
  from counts
$$;

create function v4ref.list_conversations(
  archived boolean default false,
  lim integer default 50,
  before timestamptz default null
) returns table (
  id uuid, kind public.conversation_kind, title text, description text, avatar_url text,
  created_by uuid, created_at timestamptz, last_message_at timestamptz,
  last_message_preview text, last_message_id uuid, activity_at timestamptz,
  my_role public.member_role, archived_at timestamptz, muted_until timestamptz,
  last_read_at timestamptz, pinned_at timestamptz, unread_count bigint, member_count bigint,
  other_member jsonb
)
language sql stable security invoker set search_path = ''
as $$
  select c.id, c.kind, c.title, c.description, c.avatar_url, c.created_by, c.created_at,
         c.last_message_at, c.last_message_preview, c.last_message_id,
         coalesce(c.last_message_at, c.created_at) as activity_at,
         me.role, me.archived_at, me.muted_until, me.last_read_at, me.pinned_at,
         (select count(*) from public.messages x
           where x.conversation_id = c.id
             and private.is_member(x.conversation_id)
             and x.created_at > coalesce(me.last_read_at, '-infinity')
             and x.sender_id is distinct from me.user_id
             and x.kind <> 'system'
             and x.deleted_at is null),
         (select count(*) from public.conversation_members a
           where a.conversation_id = c.id and private.is_member(a.conversation_id)),
         case when c.kind = 'direct' then (
           select jsonb_build_object('id', p.id, 'display_name', p.display_name,
                                     'avatar_url', p.avatar_url, 'last_seen_at', p.last_seen_at)
             from public.conversation_members o
             join public.profiles p on p.id = o.user_id
            where o.conversation_id = c.id and o.user_id <> me.user_id
              and private.is_member(o.conversation_id)
            limit 1)
         end
    from public.conversation_members me
    join public.conversations c on c.id = me.conversation_id
   where me.user_id = auth.uid()
     and private.is_member(me.conversation_id) and private.is_member(c.id)
     and (me.archived_at is not null) = coalesce(list_conversations.archived, false)
     and (list_conversations.before is null
          or (me.pinned_at is null
              and coalesce(c.last_message_at, c.created_at) < list_conversations.before))
   order by me.pinned_at desc nulls last, coalesce(c.last_message_at, c.created_at) desc, c.id desc
   limit least(greatest(coalesce(lim, 50), 1), 200)
$$;

create function v4ref.get_messages(
  conversation_id uuid,
  lim integer default 50,
  before_id uuid default null
) returns setof jsonb
language plpgsql stable security invoker set search_path = ''
as $$
declare
  cursor_at timestamptz;
  cursor_id uuid;
begin
  if not private.is_member(get_messages.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if before_id is not null then
    select x.created_at, x.id into cursor_at, cursor_id from public.messages x
     where x.id = before_id and x.conversation_id = get_messages.conversation_id
       and private.is_member(x.conversation_id);
    if not found then
      perform private.fail('22023', 'before_id is not a message of this conversation');
    end if;
  end if;
  return query
  select (to_jsonb(x) - 'client_id')
         || jsonb_build_object(
              'client_id', case when x.sender_id = auth.uid() then x.client_id end,
              'sender_display_name', p.display_name,
              'sender_avatar_url', p.avatar_url,
              'reactions',
              coalesce((select jsonb_agg(jsonb_build_object('emoji', r.emoji, 'count', r.n,
                                                            'mine', r.mine) order by r.emoji)
                          from (select rr.emoji, count(*) as n,
                                       bool_or(rr.user_id = auth.uid()) as mine
                                  from public.message_reactions rr
                                 where rr.message_id = x.id
                                   and private.is_member(rr.conversation_id)
                                 group by rr.emoji) r),
                       '[]'::jsonb))
    from public.messages x
    left join public.profiles p on p.id = x.sender_id
   where x.conversation_id = get_messages.conversation_id
     and private.is_member(x.conversation_id)
     and (cursor_at is null or (x.created_at, x.id) < (cursor_at, cursor_id))
   order by x.created_at desc, x.id desc
   limit least(greatest(coalesce(lim, 50), 1), 200);
end
$$;

create function v4ref.search_messages(query text, lim integer default 20)
returns table (id uuid, conversation_id uuid, sender_id uuid, body text,
               created_at timestamptz, headline text, rank real)
language sql stable security invoker set search_path = ''
as $$
  with q as (select websearch_to_tsquery('english', coalesce(search_messages.query, '')) as tsq)
  select x.id, x.conversation_id, x.sender_id, x.body, x.created_at,
         ts_headline('english', x.body, q.tsq, 'MaxFragments=1, MaxWords=20, MinWords=5'),
         ts_rank(to_tsvector('english'::regconfig, coalesce(x.body, '')), q.tsq)
    from public.messages x, q
   where to_tsvector('english'::regconfig, coalesce(x.body, '')) @@ q.tsq
     and private.is_member(x.conversation_id)
     and x.deleted_at is null
     and x.kind <> 'system'
   order by 7 desc, x.created_at desc, x.id
   limit least(greatest(coalesce(lim, 20), 1), 100)
$$;

create function v4ref.mark_conversation_read(
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
       and private.is_member(x.conversation_id)
     order by x.created_at desc, x.id desc limit 1;
  else
    select * into upto from public.messages x
     where x.id = up_to_message_id
       and x.conversation_id = mark_conversation_read.conversation_id
       and private.is_member(x.conversation_id);
    if not found then
      perform private.fail('P0002', 'message not found in this conversation');
    end if;
  end if;
  if upto.id is null then
    return null;
  end if;
  update public.conversation_members m
     set last_read_at = upto.created_at,
         last_read_message_id = upto.id
   where m.conversation_id = mark_conversation_read.conversation_id
     and m.user_id = auth.uid()
     and (m.last_read_at is null or m.last_read_at < upto.created_at)
  returning m.last_read_at into result;
  if result is null then
    select m.last_read_at into result from public.conversation_members m
     where m.conversation_id = mark_conversation_read.conversation_id and m.user_id = auth.uid();
  end if;
  return result;
end
$$;

create function v4ref.send_message(
  conversation_id uuid,
  body text,
  kind public.message_kind default 'text',
  reply_to_id uuid default null,
  attachment jsonb default null,
  client_id text default null
) returns public.messages
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  me uuid := auth.uid();
  m public.messages;
begin
  if me is null then
    perform private.fail('42501', 'sign in to send messages');
  end if;
  if send_message.kind = 'system' then
    perform private.fail('42501', 'system messages are written by the database');
  end if;
  if not private.is_member(send_message.conversation_id) then
    perform private.fail('42501', 'you are not a member of this conversation');
  end if;
  insert into public.messages as x (conversation_id, sender_id, kind, body, reply_to_id,
                               attachment_url, attachment_filename, attachment_size,
                               attachment_mime_type, client_id)
  values (send_message.conversation_id, me, send_message.kind, send_message.body,
          send_message.reply_to_id,
          attachment ->> 'url', attachment ->> 'filename', (attachment ->> 'size')::bigint,
          attachment ->> 'mime_type', send_message.client_id)
  on conflict on constraint messages_client_id_unique do nothing
  returning * into m;
  return m;
end
$$;

grant execute on all functions in schema v4ref to authenticated;
"#;
