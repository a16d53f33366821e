-- Row-level security for public.conversations. Idempotent: edit and re-run `ripple migrate`.

-- Members see their conversations. Nobody else learns that a conversation exists.
drop policy if exists conversations_select_members on public.conversations;
create policy conversations_select_members on public.conversations
  for select to authenticated
  using (id in (select private.my_conversation_ids()));

-- Any signed-in user may create a conversation, only in their own name. (Members are then
-- seeded by the creator in the same transaction; see conversation_members.)
drop policy if exists conversations_insert_own on public.conversations;
create policy conversations_insert_own on public.conversations
  for insert to authenticated
  with check (created_by = (select auth.uid()));

-- Owners and admins of a group may change its title, description and avatar (the only
-- updatable columns). Direct conversations have no editable details.
drop policy if exists conversations_update_group_admins on public.conversations;
create policy conversations_update_group_admins on public.conversations
  for update to authenticated
  using (id in (select private.my_admin_conversation_ids()))
  with check (id in (select private.my_admin_conversation_ids()));

-- No DELETE policy: conversations are never deleted by users.
