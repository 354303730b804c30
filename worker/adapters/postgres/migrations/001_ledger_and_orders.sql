-- The file ledger and the stored orders. Table and column names are a documented interface.

CREATE TABLE tlog_files (
    id            bigserial PRIMARY KEY,
    retailer_id   text        NOT NULL,
    feed          text        NOT NULL DEFAULT 'orders' CHECK (feed IN ('orders', 'variance')),
    file_name     text        NOT NULL,
    remote_path   text        NOT NULL,
    size          bigint,
    mtime         timestamptz,
    sha256        text,
    status        text        NOT NULL DEFAULT 'claimed'
                  CHECK (status IN ('claimed', 'processed', 'failed', 'skipped', 'duplicate')),
    error         text,
    attempts      integer     NOT NULL DEFAULT 0,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz,
    finished_at   timestamptz,
    moved_to      text,        -- where the file went (archive or error path)
    moved_at      timestamptz, -- set once the file has left the inbound folder
    duplicate_of  bigint REFERENCES tlog_files (id),
    CHECK (status = 'claimed' OR finished_at IS NOT NULL)
);

-- One live claim per file name; a reappearing name gets extra rows with status 'duplicate'.
CREATE UNIQUE INDEX tlog_files_claim ON tlog_files (retailer_id, feed, file_name) WHERE status <> 'duplicate';
-- The same content is imported once, whatever its name.
CREATE UNIQUE INDEX tlog_files_content ON tlog_files (retailer_id, feed, sha256)
    WHERE status IN ('processed', 'skipped');
-- Work not yet final: in flight, or final but not yet moved out of the inbound folder.
CREATE INDEX tlog_files_open ON tlog_files (retailer_id, feed) WHERE status = 'claimed' OR moved_at IS NULL;
CREATE INDEX tlog_files_name ON tlog_files (retailer_id, feed, file_name);

CREATE TABLE orders (
    id           bigserial PRIMARY KEY,
    retailer_id  text          NOT NULL,
    external_id  text          NOT NULL,
    order_type   text          NOT NULL CHECK (order_type IN ('IN_STORE', 'SEND_SALE', 'MIXED')),
    status_id    text          NOT NULL,
    store_id     text          NOT NULL,
    order_date   timestamp     NOT NULL,  -- store-local time, as the POS wrote creationDate
    ordered_at   timestamptz,             -- the same instant in UTC, from orderDate (epoch ms)
    currency     text          NOT NULL,
    grand_total  numeric(14,2) NOT NULL,
    oms_payload  jsonb         NOT NULL,
    tlog_file_id bigint        NOT NULL REFERENCES tlog_files (id),
    created_at   timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (retailer_id, external_id)
);
CREATE INDEX orders_tlog_file ON orders (tlog_file_id);

CREATE TABLE order_items (
    order_id    bigint        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    item_seq    integer       NOT NULL,
    product_id  text,
    gtin        text          NOT NULL,
    quantity    integer       NOT NULL CHECK (quantity > 0),
    unit_price  numeric(14,4) NOT NULL,
    tax         numeric(14,4) NOT NULL,
    line_total  numeric(14,4) NOT NULL,
    fulfillment text          NOT NULL CHECK (fulfillment IN ('IN_STORE', 'SHIP_TO_HOME')),
    status_id   text          NOT NULL,
    facility_id text          NOT NULL,
    PRIMARY KEY (order_id, item_seq)
);

CREATE TABLE order_payments (
    order_id               bigint        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    seq                    integer       NOT NULL,
    payment_method_type_id text          NOT NULL,
    pos_payment_method     text          NOT NULL,
    amount                 numeric(14,2) NOT NULL,
    status_id              text          NOT NULL,
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE order_adjustments (
    order_id        bigint        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    seq             integer       NOT NULL,
    item_seq        integer,      -- null for order-level adjustments (shipping, order discount)
    adjustment_type text          NOT NULL,
    amount          numeric(14,4) NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- One row per scan run: what `tlogsync scan --wait` waits on, and the operator's "last scan".
CREATE TABLE scan_runs (
    id           text PRIMARY KEY,
    retailer_id  text        NOT NULL,
    requested_by text        NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    listed       integer     NOT NULL DEFAULT 0,
    too_young    integer     NOT NULL DEFAULT 0,
    dispatched   integer     NOT NULL DEFAULT 0,
    deferred     integer     NOT NULL DEFAULT 0,
    pending_ids  bigint[]    NOT NULL DEFAULT '{}',
    error        text,
    will_retry   boolean     NOT NULL DEFAULT false
);
CREATE INDEX scan_runs_retailer ON scan_runs (retailer_id, finished_at DESC);
