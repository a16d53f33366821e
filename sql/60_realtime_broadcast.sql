-- Broadcast from the database, as Supabase defines it: realtime.send() and
-- realtime.broadcast_changes() insert a row into realtime.messages; Ripple reads the insert
-- from the replication stream and delivers it as a broadcast to the channels joined on the
-- topic. A private message reaches only the members whose realtime.messages SELECT policy
-- allowed them to join the private channel; a public one reaches the public channel.
-- Idempotent.

-- Sends `payload` as event `event` on `topic` (the channel name without `realtime:`).
-- Runs as the caller: the realtime.messages INSERT policies decide whether they may send on
-- the topic (realtime.topic() is set to it for them, as when a client sends). A send that
-- is refused, or fails, is a warning and never aborts the caller's transaction: a
-- notification must not undo the write it announces.
create or replace function realtime.send(
  payload jsonb,
  event text,
  topic text,
  private boolean default true
) returns void
language plpgsql
as $$
begin
  begin
    perform set_config('realtime.topic', topic, true);
    insert into realtime.messages (payload, event, topic, private, extension)
    values (payload, event, topic, private, 'broadcast');
  exception when others then
    raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$;

-- Broadcasts a row change from a trigger, in Supabase's payload shape:
-- {"operation", "table", "schema", "record", "old_record"}. Row-level triggers only.
create or replace function realtime.broadcast_changes(
  topic_name text,
  event_name text,
  operation text,
  table_name text,
  table_schema text,
  new record,
  old record,
  level text default 'ROW'
) returns void
language plpgsql
as $$
declare
  row_data jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation not in ('INSERT', 'UPDATE', 'DELETE') then
    raise exception 'Unexpected operation type: %', operation;
  end if;
  row_data := jsonb_build_object(
    'old_record', case when operation in ('UPDATE', 'DELETE') then to_jsonb(old) end,
    'record', case when operation in ('INSERT', 'UPDATE') then to_jsonb(new) end,
    'operation', operation,
    'table', table_name,
    'schema', table_schema);
  perform realtime.send(row_data, event_name, topic_name);
end;
$$;

-- Delivered rows are kept (Supabase keeps them for replay); this removes old ones. A DBA
-- schedules it (pg_cron, or any job): select realtime.prune_messages();
create or replace function realtime.prune_messages(keep interval default interval '1 day')
returns bigint
language sql
as $$
  with gone as (
    delete from realtime.messages where inserted_at < now() - keep returning 1
  )
  select count(*) from gone
$$;

revoke execute on function realtime.prune_messages(interval) from public;
grant execute on function realtime.send(jsonb, text, text, boolean),
  realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  to authenticated, service_role;
grant execute on function realtime.prune_messages(interval) to service_role;
