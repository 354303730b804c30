-- Routing: facilities, inventory with reservations, variances, brokering history, the follow-up outbox.

CREATE TABLE facilities (
    retailer_id        text    NOT NULL,
    facility_id        text    NOT NULL,
    name               text,
    facility_type      text,
    latitude           double precision CHECK (latitude BETWEEN -90 AND 90),  -- coordinates, not money
    longitude          double precision CHECK (longitude BETWEEN -180 AND 180),
    postal_code        text,
    allow_brokering    boolean NOT NULL DEFAULT true,
    max_orders_per_day integer CHECK (max_orders_per_day >= 0),
    facility_group     text,
    sequence           integer,
    PRIMARY KEY (retailer_id, facility_id)
);

CREATE TABLE inventory (
    retailer_id      text    NOT NULL,
    facility_id      text    NOT NULL,
    product_id       text    NOT NULL,
    gtin             text,
    quantity_on_hand integer NOT NULL DEFAULT 0,
    reserved         integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (retailer_id, facility_id, product_id)
);
CREATE UNIQUE INDEX inventory_gtin ON inventory (retailer_id, facility_id, gtin) WHERE gtin IS NOT NULL;
CREATE INDEX inventory_by_gtin ON inventory (retailer_id, gtin);

CREATE TABLE inventory_variances (
    id              bigserial PRIMARY KEY,
    retailer_id     text        NOT NULL,
    facility_id     text        NOT NULL,
    id_type         text        NOT NULL,
    id_value        text        NOT NULL,
    available_delta integer     NOT NULL,
    reason_id       text        NOT NULL,
    location_seq_id text,
    comments        text,
    source          text        NOT NULL,  -- 'order:<id>:<item_seq>' or 'file:<tlog_files.id>:<line>'
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (retailer_id, source)           -- a sale line or a file record adjusts inventory once
);

CREATE TABLE order_facility_changes (
    id               bigserial PRIMARY KEY,
    retailer_id      text        NOT NULL,
    order_id         bigint      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    item_seq         integer     NOT NULL,
    from_facility_id text        NOT NULL,
    facility_id      text        NOT NULL,
    quantity         integer     NOT NULL,
    reason           text        NOT NULL,  -- BROKERED, UNFILLABLE
    rule             text,
    run_id           text        NOT NULL,
    note             text,
    changed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_facility_changes_order ON order_facility_changes (order_id, item_seq);
CREATE INDEX order_facility_changes_day ON order_facility_changes (retailer_id, changed_at) WHERE reason = 'BROKERED';

-- The outbox: follow-up work written in the ingest transaction, so a lost message is found and sent again.
CREATE TABLE order_followups (
    order_id   bigint      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    kind       text        NOT NULL CHECK (kind IN ('inventory', 'brokering')),
    retailer_id text       NOT NULL,
    status     text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    attempts   integer     NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz,
    done_at    timestamptz,
    result     text,
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX order_followups_pending ON order_followups (retailer_id, sent_at) WHERE status = 'pending';

ALTER TABLE tlog_files ADD COLUMN records_applied integer, ADD COLUMN records_rejected integer;

CREATE TABLE variance_rejections (
    tlog_file_id bigint NOT NULL REFERENCES tlog_files (id) ON DELETE CASCADE,
    line         integer NOT NULL,
    reason       text    NOT NULL,
    PRIMARY KEY (tlog_file_id, line)
);
