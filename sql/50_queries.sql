-- Read paths: conversation list, history, search. get_messages is SECURITY INVOKER (RLS
-- decides); list_conversations and search_messages are SECURITY DEFINER and select the
-- caller's own conversations explicitly, because RLS on every joined row costs more than
-- the page itself (and, for search, keeps PostgreSQL from using the text index).

-- The caller's conversations: pinned ones first (most recently pinned first), then the
-- most recently active, with preview, unread count and, for direct chats, the other
-- member's profile. Page with `before` = the last row's `activity_at` (pinned
-- conversations come on the first page only). Unread counts and member counts come from
-- counters (schema/V5), so a page costs its rows, not the conversations' messages; the
-- counters are returned too, for clients that keep badges live (README).
-- (Dropped first: `create or replace` cannot change the columns a function returns.)
drop function if exists public.list_conversations(boolean, integer, timestamptz);
create function public.list_conversations(
  archived boolean default false,
  lim integer default 50,
  before timestamptz default null
) returns table (
  id uuid,
  kind public.conversation_kind,
  title text,
  description text,
  avatar_url text,
  created_by uuid,
  created_at timestamptz,
  last_message_at timestamptz,
  last_message_preview text,
  last_message_id uuid,
  activity_at timestamptz,
  my_role public.member_role,
  archived_at timestamptz,
  muted_until timestamptz,
  last_read_at timestamptz,
  pinned_at timestamptz,
  unread_count bigint,
  member_count bigint,
  other_member jsonb,
  last_seq bigint,
  counted_seq bigint,
  deleted_count bigint,
  last_read_seq bigint,
  read_counted_seq bigint,
  sent_since_read bigint
)
language sql stable security definer set search_path = ''
as $$
  select c.id, c.kind, c.title, c.description, c.avatar_url, c.created_by, c.created_at,
         c.last_message_at, c.last_message_preview, c.last_message_id,
         coalesce(c.last_message_at, c.created_at) as activity_at,
         me.role, me.archived_at, me.muted_until, me.last_read_at, me.pinned_at,
         coalesce(u.unread_count, 0),
         c.member_count::bigint,
         case when c.kind = 'direct' then (
           select jsonb_build_object('id', p.id, 'display_name', p.display_name,
                                     'avatar_url', p.avatar_url, 'last_seen_at', p.last_seen_at)
             from public.conversation_members o
             join public.profiles p on p.id = o.user_id
            where o.conversation_id = c.id and o.user_id <> me.user_id
            limit 1)
         end,
         c.last_seq, c.counted_seq, c.deleted_count,
         me.last_read_seq, me.read_counted_seq, me.sent_since_read
    from public.conversation_members me
    join public.conversations c on c.id = me.conversation_id
    left join private.my_unread() u on u.conversation_id = me.conversation_id
   where me.user_id = (select auth.uid())
     and (me.archived_at is not null) = coalesce(list_conversations.archived, false)
     and (list_conversations.before is null
          or (me.pinned_at is null
              and coalesce(c.last_message_at, c.created_at) < list_conversations.before))
   order by me.pinned_at desc nulls last, coalesce(c.last_message_at, c.created_at) desc, c.id desc
   limit least(greatest(coalesce(lim, 50), 1), 200)
$$;

-- A conversation's messages, newest first, `lim` at a time. Pass the last row's id as
-- before_id for the next (older) page: keyset on (created_at, id), so concurrent sends
-- never shift a page and each message appears exactly once. Pages walk the
-- (conversation_id, seq) index, the same cost at any depth.
create or replace function public.get_messages(
  conversation_id uuid,
  lim integer default 50,
  before_id uuid default null
) returns setof jsonb
language plpgsql stable security invoker set search_path = ''
as $$
declare
  cursor_seq bigint;
  me uuid := auth.uid();
