-- V3: a feed of security-relevant DDL, carried by the replication stream itself.
--
-- Ripple evaluates the tables' own RLS policies (read from pg_policy) against each change.
-- It caches what it read; when a DBA changes a policy, a grant or row security, the event
-- trigger below writes a row here in the same transaction, the row reaches Ripple through
-- the publication in commit order, and Ripple drops its cache before it authorizes any
-- later change. So a changed policy applies from the next change, with no restart.

create schema if not exists ripple;

create table if not exists ripple.security_changes (
  id bigint generated always as identity primary key,
  changed_at timestamptz not null default now(),
  command_tag text not null
);
alter table ripple.security_changes replica identity full;

create or replace function ripple.note_security_change() returns event_trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into ripple.security_changes (command_tag) values (tg_tag);
  -- Keep the table small: only the newest rows matter, and only as a signal.
  delete from ripple.security_changes
   where id < (select max(id) - 100 from ripple.security_changes);
end
$$;

-- Event triggers need a superuser. Where migrations run without one (some managed
-- services), Ripple still re-reads policies periodically.
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    if not exists (select 1 from pg_event_trigger where evtname = 'ripple_security_changes') then
      create event trigger ripple_security_changes on ddl_command_end
        when tag in ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY', 'GRANT', 'REVOKE',
                     'ALTER TABLE', 'CREATE TABLE', 'DROP TABLE')
        execute function ripple.note_security_change();
    end if;
  else
    raise notice 'not a superuser: policy changes will reach Ripple by periodic refresh only';
  end if;
end
$$;
