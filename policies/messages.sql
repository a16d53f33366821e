-- Row-level security for public.messages. Idempotent.

-- Members read the messages of their conversations; nobody else reads any.
drop policy if exists messages_select_members on public.messages;
create policy messages_select_members on public.messages
  for select to authenticated
  using (private.is_member(conversation_id));

-- Members send into their conversations, only as themselves, never as the system.
drop policy if exists messages_insert_as_self on public.messages;
create policy messages_insert_as_self on public.messages
  for insert to authenticated
  with check (
    sender_id = auth.uid()
    and kind <> 'system'
    and private.is_member(conversation_id)
  );

-- Senders edit and delete their own messages; owners and admins of a group may delete
-- (not edit: the trigger allows body changes only to the sender) any message in it.
drop policy if exists messages_update_sender_or_admin on public.messages;
create policy messages_update_sender_or_admin on public.messages
  for update to authenticated
  using (
    private.is_member(conversation_id)
    and (sender_id = auth.uid() or private.is_group_admin(conversation_id))
  )
  with check (private.is_member(conversation_id));

-- No DELETE policy: deletion is soft (set deleted_at, see delete_message).
