-- Row-level security for public.conversation_members. Idempotent.

-- Members see who else is in their conversations (and their read state, for receipts).
drop policy if exists members_select_comembers on public.conversation_members;
create policy members_select_comembers on public.conversation_members
  for select to authenticated
  using (conversation_id in (select private.my_conversation_ids()));

-- Owners and admins add members to their groups (never as owner, never someone banned
-- from it). The creator of a conversation seeds its first members, itself as owner, in the
-- creating transaction.
drop policy if exists members_insert_by_admins on public.conversation_members;
create policy members_insert_by_admins on public.conversation_members
  for insert to authenticated
  with check (
    (
      (private.is_group_admin(conversation_id) and role <> 'owner')
      or private.created_by_me_now(conversation_id)
    )
    and not private.is_banned(conversation_id, user_id)
  );

-- Members update their own row (read state, archive, mute); a group's owner updates
-- others' roles. The member_before_update trigger narrows which columns each may change.
drop policy if exists members_update_self_or_owner on public.conversation_members;
create policy members_update_self_or_owner on public.conversation_members
  for update to authenticated
  using (user_id = (select auth.uid()) or private.my_role(conversation_id) = 'owner')
  with check (user_id = (select auth.uid()) or private.my_role(conversation_id) = 'owner');

-- Anyone may leave a group (delete their own row); the owner removes anyone else, an admin
-- removes plain members. Direct conversations have no removal (the RPCs refuse leaving).
drop policy if exists members_delete_self_or_admin on public.conversation_members;
create policy members_delete_self_or_admin on public.conversation_members
  for delete to authenticated
  using (
    private.conversation_kind(conversation_id) = 'group'
    and (
      user_id = (select auth.uid())
      or private.my_role(conversation_id) = 'owner'
      or (private.my_role(conversation_id) = 'admin' and role = 'member')
    )
  );
