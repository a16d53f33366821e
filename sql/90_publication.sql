-- The publication Ripple streams (name from `ripple migrate --publication`, default
-- "ripple"). Which tables stream is its membership, managed in SQL:
--   alter publication ripple add table public.my_table;
-- Re-running adds the chat tables that are missing and leaves the DBA's additions alone.
do $$
declare
  pub text := coalesce(nullif(current_setting('ripple.publication', true), ''), 'ripple');
  t text;
  tables text[] := array['public.profiles', 'public.conversations', 'public.conversation_members',
                         'public.messages', 'public.message_reactions',
                         'public.conversation_bans',
                         -- Ripple's cache-invalidation signals (see schema/V3, V8).
                         'ripple.security_changes', 'ripple.verdict_cache_off',
                         -- Broadcasts sent from the database (sql/60_realtime_broadcast.sql).
                         'realtime.messages'];
begin
  if not exists (select 1 from pg_publication where pubname = pub) then
    execute format('create publication %I', pub);
  end if;
  foreach t in array tables loop
    if not exists (select 1 from pg_publication_tables
                    where pubname = pub and format('%I.%I', schemaname, tablename) = t) then
      execute format('alter publication %I add table %s', pub, t);
    end if;
  end loop;
end
$$;
