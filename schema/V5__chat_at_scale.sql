-- V5: the chat at scale. Unread counts, the conversation list and live badges cost what the
-- caller's conversations cost, not what their messages cost.
--
-- The design (see README, "The chat database"):
--
-- * Every message gets `seq`, its position in its conversation (1, 2, 3, ...), and
--   `counted_seq`, the number of countable messages (not system messages) at or before it.
--   Both are handed out by the conversation row the preview trigger already updates on
--   every message: `conversations.last_seq` and `conversations.counted_seq` (monotone; a
--   deletion never lowers them). A message's created_at is kept increasing in seq order, so
--   "created at or before last_read_at" and "seq at or before last_read_seq" are the same set.
--
-- * A member's read point stays `last_read_at` (what clients and receipts use). A trigger
--   derives from it, whenever it changes, `last_read_seq` (the newest message read),
--   `read_counted_seq` (that message's counted_seq) and `sent_since_read` (the countable
--   messages the member sent after the read point, deleted or not). Sending a message adds
--   one to the sender's `sent_since_read`: one row, the sender's, never one per member.
--
-- * Countable messages after the read point split into three disjoint parts: the member's
--   own, other members' deleted ones, and the unread ones. So
--
--     unread = conversations.counted_seq - read_counted_seq - sent_since_read
--              - (others' messages after last_read_seq that were deleted)
--
--   The last term counts entries of a partial index of soft-deleted messages plus rows of
--   `private.removed_messages` (countable messages hard-deleted), both past the read point:
--   deletions are rare, and only those after the member's read point are touched. Edits
--   change nothing; system messages advance seq but not counted_seq; a member who joins late
--   starts with no read point (all history unread, as before V5) and with their own earlier
--   messages (a returning member) already in sent_since_read; members who leave take their
--   row with them. The cost of unread_counts() is one row per conversation of the caller.
--
-- * `conversations.member_count` follows joins and leaves, so the conversation list does
--   not count a 1,000-member group's rows; `conversations.deleted_count` (countable
--   messages deleted) tells a live client when its local badge needs a refetch.
--
-- Existing data is backfilled below: seq in (created_at, id) order, which is exactly the
-- order the V4 functions compared against last_read_at, so every unread count after the
-- migration equals the V4 count. The backfill rewrites every message row; on a live system
-- run it while Ripple is stopped or expect those row updates in the change stream.

alter table public.conversations
  add column last_seq bigint not null default 0,
  add column counted_seq bigint not null default 0,
  add column deleted_count bigint not null default 0,
  add column member_count integer not null default 0;

alter table public.messages
  add column seq bigint,
  add column counted_seq bigint;

alter table public.conversation_members
  add column last_read_seq bigint not null default 0,
  add column read_counted_seq bigint not null default 0,
  add column sent_since_read bigint not null default 0;

-- Countable messages hard-deleted (service_role corrections, a DBA's DELETE): their
-- positions keep counting as deleted for members whose read point is before them.
create table private.removed_messages (
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  seq bigint not null,
  sender_id uuid not null,
  removed_at timestamptz not null default now(),
  primary key (conversation_id, seq)
);

-- Recomputes every counter above from the rows (the V5 backfill; also what a DBA runs after
-- loading messages with triggers disabled, as the benchmark does). Messages are numbered in
-- (created_at, id) order. Triggers on messages and conversations are off while it
-- rewrites them (no edit rules, no updated_at).
create or replace function private.rebuild_chat_counters() returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  alter table public.messages disable trigger user;
  update public.messages x
     set seq = n.seq, counted_seq = n.counted_seq
    from (select m.id,
                 row_number() over w as seq,
                 count(*) filter (where m.kind <> 'system') over w as counted_seq
            from public.messages m
          window w as (partition by m.conversation_id order by m.created_at, m.id
                       rows between unbounded preceding and current row)) n
   where n.id = x.id
     and (x.seq is distinct from n.seq or x.counted_seq is distinct from n.counted_seq);
  alter table public.messages enable trigger user;

  alter table public.conversations disable trigger user;
  update public.conversations c
     set last_seq = coalesce(s.last_seq, 0),
         counted_seq = coalesce(s.counted_seq, 0),
         deleted_count = coalesce(s.deleted, 0) + coalesce(r.removed, 0),
         member_count = coalesce(mc.n, 0)
    from public.conversations c2
    left join (select x.conversation_id, max(x.seq) as last_seq,
                      max(x.counted_seq) as counted_seq,
                      count(*) filter (where x.deleted_at is not null
                                         and x.kind <> 'system') as deleted
                 from public.messages x group by x.conversation_id) s
      on s.conversation_id = c2.id
    left join (select t.conversation_id, count(*) as removed
                 from private.removed_messages t group by t.conversation_id) r
      on r.conversation_id = c2.id
    left join (select m.conversation_id, count(*) as n
                 from public.conversation_members m group by m.conversation_id) mc
      on mc.conversation_id = c2.id
   where c.id = c2.id;
  alter table public.conversations enable trigger user;

  -- Read points: the newest message created at or before last_read_at.
  update public.conversation_members m
     set last_read_seq = coalesce(p.seq, 0),
         read_counted_seq = coalesce(p.counted_seq, 0)
    from public.conversation_members m2
    left join lateral (
      select x.seq, x.counted_seq from public.messages x
       where x.conversation_id = m2.conversation_id and x.created_at <= m2.last_read_at
       order by x.created_at desc, x.id desc limit 1) p on true
   where m.conversation_id = m2.conversation_id and m.user_id = m2.user_id;

  update public.conversation_members m
     set sent_since_read = coalesce(o.n, 0) + coalesce(r.n, 0)
    from public.conversation_members m2
    left join lateral (
      select count(*) as n from public.messages x
       where x.conversation_id = m2.conversation_id and x.sender_id = m2.user_id
         and x.kind <> 'system' and x.seq > m2.last_read_seq) o on true
    left join lateral (
      select count(*) as n from private.removed_messages t
       where t.conversation_id = m2.conversation_id and t.sender_id = m2.user_id
         and t.seq > m2.last_read_seq) r on true
   where m.conversation_id = m2.conversation_id and m.user_id = m2.user_id
     and m.sent_since_read is distinct from coalesce(o.n, 0) + coalesce(r.n, 0);
end
$$;
revoke all on function private.rebuild_chat_counters() from public;

select private.rebuild_chat_counters();

alter table public.messages
  alter column seq set not null,
  alter column counted_seq set not null;

-- A conversation's history by position: get_messages pages, mark_conversation_read.
create unique index messages_position_idx on public.messages (conversation_id, seq);
-- A member's own messages after a read point (sent_since_read when the read point moves).
create index messages_sender_position_idx on public.messages (conversation_id, sender_id, seq)
  where kind <> 'system';
-- Deleted messages by position: the only rows unread counting reads.
create index messages_deleted_position_idx on public.messages (conversation_id, seq)
  include (sender_id)
  where deleted_at is not null and kind <> 'system';

-- The counters are public to members (live badges read them from the change stream); they
-- are written only by the database's triggers.
grant select (last_seq, counted_seq, deleted_count, member_count)
  on public.conversations to authenticated;
grant select on private.removed_messages to service_role;
