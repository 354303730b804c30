-- A ledger row is updated four times in its life (the attempt counter, the dispatch mark, the final status,
-- the move). Two of those change no indexed column, so PostgreSQL can update them in place (HOT: no new
-- entry in any of the table's eight indexes) if the row's page has room. Claims insert rows a thousand at a
-- time into full pages, so before this only one update in five was HOT. Room left on each page for them:
ALTER TABLE tlog_files SET (fillfactor = 60);
