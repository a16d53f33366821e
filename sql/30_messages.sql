-- Messages: send, edit, delete, forward, react.

-- A system message, written by the database itself (membership changes, group creation).
create or replace function private.system_message(conv uuid, body text) returns void
language sql volatile security definer set search_path = ''
as $$
  insert into public.messages (conversation_id, sender_id, kind, body)
  values (conv, null, 'system', body)
$$;

-- Send a message. A retry with the same client_id returns the first message instead of
-- sending a second. reply_to_id must be in the same conversation (a foreign key says so).
-- attachment: {"url", "filename", "size", "mime_type"}.
create or replace function public.send_message(
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
  if attachment is not null and jsonb_typeof(attachment) <> 'object' then
    perform private.fail('22023', 'attachment must be an object with url, filename, size, mime_type');
  end if;
  if send_message.reply_to_id is not null and not exists (
       select 1 from public.messages r
        where r.id = send_message.reply_to_id
          and r.conversation_id = send_message.conversation_id) then
    perform private.fail('22023', 'the message replied to is not in this conversation');
  end if;
  if send_message.client_id is not null then
    select * into m from public.messages x
     where x.sender_id = me and x.client_id = send_message.client_id;
    if found then
      return m;
    end if;
  end if;
  insert into public.messages as x (conversation_id, sender_id, kind, body, reply_to_id,
                               attachment_url, attachment_filename, attachment_size,
                               attachment_mime_type, client_id)
  values (send_message.conversation_id, me, send_message.kind, send_message.body,
          send_message.reply_to_id,
          attachment ->> 'url', attachment ->> 'filename', (attachment ->> 'size')::bigint,
          attachment ->> 'mime_type', send_message.client_id)
  -- A concurrent retry that won the race: fall through and return its row.
  on conflict on constraint messages_client_id_unique do nothing
  returning * into m;
  if m.id is null then
    select * into strict m from public.messages x
     where x.sender_id = me and x.client_id = send_message.client_id;
  end if;
  return m;
end
$$;

-- Edit a message's body (the sender, within the edit window: the trigger enforces both).
create or replace function public.edit_message(message_id uuid, body text)
returns public.messages
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  m public.messages;
begin
  -- A member who can see the message but is not its sender is told so (403), rather
  -- than getting "not found" from the UPDATE policy hiding the row.
  select * into m from public.messages x where x.id = edit_message.message_id;
  if not found then
    perform private.fail('P0002', 'message not found');
  end if;
  if m.sender_id is distinct from auth.uid() then
    perform private.fail('42501', 'only the sender can edit a message');
  end if;
  update public.messages x set body = edit_message.body
   where x.id = edit_message.message_id
  returning * into m;
  if m.id is null then
    perform private.fail('P0002', 'message not found');
  end if;
  return m;
end
$$;

-- Soft-delete a message (its sender, or an owner/admin of its group: the UPDATE policy).
create or replace function public.delete_message(message_id uuid) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  sender uuid;
begin
  select x.sender_id into sender from public.messages x where x.id = delete_message.message_id;
  if not found then
    perform private.fail('P0002', 'message not found');
  end if;
  update public.messages x set deleted_at = now() where x.id = delete_message.message_id;
  if not found then
    perform private.fail('42501', 'you cannot delete this message',
                         'senders delete their own messages; group admins delete any');
  end if;
end
$$;

-- Forward a message the caller can see into another conversation the caller belongs to.
create or replace function public.forward_message(message_id uuid, to_conversation_id uuid)
returns public.messages
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  src public.messages;
  m public.messages;
begin
  select * into src from public.messages x where x.id = forward_message.message_id;
  if not found then
    perform private.fail('P0002', 'message not found');
  end if;
  if src.deleted_at is not null then
    perform private.fail('P0001', 'a deleted message cannot be forwarded');
  end if;
  if src.kind = 'system' then
    perform private.fail('22023', 'system messages cannot be forwarded');
  end if;
  if not private.is_member(forward_message.to_conversation_id) then
    perform private.fail('42501', 'you are not a member of the target conversation');
  end if;
  insert into public.messages as x (conversation_id, sender_id, kind, body, forwarded_from_id,
                               attachment_url, attachment_filename, attachment_size,
                               attachment_mime_type)
  values (forward_message.to_conversation_id, auth.uid(), src.kind, src.body, src.id,
          src.attachment_url, src.attachment_filename, src.attachment_size,
          src.attachment_mime_type)
  returning * into m;
  return m;
end
$$;

-- React to a message with an emoji (idempotent).
create or replace function public.react(message_id uuid, emoji text) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  src public.messages;
begin
  select * into src from public.messages x where x.id = react.message_id;
  if not found then
    perform private.fail('P0002', 'message not found');
  end if;
  if src.deleted_at is not null then
    perform private.fail('P0001', 'a deleted message cannot be reacted to');
  end if;
  if react.emoji is null or char_length(react.emoji) not between 1 and 32 then
    perform private.fail('22023', 'an emoji is 1 to 32 characters');
  end if;
  insert into public.message_reactions (message_id, conversation_id, user_id, emoji)
  values (src.id, src.conversation_id, auth.uid(), react.emoji)
  on conflict do nothing;
end
$$;

-- Remove the caller's reaction (idempotent).
create or replace function public.unreact(message_id uuid, emoji text) returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  delete from public.message_reactions r
   where r.message_id = unreact.message_id and r.user_id = (select auth.uid())
     and r.emoji = unreact.emoji;
end
$$;
