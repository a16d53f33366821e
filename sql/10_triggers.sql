-- Triggers: the rules that hold whoever writes (RPC, REST or a DBA's psql session).

-- updated_at follows every update.
create or replace function private.touch_updated_at() returns trigger
language plpgsql set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists touch_updated_at on public.profiles;
create trigger touch_updated_at before update on public.profiles
  for each row execute function private.touch_updated_at();
drop trigger if exists touch_updated_at on public.conversations;
create trigger touch_updated_at before update on public.conversations
  for each row execute function private.touch_updated_at();

-- New messages: validate content against the message kind and the configured limits, then
-- take the message's place in its conversation (see schema/V5 for the counters).
-- SECURITY DEFINER: the conversation row (position counters, preview) is not writable by
-- members. Updating that row here, before the insert, serialises senders per conversation,
-- so seq order is commit order and created_at is kept increasing with it.
create or replace function private.message_before_insert() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  s private.settings := private.settings();
  pos bigint;
  counted bigint;
  at timestamptz;
begin
  if new.kind = 'text' and coalesce(btrim(new.body), '') = '' then
    perform private.fail('22023', 'a text message needs a body');
  end if;
  if new.kind in ('image', 'video', 'audio', 'file') and new.attachment_url is null then
    perform private.fail('22023', 'a ' || new.kind::text || ' message needs an attachment url');
  end if;
  if char_length(new.body) > s.max_body_chars then
    perform private.fail('22023', 'message body is too long',
                         'at most ' || s.max_body_chars || ' characters');
  end if;
  new.edited_at := null;
  new.deleted_at := null;
  -- A retry with a client_id already used will not be inserted (a unique violation, or
  -- send_message's ON CONFLICT DO NOTHING, which would skip the row after this trigger):
  -- it must not take a position. The lock makes a concurrent first attempt visible here.
  if new.client_id is not null and new.sender_id is not null then
    perform pg_advisory_xact_lock(hashtextextended(new.sender_id::text || ':' || new.client_id, 7007005));
    if exists (select 1 from public.messages x
                where x.sender_id = new.sender_id and x.client_id = new.client_id) then
      new.seq := 0;
      new.counted_seq := 0;
      return new;
    end if;
  end if;
  update public.conversations c
     set last_seq = c.last_seq + 1,
         counted_seq = c.counted_seq + case when new.kind = 'system' then 0 else 1 end,
         -- Strictly after the previous message, even when the clock read before this
         -- sender waited for the row is older.
         last_message_at = case
           when c.last_message_at >= new.created_at
             then greatest(clock_timestamp(), c.last_message_at + interval '1 microsecond')
           else new.created_at end,
         last_message_preview = private.preview(new),
         last_message_id = new.id
   where c.id = new.conversation_id
  returning c.last_seq, c.counted_seq, c.last_message_at into pos, counted, at;
  if not found then
    raise foreign_key_violation using message = 'conversation not found';
  end if;
  new.seq := pos;
  new.counted_seq := counted;
  new.created_at := at;
  return new;
end
$$;

drop trigger if exists message_before_insert on public.messages;
create trigger message_before_insert before insert on public.messages
  for each row execute function private.message_before_insert();

-- Updates are edits or soft deletes, nothing else (for API callers; service_role and the
-- table owner are trusted with corrections).
-- * A soft delete (deleted_at set) clears the body and attachment; who may delete is the
--   UPDATE policy's business (sender, or a group's owner/admin).
-- * An edit changes only the body, only by the sender, only within the edit window.
-- * A deleted message never changes again.
create or replace function private.message_before_update() returns trigger
language plpgsql set search_path = ''
as $$
declare
  s private.settings := private.settings();
begin
  if old.deleted_at is not null then
    perform private.fail('P0001', 'this message was deleted');
  end if;
  if new.deleted_at is not null then
    new.deleted_at := now();
    new.body := null;
    new.attachment_url := null;
    new.attachment_filename := null;
    new.attachment_size := null;
    new.attachment_mime_type := null;
    return new;
  end if;
  if new.body is not distinct from old.body or not private.is_api_role() then
    return new;
  end if;
  if old.kind = 'system' then
    perform private.fail('42501', 'system messages cannot be edited');
  end if;
  if old.sender_id is distinct from auth.uid() then
    perform private.fail('42501', 'only the sender can edit a message');
  end if;
  if now() - old.created_at > s.message_edit_window then
    perform private.fail('P0001', 'the edit window for this message has passed',
                         'messages can be edited for ' || s.message_edit_window::text);
  end if;
  if old.kind = 'text' and coalesce(btrim(new.body), '') = '' then
    perform private.fail('22023', 'a text message needs a body', 'delete the message instead');
  end if;
  if char_length(new.body) > s.max_body_chars then
    perform private.fail('22023', 'message body is too long');
  end if;
  new.edited_at := now();
  return new;
end
$$;

drop trigger if exists message_before_update on public.messages;
create trigger message_before_update before update on public.messages
  for each row execute function private.message_before_update();

-- After a message is written: the sender's own-message counter (one row: the sender's),
-- and the preview follows edits and deletion of the newest message; a soft delete counts in
-- conversations.deleted_count. SECURITY DEFINER: members may not update conversations.
create or replace function private.message_after_write() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    if new.kind <> 'system' and new.sender_id is not null then
      update public.conversation_members m
         set sent_since_read = m.sent_since_read + 1
       where m.conversation_id = new.conversation_id and m.user_id = new.sender_id;
    end if;
  elsif new.body is distinct from old.body or new.deleted_at is distinct from old.deleted_at then
    update public.conversations c
       set last_message_preview = case when c.last_message_id = new.id
                                       then private.preview(new)
                                       else c.last_message_preview end,
           deleted_count = c.deleted_count
             + case when old.deleted_at is null and new.deleted_at is not null
                         and new.kind <> 'system' then 1 else 0 end
     where c.id = new.conversation_id
       and (c.last_message_id = new.id
            or (old.deleted_at is null and new.deleted_at is not null and new.kind <> 'system'));
  end if;
  return null;
