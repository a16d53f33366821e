-- Row-level security for public.conversation_bans. Idempotent.

-- A group's owners and admins see its bans; a banned user sees their own ban (so a client
-- can say why it cannot rejoin). Nobody else learns of them.
drop policy if exists bans_select_admins_or_self on public.conversation_bans;
create policy bans_select_admins_or_self on public.conversation_bans
  for select to authenticated
  using (conversation_id in (select private.my_admin_conversation_ids())
         or user_id = (select auth.uid()));

-- Owners and admins ban, in their own name, anyone but themselves and the owner.
drop policy if exists bans_insert_admins on public.conversation_bans;
create policy bans_insert_admins on public.conversation_bans
  for insert to authenticated
  with check (
    conversation_id in (select private.my_admin_conversation_ids())
    and banned_by = (select auth.uid())
    and user_id <> (select auth.uid())
    and not exists (
      select 1 from public.conversation_members m
       where m.conversation_id = conversation_bans.conversation_id
         and m.user_id = conversation_bans.user_id and m.role = 'owner')
  );

-- Owners and admins lift bans.
drop policy if exists bans_delete_admins on public.conversation_bans;
create policy bans_delete_admins on public.conversation_bans
  for delete to authenticated
  using (conversation_id in (select private.my_admin_conversation_ids()));
