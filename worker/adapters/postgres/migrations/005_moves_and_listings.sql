-- A move that fails is retried with backoff instead of being dead-lettered; what a scan listed but could
-- not take is recorded, so a stuck file (clock skew, a symlink) is seen; a scan that gave up says why.

-- A final file whose move out of the inbound folder failed stays final and unmoved (moved_at NULL):
-- how many moves failed, why the last one did, and when the next scan may send it to try again.
ALTER TABLE tlog_files
    ADD COLUMN move_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN move_error    text,
    ADD COLUMN next_move_at  timestamptz;

-- Per scan: entries matching the pattern that are not regular files (symlinks, FIFOs, directories), the
-- age of the oldest file still too young at listing time (negative: its mtime is in the future), and
-- why a scan did nothing (another scan of the retailer was running).
ALTER TABLE scan_runs
    ADD COLUMN ignored            integer NOT NULL DEFAULT 0,
    ADD COLUMN oldest_too_young_s numeric(14, 1),
    ADD COLUMN note               text;
