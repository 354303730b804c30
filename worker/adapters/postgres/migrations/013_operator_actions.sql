-- Dead letters that mean something, failed tasks that can be retried, and what operators did about them.

-- A dead letter's life: dead (in <queue>.dead) -> replayed (sent again; dead again resets it) -> resolved (its
-- work later succeeded, by the replay or by another path) or purged (an operator removed it from the queue).
-- Alerts count the dead ones only: not replayed, not resolved, not purged.
ALTER TABLE dead_letters
    ADD COLUMN resolved_at  timestamptz,
    ADD COLUMN resolution   text,
    ADD COLUMN purged_at    timestamptz,
    ADD COLUMN purged_by    text,
    ADD COLUMN replayed_by  text,
    ADD COLUMN replayed_as  text;
-- the open ones of a retailer: what every scan's sweep (RESOLVE_DONE) reads
CREATE INDEX dead_letters_open ON dead_letters (retailer_id, queue)
    WHERE resolved_at IS NULL AND purged_at IS NULL;

-- Tasks that ended FAILURE without a dead letter, kept with their arguments so Flower's Retry re-sends them as
-- they were: an ingest whose file failed (a bad file; its fix is a replay of the file), a scan that ran out of
-- retries (the next scheduled scan redoes it, so no dead letter).
CREATE TABLE task_failures (
    task_id     text PRIMARY KEY,
    task_name   text        NOT NULL,
    queue       text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('file_failed', 'gave_up')),
    args        jsonb       NOT NULL,
    kwargs      jsonb       NOT NULL,
    reason      text        NOT NULL,
    retailer_id text,
    file_id     bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retried_at  timestamptz,
    retried_by  text,
    retried_as  text
);
CREATE INDEX task_failures_kind ON task_failures (kind, retailer_id, task_name);

-- Every action an operator took from tlogsync's pages in Flower: who, when, what, and what came of it.
CREATE TABLE operator_actions (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      jsonb       NOT NULL,
    ok          boolean,
    result      text,
    finished_at timestamptz,
    remote_addr text
);
CREATE INDEX operator_actions_at ON operator_actions (at DESC);
