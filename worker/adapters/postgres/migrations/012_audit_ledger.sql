-- The daily audit (issue 14): each file of the orders feed carries what the audit needs to account for it,
-- written by the statement that records its final status (never an extra statement per file):
--   business_day  the store-local day of the sale inside it (NULL when it did not parse: the audit then
--                 takes the day from the file's name or time)
--   store_id, register_id, register_txn  where it was rung up (orderAttribution.storeRegisterId and
--                 .registerTransactionId, or the documented equivalents), for the sequence-gap check
--   sale_totals   what was sold, as the TLog says it (amounts as strings): kept for every sale, so that the
--                 in-store sales of a retailer that is not the order master (not stored as orders) are counted
ALTER TABLE tlog_files
    ADD COLUMN IF NOT EXISTS business_day date,
    ADD COLUMN IF NOT EXISTS store_id     text,
    ADD COLUMN IF NOT EXISTS register_id  text,
    ADD COLUMN IF NOT EXISTS register_txn text,
    ADD COLUMN IF NOT EXISTS sale_totals  jsonb;

CREATE INDEX IF NOT EXISTS tlog_files_business_day ON tlog_files (retailer_id, business_day);
CREATE INDEX IF NOT EXISTS tlog_files_without_day ON tlog_files (retailer_id, claimed_at) WHERE business_day IS NULL;
CREATE INDEX IF NOT EXISTS tlog_files_register ON tlog_files (retailer_id, store_id, register_id, business_day)
    WHERE register_txn IS NOT NULL;

-- Files recorded before this migration: their day and store from the order or return they stored.
UPDATE tlog_files t SET business_day = o.order_date::date, store_id = o.store_id
FROM orders o WHERE o.tlog_file_id = t.id AND t.business_day IS NULL;
UPDATE tlog_files t SET business_day = r.return_date::date, store_id = r.store_id
FROM returns r WHERE r.tlog_file_id = t.id AND t.business_day IS NULL;

-- The last audit per retailer, as status and the metrics show it.
ALTER TABLE audit_reports
    ADD COLUMN IF NOT EXISTS differences integer NOT NULL DEFAULT 0;

-- Differences an operator has looked at and explained ("tender short by a cent: the till's rounding, ticket
-- 4711"): an explained difference is still listed, with its note, and no longer makes the day inconsistent.
CREATE TABLE IF NOT EXISTS audit_notes (
    retailer_id   text        NOT NULL,
    business_date date        NOT NULL,
    subject       text        NOT NULL,  -- the difference's key, as the report prints it
    note          text        NOT NULL CHECK (note <> ''),
    noted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (retailer_id, business_date, subject)
);