begin
  if not private.is_member(get_messages.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  if before_id is not null then
    select x.seq into cursor_seq from public.messages x
     where x.id = before_id and x.conversation_id = get_messages.conversation_id;
    if not found then
      perform private.fail('22023', 'before_id is not a message of this conversation');
    end if;
  end if;
  -- One index range in every plan: an `is null or` (or a coalesce, which RLS treats as
  -- possibly leaky) would leave the cached generic plan scanning the conversation from its
  -- newest message down to the page.
  cursor_seq := coalesce(cursor_seq, 9223372036854775807);
  -- jsonb rows: a `returns table` could not have a conversation_id column beside the
  -- parameter of that name. client_id is shown only to its sender.
  return query
  select (to_jsonb(x) - 'client_id')
         || jsonb_build_object(
              'client_id', case when x.sender_id = me then x.client_id end,
              'sender_display_name', p.display_name,
              'sender_avatar_url', p.avatar_url,
              'reactions',
              coalesce((select jsonb_agg(jsonb_build_object('emoji', r.emoji, 'count', r.n,
                                                            'mine', r.mine) order by r.emoji)
                          from (select rr.emoji, count(*) as n,
                                       bool_or(rr.user_id = me) as mine
                                  from public.message_reactions rr
                                 where rr.message_id = x.id group by rr.emoji) r),
                       '[]'::jsonb))
    from public.messages x
    left join public.profiles p on p.id = x.sender_id
   where x.conversation_id = get_messages.conversation_id
     and x.seq < cursor_seq
   order by x.seq desc
   limit least(greatest(coalesce(lim, 50), 1), 200);
end
$$;

-- Full-text search over the bodies of messages in the caller's conversations (deleted
-- messages have no body). Best matches first. The GIN index on the body's tsvector finds
-- the matches, then the caller's conversations (one set, hashed) restrict them.
-- SECURITY DEFINER, and restricted to the caller's conversations explicitly: under RLS,
-- PostgreSQL may not use the GIN index at all, because `@@` is not leakproof and so may not
-- run before the policy (V4 checked membership on every message instead). The tsvector is an
-- expression index rather than a stored column so that message rows (REST, the change
-- stream) do not carry it.
-- Known limit: ranking computes every match's tsvector, so a word found in tens of
-- thousands of the caller's messages takes seconds; selective queries take milliseconds.
create or replace function public.search_messages(query text, lim integer default 20)
returns table (
  id uuid,
  conversation_id uuid,
  sender_id uuid,
  body text,
  created_at timestamptz,
  headline text,
  rank real
)
language plpgsql stable security definer set search_path = ''
as $$
declare
  tsq tsquery := websearch_to_tsquery('english', coalesce(search_messages.query, ''));
begin
  -- Dynamic, so the statement is planned with this query's terms: a generic plan cannot
  -- tell a rare term (the GIN index) from one in every message.
  return query execute $q$
    select x.id, x.conversation_id, x.sender_id, x.body, x.created_at,
           ts_headline('english', x.body, $1, 'MaxFragments=1, MaxWords=20, MinWords=5'),
           ts_rank(to_tsvector('english'::regconfig, coalesce(x.body, '')), $1)
      from public.messages x
     where to_tsvector('english'::regconfig, coalesce(x.body, '')) @@ $1
       and x.conversation_id in (select private.my_conversation_ids())
       and x.deleted_at is null
       and x.kind <> 'system'
     order by 7 desc, x.created_at desc, x.id
     limit $2
  $q$ using tsq, least(greatest(coalesce(lim, 20), 1), 100);
end
$$;

-- Record that the caller was just seen (Ripple calls it on a user's last disconnect).
-- SECURITY DEFINER: last_seen_at is not writable by users (they could fake any time);
-- this sets only the caller's, only to now().
create or replace function public.touch_last_seen() returns void
language sql volatile security definer set search_path = ''
as $$
  update public.profiles set last_seen_at = now() where id = (select auth.uid())
$$;

-- Functions are for signed-in users; anon may call nothing here.
revoke execute on all functions in schema public from public;
grant execute on all functions in schema public to authenticated, service_role;

-- Everything of a conversation the caller may see, as one JSON document (for "export
-- chat"): the conversation, its members with their profiles, and its messages oldest first
-- with their reactions.
create or replace function public.export_conversation(conversation_id uuid) returns jsonb
language plpgsql stable security invoker set search_path = ''
as $$
declare
  result jsonb;
begin
  if not private.is_member(export_conversation.conversation_id) then
    perform private.fail('P0002', 'conversation not found');
  end if;
  select jsonb_build_object(
    'exported_at', now(),
    'conversation', (
      select jsonb_build_object('id', c.id, 'kind', c.kind, 'title', c.title,
                                'description', c.description, 'created_at', c.created_at)
        from public.conversations c where c.id = export_conversation.conversation_id),
    'members', coalesce((
      select jsonb_agg(jsonb_build_object('user_id', m.user_id, 'display_name', p.display_name,
                                          'role', m.role, 'joined_at', m.joined_at)
                       order by m.joined_at, m.user_id)
        from public.conversation_members m join public.profiles p on p.id = m.user_id
       where m.conversation_id = export_conversation.conversation_id), '[]'::jsonb),
    'messages', coalesce((
      select jsonb_agg(jsonb_build_object(
               'id', x.id, 'sender_id', x.sender_id, 'sender', p.display_name,
               'kind', x.kind, 'body', x.body, 'attachment_url', x.attachment_url,
               'attachment_filename', x.attachment_filename, 'reply_to_id', x.reply_to_id,
               'forwarded_from_id', x.forwarded_from_id, 'created_at', x.created_at,
               'edited_at', x.edited_at, 'deleted_at', x.deleted_at,
               'reactions', coalesce((select jsonb_agg(jsonb_build_object('emoji', r.emoji,
                                                                          'user_id', r.user_id)
                                                       order by r.created_at, r.user_id)
                                        from public.message_reactions r
                                       where r.message_id = x.id), '[]'::jsonb))
             order by x.created_at, x.id)
        from public.messages x left join public.profiles p on p.id = x.sender_id
       where x.conversation_id = export_conversation.conversation_id), '[]'::jsonb))
  into result;
  return result;
end
$$;

revoke execute on function public.export_conversation(uuid) from public;
grant execute on function public.export_conversation(uuid) to authenticated, service_role;
