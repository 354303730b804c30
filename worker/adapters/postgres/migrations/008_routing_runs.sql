-- Routing runs: in-store sales applied to inventory and send-sale orders brokered per retailer, in batches,
-- instead of one message per order. The outbox (order_followups) stays the record of what is owed; a trigger
-- row per retailer and kind coalesces the messages that start a run: one pending trigger at a time.
CREATE TABLE routing_triggers (
    retailer_id  text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('inventory', 'brokering')),
    pending      boolean     NOT NULL DEFAULT false,
    requested_at timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    last_result  text,
    PRIMARY KEY (retailer_id, kind)
);

CREATE INDEX order_followups_pending_by_age ON order_followups (retailer_id, kind, created_at)
    WHERE status = 'pending';
