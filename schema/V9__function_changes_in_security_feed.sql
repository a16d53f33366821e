-- What a policy allows depends on the functions it calls (`private.is_member`, say) as much
-- as on the policy itself: Ripple reads their bodies to know which tables and columns a
-- verdict and a private channel's access depend on. Replacing or dropping such a function,
-- or a view a policy reads, now reaches Ripple through the same feed as policy and grant
-- changes, which reloads its authorization plans, empties the verdict cache and re-checks
-- every joined channel.
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    drop event trigger if exists ripple_security_changes;
    create event trigger ripple_security_changes on ddl_command_end
      when tag in ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY', 'GRANT', 'REVOKE',
                   'ALTER TABLE', 'CREATE TABLE', 'DROP TABLE',
                   'CREATE FUNCTION', 'ALTER FUNCTION', 'DROP FUNCTION',
                   'CREATE VIEW', 'ALTER VIEW', 'DROP VIEW')
      execute function ripple.note_security_change();
  else
    raise notice 'not a superuser: function changes will reach Ripple by periodic refresh only';
  end if;
end
$$;
