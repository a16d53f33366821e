-- Row-level security for realtime.messages: who may use which private channel. Idempotent.
-- Ripple asks these policies when a private channel is joined (SELECT) and before a
-- broadcast or presence update is relayed on it (INSERT), with realtime.topic() set to the
-- channel's topic. Topics other than `conversation:<id>` have no policy: nobody may use them
-- privately until a DBA adds one.

-- Members of a conversation may join its private channel (typing indicators, presence).
drop policy if exists realtime_messages_select_members on realtime.messages;
create policy realtime_messages_select_members on realtime.messages
  for select to authenticated
  using (
    topic = realtime.topic()
    and private.is_member(realtime.conversation_of(topic))
  );

-- Members of a conversation may send on its private channel; nobody else may.
drop policy if exists realtime_messages_insert_members on realtime.messages;
create policy realtime_messages_insert_members on realtime.messages
  for insert to authenticated
  with check (
    topic = realtime.topic()
    and private.is_member(realtime.conversation_of(topic))
  );
