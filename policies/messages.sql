-- Row-level security for public.messages. Idempotent.
--
-- Written for large tables (the patterns Supabase documents for RLS performance):
-- `(select auth.uid())` is evaluated once per statement, not once per row; membership is
-- `conversation_id in (select private.my_conversation_ids())`, one call per statement and a
-- hash probe per row, instead of a SECURITY DEFINER call per row; and the columns they
-- filter by (conversation_id here, conversation_members.user_id in the helper) are indexed.

-- Members read the messages of their conversations; nobody else reads any.
drop policy if exists messages_select_members on public.messages;
create policy messages_select_members on public.messages
  for select to authenticated
  using (conversation_id in (select private.my_conversation_ids()));

-- Members send into their conversations, only as themselves, never as the system.
drop policy if exists messages_insert_as_self on public.messages;
create policy messages_insert_as_self on public.messages
  for insert to authenticated
  with check (
    sender_id = (select auth.uid())
    and kind <> 'system'
    and conversation_id in (select private.my_conversation_ids())
  );

-- Senders edit and delete their own messages; owners and admins of a group may delete
-- (not edit: the trigger allows body changes only to the sender) any message in it.
drop policy if exists messages_update_sender_or_admin on public.messages;
create policy messages_update_sender_or_admin on public.messages
  for update to authenticated
  using (
    conversation_id in (select private.my_conversation_ids())
    and (sender_id = (select auth.uid())
         or conversation_id in (select private.my_admin_conversation_ids()))
  )
  with check (conversation_id in (select private.my_conversation_ids()));

-- No DELETE policy: deletion is soft (set deleted_at, see delete_message).
