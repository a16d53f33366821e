-- An example of broadcast from the database: every reaction added to or removed from a
-- message is broadcast on the conversation's private channel `conversation:<id>` as event
-- `reaction`, with Supabase's broadcast_changes payload ({"operation", "record",
-- "old_record", ...}). Only members who joined the private channel (the realtime.messages
-- SELECT policy in policies/realtime_messages.sql) receive it. Idempotent.
--
-- security definer: the message is written by the function's owner (who owns
-- realtime.messages), as in Supabase's own examples; the reaction itself was already
-- checked by the message_reactions policies. The payload is the reaction row only.

create or replace function private.broadcast_reaction() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform realtime.broadcast_changes(
    'conversation:' || coalesce(new.conversation_id, old.conversation_id)::text,
    'reaction',
    tg_op,
    tg_table_name,
    tg_table_schema,
    new,
    old
  );
  return null;
end;
$$;

drop trigger if exists message_reactions_broadcast on public.message_reactions;
create trigger message_reactions_broadcast
  after insert or delete on public.message_reactions
  for each row execute function private.broadcast_reaction();

revoke all on function private.broadcast_reaction() from public, anon, authenticated;
