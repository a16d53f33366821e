-- Ripple caches authorization verdicts: "may this identity see a row of this table with
-- these values in the columns its policies read?" It drops a cached answer the moment the
-- replication stream shows a change to any table the answer was read from, and never
-- caches policies that depend on time or on tables outside the publication.
--
-- A DBA who wants a table's changes always checked afresh lists it here:
--   insert into ripple.verdict_cache_off (table_name, reason)
--   values ('public.my_table', 'policy reads an unpublished table through a function');
-- The table is in the publication, so Ripple sees the change and applies it at once.
create table if not exists ripple.verdict_cache_off (
  table_name regclass primary key,
  reason text
);
alter table ripple.verdict_cache_off replica identity full;
