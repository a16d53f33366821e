-- Row-level security for public.message_reactions. Idempotent.

-- Members see the reactions in their conversations.
drop policy if exists reactions_select_members on public.message_reactions;
create policy reactions_select_members on public.message_reactions
  for select to authenticated
  using (conversation_id in (select private.my_conversation_ids()));

-- Members react as themselves, in their conversations.
drop policy if exists reactions_insert_as_self on public.message_reactions;
create policy reactions_insert_as_self on public.message_reactions
  for insert to authenticated
  with check (user_id = (select auth.uid()) and conversation_id in (select private.my_conversation_ids()));

-- Users remove only their own reactions.
drop policy if exists reactions_delete_own on public.message_reactions;
create policy reactions_delete_own on public.message_reactions
  for delete to authenticated
  using (user_id = (select auth.uid()));
