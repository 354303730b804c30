-- The order's life after the sale (docs/order-lifecycle.md): the fulfilment feed, a TLog that conflicts with the
-- stored version of its order, store rejections, every change of stock traced to one source row, and the payload
-- as it stands now beside the payload as received.

-- A third feed: fulfilment records (SHIPPED / REJECTED) from the stores.
ALTER TABLE tlog_files DROP CONSTRAINT IF EXISTS tlog_files_feed_check;
ALTER TABLE tlog_files ADD CONSTRAINT tlog_files_feed_check CHECK (feed IN ('orders', 'variance', 'fulfillment'));

-- 'conflict': a TLog for a stored orderId with other content and an updateDate not newer than the stored one.
ALTER TABLE tlog_files DROP CONSTRAINT IF EXISTS tlog_files_status_check;
ALTER TABLE tlog_files ADD CONSTRAINT tlog_files_status_check
    CHECK (status IN ('claimed', 'processed', 'failed', 'skipped', 'duplicate', 'conflict'));
ALTER TABLE tlog_files ADD COLUMN IF NOT EXISTS diff jsonb;  -- conflict / refused correction: field by field

-- The same table as the brokering migration 010 (whichever runs first creates it).
CREATE TABLE IF NOT EXISTS order_item_exclusions (
    order_id    bigint      REFERENCES orders (id) ON DELETE CASCADE,
    item_seq    integer,
    facility_id text,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, item_seq, facility_id)
);

-- The payload as it stands (facilities, statuses) after brokering, fulfilment, cancellation or a correction;
-- oms_payload stays the payload as received. NULL: nothing changed since it was received.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS current_payload jsonb;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS source_updated_ms bigint;  -- the TLog's updateDate (epoch ms)

-- Every change of on hand or reserved that is not an inventory variance, once per source (the variance table
-- keeps the others): ships, releases (reject, cancel), the differences an inventory load makes.
CREATE TABLE inventory_movements (
    id              bigserial   PRIMARY KEY,
    retailer_id     text        NOT NULL,
    facility_id     text        NOT NULL,
    product_id      text        NOT NULL,
    on_hand_delta   integer     NOT NULL DEFAULT 0,
    reserved_delta  integer     NOT NULL DEFAULT 0,
    reason          text        NOT NULL CHECK (reason IN ('SHIPPED', 'REJECTED', 'CANCELLED', 'LOAD', 'RESERVED')),
    source          text        NOT NULL,  -- 'ship:<order>:<item>', 'release:<order>:<item>:<n>', 'load:<id>:...'
    order_id        bigint      REFERENCES orders (id) ON DELETE CASCADE,
    item_seq        integer,
    tlog_file_id    bigint      REFERENCES tlog_files (id),
    note            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (retailer_id, source)
);
CREATE INDEX inventory_movements_order ON inventory_movements (order_id, item_seq);
CREATE INDEX inventory_movements_stock ON inventory_movements (retailer_id, facility_id, product_id);

-- Fulfilment records as received, one row per applied or refused record of a fulfilment file.
CREATE TABLE fulfillment_records (
    tlog_file_id  bigint  NOT NULL REFERENCES tlog_files (id) ON DELETE CASCADE,
    line          integer NOT NULL,
    order_id      bigint  REFERENCES orders (id) ON DELETE CASCADE,
    external_id   text    NOT NULL,
    item_seq      integer NOT NULL,
    facility_id   text    NOT NULL,
    quantity      integer NOT NULL,
    status        text    NOT NULL,
    tracking_code text,
    reason        text,
    result        text    NOT NULL,  -- 'applied', 'already applied' or why it was refused
    PRIMARY KEY (tlog_file_id, line)
);

-- Every version of an order a TLog brought: the first, corrections applied, conflicts refused.
CREATE TABLE order_versions (
    id            bigserial   PRIMARY KEY,
    order_id      bigint      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    tlog_file_id  bigint      NOT NULL REFERENCES tlog_files (id),
    updated_ms    bigint,
    outcome       text        NOT NULL CHECK (outcome IN ('applied', 'conflict', 'refused')),
    diff          jsonb       NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_versions_order ON order_versions (order_id);

-- Returned units per sale line (returns reconcile with their sale) and where they went.
ALTER TABLE return_items ADD COLUMN IF NOT EXISTS original_order_id bigint REFERENCES orders (id);
ALTER TABLE return_items ADD COLUMN IF NOT EXISTS original_item_seq integer;
ALTER TABLE return_items ADD COLUMN IF NOT EXISTS condition text;  -- SELLABLE or DAMAGED
ALTER TABLE returns ADD COLUMN IF NOT EXISTS exchange_order_id bigint REFERENCES orders (id);
ALTER TABLE returns ADD COLUMN IF NOT EXISTS exchange_external_id text;

-- Damaged returned units: counted at the store, never available to promise.
ALTER TABLE inventory ADD COLUMN IF NOT EXISTS non_sellable integer NOT NULL DEFAULT 0 CHECK (non_sellable >= 0);
