-- Returns (a TLog with returnProductList) and the daily audit reports.

CREATE TABLE returns (
    id                 bigserial PRIMARY KEY,
    retailer_id        text          NOT NULL,
    external_id        text          NOT NULL,           -- the return transaction's orderId
    original_external_id text,                           -- the sale returned, as the POS named it
    original_order_id  bigint REFERENCES orders (id),    -- that sale, when it is stored here (else standalone)
    store_id           text          NOT NULL,           -- the returning store
    return_date        timestamp     NOT NULL,           -- store-local creationDate
    returned_at        timestamptz,
    currency           text          NOT NULL,
    refund_total       numeric(14,2) NOT NULL,
    discount           numeric(14,2) NOT NULL DEFAULT 0,
    tax                numeric(14,2) NOT NULL DEFAULT 0,
    tlog_file_id       bigint        NOT NULL REFERENCES tlog_files (id),
    created_at         timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (retailer_id, external_id)
);
CREATE INDEX returns_original ON returns (original_order_id);

CREATE TABLE return_items (
    return_id         bigint        NOT NULL REFERENCES returns (id) ON DELETE CASCADE,
    item_seq          integer       NOT NULL,
    product_id        text,
    gtin              text          NOT NULL,
    quantity          integer       NOT NULL CHECK (quantity > 0),
    unit_price        numeric(14,4) NOT NULL,
    tax               numeric(14,4) NOT NULL,
    line_total        numeric(14,4) NOT NULL,
    original_external_id text,
    restock           boolean       NOT NULL,
    reason            text,
    PRIMARY KEY (return_id, item_seq)
);

CREATE TABLE return_refunds (
    return_id              bigint        NOT NULL REFERENCES returns (id) ON DELETE CASCADE,
    seq                    integer       NOT NULL,
    payment_method_type_id text          NOT NULL,
    pos_payment_method     text          NOT NULL,
    amount                 numeric(14,2) NOT NULL,
    PRIMARY KEY (return_id, seq)
);

CREATE TABLE audit_reports (
    retailer_id   text        NOT NULL,
    business_date date        NOT NULL,
    report        jsonb       NOT NULL,
    consistent    boolean     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (retailer_id, business_date)
);
