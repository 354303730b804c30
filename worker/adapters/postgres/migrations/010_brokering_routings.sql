-- Brokering as an OMS brokers: scheduled runs over routings, explained decisions, auto-cancel, store rejections.

-- One row per order per brokering run (and per dry run, never stored): the routing that took it and, per line,
-- the result and each rule's verdict on each facility.
CREATE TABLE brokering_decisions (
    id          bigserial PRIMARY KEY,
    retailer_id text        NOT NULL,
    order_id    bigint      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    run_id      text        NOT NULL,
    routing     text,                   -- null: no routing matched the order
    summary     text        NOT NULL,
    lines       jsonb       NOT NULL,   -- [{item_seq, gtin, quantity, result, facility|queue, rule, why, rules: [...]}]
    decided_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX brokering_decisions_order ON brokering_decisions (order_id, decided_at);

-- A line a store rejected never goes back to that store (written by the order lifecycle, read by brokering).
CREATE TABLE IF NOT EXISTS order_item_exclusions (
    order_id    bigint      REFERENCES orders (id) ON DELETE CASCADE,
    item_seq    integer,
    facility_id text,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, item_seq, facility_id)
);

-- Auto-cancel: set by a rule's action on an order it could not place; a run cancels the order when due.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS auto_cancel_at timestamptz;
CREATE INDEX IF NOT EXISTS orders_auto_cancel_due ON orders (retailer_id, auto_cancel_at)
    WHERE auto_cancel_at IS NOT NULL;

-- A facility's daily order limit is counted in its own time zone (IANA name; null: UTC).
ALTER TABLE facilities ADD COLUMN IF NOT EXISTS time_zone text;

-- A scheduled run takes parked orders again, ahead of the others.
ALTER TABLE order_followups ADD COLUMN IF NOT EXISTS parked boolean NOT NULL DEFAULT false;

-- Orders waiting in a queue, found by a scheduled run without reading every line of the retailer (only lines
-- still open are indexed: in-store lines and shipped ones are not).
CREATE INDEX IF NOT EXISTS order_items_open ON order_items (facility_id, order_id)
    WHERE status_id = 'ITEM_APPROVED' AND fulfillment = 'SHIP_TO_HOME';