end
$$;

drop trigger if exists message_after_write on public.messages;
create trigger message_after_write after insert or update on public.messages
  for each row execute function private.message_after_write();

-- A countable message deleted outright (not soft-deleted: service_role, a DBA) leaves its
-- position behind in private.removed_messages, so members whose read point is before it
-- stop counting it. Skipped when the whole conversation is being deleted.
create or replace function private.message_after_delete() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  if old.kind <> 'system' and old.sender_id is not null then
    insert into private.removed_messages (conversation_id, seq, sender_id)
    select old.conversation_id, old.seq, old.sender_id
     where exists (select 1 from public.conversations c where c.id = old.conversation_id)
    on conflict do nothing;
    if old.deleted_at is null then
      update public.conversations c set deleted_count = c.deleted_count + 1
       where c.id = old.conversation_id;
    end if;
  end if;
  return null;
end
$$;

drop trigger if exists message_after_delete on public.messages;
create trigger message_after_delete after delete on public.messages
  for each row execute function private.message_after_delete();

-- The read point: whenever last_read_at is set (mark_conversation_read, a client's REST
-- update, a new member), derive last_read_seq / read_counted_seq from the newest message
-- created at or before it, and recount the member's own messages after it (rows after the
-- read point only). SECURITY DEFINER: counts rows the caller may see anyway, for the row
-- being written only.
create or replace function private.member_read_point() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  new.last_read_seq := 0;
  new.read_counted_seq := 0;
  if new.last_read_at is not null then
    select x.seq, x.counted_seq into new.last_read_seq, new.read_counted_seq
      from public.messages x
     where x.conversation_id = new.conversation_id and x.created_at <= new.last_read_at
     order by x.created_at desc, x.id desc limit 1;
    new.last_read_seq := coalesce(new.last_read_seq, 0);
    new.read_counted_seq := coalesce(new.read_counted_seq, 0);
  end if;
  new.sent_since_read :=
    (select count(*) from public.messages x
      where x.conversation_id = new.conversation_id and x.sender_id = new.user_id
        and x.kind <> 'system' and x.seq > new.last_read_seq)
    + (select count(*) from private.removed_messages t
        where t.conversation_id = new.conversation_id and t.sender_id = new.user_id
          and t.seq > new.last_read_seq);
  return new;
