-- The publication Ripple streams (name from `ripple migrate --publication`, default
-- "ripple"). Which tables stream is its membership, managed in SQL:
--   alter publication ripple add table public.my_table;
-- Re-running adds the chat tables that are missing and leaves the DBA's additions alone.
do $$
declare
  pub text := coalesce(nullif(current_setting('ripple.publication', true), ''), 'ripple');
  t text;
begin
  if not exists (select 1 from pg_publication where pubname = pub) then
    execute format('create publication %I', pub);
  end if;
  foreach t in array array['profiles', 'conversations', 'conversation_members', 'messages',
                           'message_reactions'] loop
    if not exists (select 1 from pg_publication_tables
                    where pubname = pub and schemaname = 'public' and tablename = t) then
      execute format('alter publication %I add table public.%I', pub, t);
    end if;
  end loop;
end
$$;
