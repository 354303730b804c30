-- Reliability: dead letters with their reasons, replayed files, bounded follow-up attempts.

-- What a task gave up on, written just before its message is rejected into <queue>.dead:
-- the broker keeps the message, this keeps the reason (RabbitMQ only says "rejected").
CREATE TABLE dead_letters (
    task_id     text PRIMARY KEY,
    task_name   text        NOT NULL,
    queue       text        NOT NULL,
    args        jsonb       NOT NULL,
    kwargs      jsonb       NOT NULL,
    reason      text        NOT NULL,
    retailer_id text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, created_at);

-- A file taken out of error_dir and processed again: the old row stays as it was, pointing at the new one.
-- deferred: a replay points the old row at a placeholder until the new row exists, in one transaction
ALTER TABLE tlog_files ADD COLUMN replayed_by bigint REFERENCES tlog_files (id) DEFERRABLE INITIALLY DEFERRED;
DROP INDEX tlog_files_claim;
CREATE UNIQUE INDEX tlog_files_claim ON tlog_files (retailer_id, feed, file_name)
    WHERE status <> 'duplicate' AND replayed_by IS NULL;

ALTER TABLE order_followups DROP CONSTRAINT order_followups_status_check;
ALTER TABLE order_followups ADD CONSTRAINT order_followups_status_check
    CHECK (status IN ('pending', 'done', 'failed'));