end
$$;

drop trigger if exists member_read_point on public.conversation_members;
create trigger member_read_point before insert or update of last_read_at
  on public.conversation_members
  for each row execute function private.member_read_point();

-- Role changes: only a group's owner changes roles, and never to or from owner (that is
-- what leaving hands over). Read state, archive and mute belong to the member alone.
create or replace function private.member_before_update() returns trigger
language plpgsql set search_path = ''
as $$
begin
  if not private.is_api_role() then
    return new; -- the database's own triggers (owner hand-over) and trusted roles
  end if;
  if new.role is distinct from old.role then
    if private.my_role(old.conversation_id) is distinct from 'owner'
       or private.conversation_kind(old.conversation_id) <> 'group' then
      perform private.fail('42501', 'only the group owner can change member roles');
    end if;
    if new.role = 'owner' or old.role = 'owner' then
      perform private.fail('42501', 'ownership cannot be changed this way');
    end if;
  end if;
  if old.user_id is distinct from auth.uid()
     and (new.last_read_at is distinct from old.last_read_at
          or new.last_read_message_id is distinct from old.last_read_message_id
          or new.archived_at is distinct from old.archived_at
          or new.muted_until is distinct from old.muted_until
          or new.pinned_at is distinct from old.pinned_at
          or new.last_delivered_at is distinct from old.last_delivered_at) then
    perform private.fail('42501', 'read state, archive, mute and pins belong to the member');
  end if;
  return new;
end
$$;

drop trigger if exists member_before_update on public.conversation_members;
create trigger member_before_update before update on public.conversation_members
  for each row execute function private.member_before_update();

-- Group membership changes are written into the conversation as system messages, and a
-- departing owner hands ownership to the longest-standing admin (else member).
-- SECURITY DEFINER: system messages are the database's own words, which no user may send.
create or replace function private.member_after_change() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  conv uuid := coalesce(new.conversation_id, old.conversation_id);
  k public.conversation_kind;
  actor uuid := auth.uid();
  body text;
  heir record;
begin
  update public.conversations c
     set member_count = c.member_count + case when tg_op = 'INSERT' then 1 else -1 end
   where c.id = conv
  returning c.kind into k;
  if k is distinct from 'group' then
    return null; -- direct conversation, or the conversation itself is being deleted
  end if;
  if tg_op = 'INSERT' then
    if private.created_by_me_now(conv) then
      return null; -- the creator seeding the group; the creation message covers it
    end if;
    body := private.display_name(actor) || ' added ' || private.display_name(new.user_id);
  else
    if old.user_id = actor then
      body := private.display_name(old.user_id) || ' left';
    else
      body := coalesce(private.display_name(actor), 'an administrator')
              || ' removed ' || private.display_name(old.user_id);
    end if;
    if old.role = 'owner' then
      select m.user_id into heir from public.conversation_members m
       where m.conversation_id = conv
       order by (m.role = 'admin') desc, m.joined_at, m.user_id
       limit 1;
      if found then
        update public.conversation_members m set role = 'owner'
         where m.conversation_id = conv and m.user_id = heir.user_id;
      end if;
    end if;
  end if;
  insert into public.messages (conversation_id, sender_id, kind, body)
  values (conv, null, 'system', body);
  return null;
end
$$;

drop trigger if exists member_after_change on public.conversation_members;
create trigger member_after_change after insert or delete on public.conversation_members
  for each row execute function private.member_after_change();
