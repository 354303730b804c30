"""Orders and returns on PostgreSQL, written inside the files ledger's record transaction: a file and what it
stored commit together, once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.auditcols import FACTS_SET, facts_params
from worker.adapters.postgres.rows import ROW_COLUMNS, ROW_COLUMNS_T, ledger_row
from worker.core.oms import json_default
from worker.core.returns import Return
from worker.services.ports import LedgerRow, Outcome, Recorded


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"))


@dataclass(frozen=True)
class StoredRow(LedgerRow):
    order_id: int | None = None
    triggered: list[str] | None = None
    claimed: bool = False  # the row was still claimed: this statement made it final
    same_content: int | None = None  # an earlier row with the same bytes


@dataclass(frozen=True)
class StoredReturn:
    return_id: int | None  # None: the return id was stored before,
    first_file_id: int | None = None  # from this ledger row


# Everything a stored sale writes, in one statement (one round trip):
# lock the ledger row (`lk`; nothing is written unless it is still claimed), look for a file with the same
# content (a duplicate of it, as content_checked in worker/services/ingest.py says), then the order, its parts,
# its follow-ups and the ledger's final status. ON CONFLICT DO NOTHING on the order makes every dependent insert
# a no-op and the ledger row a duplicate pointing at the first file. A row that is not claimed any more (another
# delivery of the same message got there first) comes back as it stands, locked (READ COMMITTED re-reads a row
# it waited for), with order_id NULL.
STORE_ORDER = f"""
WITH lk AS (
    SELECT {ROW_COLUMNS_T},
        (SELECT x.id FROM tlog_files x WHERE x.retailer_id = t.retailer_id AND x.feed = t.feed
         AND x.sha256 = %(sha)s AND x.status IN ('processed', 'skipped') LIMIT 1) AS same_content
    FROM tlog_files t WHERE t.id = %(f)s FOR UPDATE OF t
), go AS (
    SELECT lk.retailer_id AS r FROM lk WHERE lk.status = 'claimed' AND lk.same_content IS NULL
), o AS (
    INSERT INTO orders (retailer_id, external_id, order_type, status_id, store_id, order_date, ordered_at,
                        currency, grand_total, oms_payload, tlog_file_id, source_updated_ms)
    SELECT go.r, %(x)s, %(t)s, %(s)s, %(store)s, %(d)s, %(at)s, %(c)s, %(g)s, %(p)s, %(f)s, %(um)s FROM go
    ON CONFLICT (retailer_id, external_id) DO NOTHING
    RETURNING id
), items AS (
    INSERT INTO order_items (order_id, item_seq, product_id, gtin, quantity, unit_price, tax, line_total,
                             fulfillment, status_id, facility_id)
    SELECT o.id, u.* FROM o, unnest(%(seq)s::int[], %(pid)s::text[], %(gtin)s::text[], %(q)s::int[],
        %(up)s::numeric[], %(tax)s::numeric[], %(lt)s::numeric[], %(ff)s::text[], %(st)s::text[],
        %(fac)s::text[]) AS u
), payments AS (
    INSERT INTO order_payments (order_id, seq, payment_method_type_id, pos_payment_method, amount, status_id)
    SELECT o.id, u.* FROM o, unnest(%(pseq)s::int[], %(pm)s::text[], %(ppm)s::text[], %(pa)s::numeric[],
        %(pst)s::text[]) AS u
), adjustments AS (
    INSERT INTO order_adjustments (order_id, seq, item_seq, adjustment_type, amount)
    SELECT o.id, u.* FROM o, unnest(%(aseq)s::int[], %(aitem)s::int[], %(at_)s::text[], %(aa)s::numeric[]) AS u
), followups AS (
    -- the outbox: written with the order, so a follow-up whose message is lost is found and sent again
    INSERT INTO order_followups (order_id, kind, retailer_id, sent_at)
    SELECT o.id, k, go.r, now() FROM o, go, unnest(%(k)s::text[]) AS k
), triggers AS (
    -- one pending run per retailer and kind: only the order that finds none pending asks for a run (the
    -- plain read first, so that under load no transaction waits on the trigger row's lock)
    INSERT INTO routing_triggers AS t (retailer_id, kind, pending, requested_at)
    SELECT go.r, k, true, now() FROM o, go, unnest(%(k)s::text[]) AS k
    WHERE NOT EXISTS (SELECT 1 FROM routing_triggers p WHERE p.retailer_id = go.r AND p.kind = k AND p.pending)
    ON CONFLICT (retailer_id, kind) DO UPDATE SET pending = true, requested_at = now() WHERE NOT t.pending
    RETURNING kind
), first_file AS (
    SELECT orders.tlog_file_id FROM orders, lk WHERE orders.retailer_id = lk.retailer_id AND orders.external_id = %(x)s
), final AS (
    UPDATE tlog_files AS t SET
        status = CASE WHEN EXISTS (SELECT 1 FROM o) THEN 'processed' ELSE 'duplicate' END,
        duplicate_of = CASE WHEN EXISTS (SELECT 1 FROM o) THEN NULL
                       WHEN lk.same_content IS NOT NULL THEN lk.same_content
                       ELSE (SELECT tlog_file_id FROM first_file) END,
        error = CASE WHEN EXISTS (SELECT 1 FROM o) THEN NULL
                WHEN lk.same_content IS NOT NULL
                THEN 'same content as ledger row ' || lk.same_content || '; not imported again'
                ELSE 'order ' || %(x)s || ' already stored from ledger row '
                     || coalesce((SELECT tlog_file_id FROM first_file)::text, 'another file') || '; not imported again'
                END,
        sha256 = %(sha)s, size = coalesce(%(size)s, t.size), finished_at = now(), {FACTS_SET}
    FROM lk
    WHERE t.id = lk.id AND lk.status = 'claimed'
    RETURNING {ROW_COLUMNS_T}
)
SELECT final.*, (SELECT id FROM o) AS order_id, ARRAY(SELECT kind FROM triggers) AS triggered, true AS claimed,
    (SELECT same_content FROM lk) AS same_content FROM final
UNION ALL
SELECT {ROW_COLUMNS}, NULL::bigint, NULL::text[], false, NULL::bigint FROM lk WHERE NOT EXISTS (SELECT 1 FROM final)
"""


class PgOrders:
    """The orders and returns a file stores, on the connection (and in the transaction) of its ledger row."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self.conn = conn

    def store_order(self, row: LedgerRow, outcome: Outcome) -> Recorded:
        """One statement: the order, its lines, payments, adjustments and follow-ups, and the ledger row made
        final (processed, or duplicate when the order id or the content is already stored); the row as it
        stands, and no order, when it is not claimed any more. The statement locks the row itself: the caller
        needs no lock of its own (its transaction is for what the lifecycle does after a duplicate orderId)."""
        return self.store_claimed(row.id, outcome)[0]

    def store_claimed(self, file_id: int, outcome: Outcome) -> tuple[Recorded, bool]:
        """store_order for a ledger row known by its id only (the retailer is the row's); and whether the row
        was made a duplicate because the orderId is stored already (not for the same bytes): a corrected,
        voided or conflicting version, for the lifecycle to judge in the same transaction."""
        order = outcome.order
        assert order is not None
        ordered_at = (
            datetime.fromtimestamp(order.ordered_at_ms / 1000, UTC) if order.ordered_at_ms is not None else None
        )
        lines, pays, adj = order.lines, order.payments, order.adjustments
        found = (
            self.conn.cursor(row_factory=class_row(StoredRow))
            .execute(
                STORE_ORDER,
                {
                    "x": order.external_id,
                    "t": order.order_type,
                    "s": order.status_id,
                    "store": order.store_id,
                    "d": order.order_date,
                    "at": ordered_at,
                    "c": order.currency,
                    "g": order.grand_total,
                    "p": Jsonb(order.payload, dumps=_dumps),
                    "f": file_id,
                    "um": order.updated_ms,
                    "seq": [x.item_seq for x in lines],
                    "pid": [x.product_id for x in lines],
                    "gtin": [x.gtin for x in lines],
                    "q": [x.quantity for x in lines],
                    "up": [x.unit_price for x in lines],
                    "tax": [x.tax for x in lines],
                    "lt": [x.line_total for x in lines],
                    "ff": [x.fulfillment for x in lines],
                    "st": [x.status_id for x in lines],
                    "fac": [x.facility_id for x in lines],
                    "pseq": [p.seq for p in pays],
                    "pm": [p.payment_method_type_id for p in pays],
                    "ppm": [p.pos_payment_method for p in pays],
                    "pa": [p.amount for p in pays],
                    "pst": [p.status_id for p in pays],
                    "aseq": [a.seq for a in adj],
                    "aitem": [a.item_seq for a in adj],
                    "at_": [a.adjustment_type for a in adj],
                    "aa": [a.amount for a in adj],
                    "k": list(outcome.followups),
                    "sha": outcome.sha256,
                    "size": outcome.size,
                    **facts_params(outcome.facts),
                },
            )
            .fetchone()
        )
        assert found is not None
        by_order_id = found.claimed and found.order_id is None and found.same_content is None
        return Recorded(ledger_row(found), found.order_id, triggered=tuple(found.triggered or ())), by_order_id

    def store_return(self, row: LedgerRow, ret: Return) -> StoredReturn:
        """The return, its items and refunds, linked to its sale when that is stored; or, when the return id
        is stored already, the ledger row that stored it first."""
        conn = self.conn
        returned_at = datetime.fromtimestamp(ret.ordered_at_ms / 1000, UTC) if ret.ordered_at_ms is not None else None
        found = conn.execute(
            "INSERT INTO returns (retailer_id, external_id, original_external_id, original_order_id, store_id,"
            " return_date, returned_at, currency, refund_total, discount, tax, tlog_file_id)"
            " VALUES (%(r)s, %(x)s, %(ox)s, (SELECT id FROM orders WHERE retailer_id = %(r)s AND external_id = %(ox)s),"
            " %(store)s, %(d)s, %(at)s, %(c)s, %(total)s, %(disc)s, %(tax)s, %(f)s)"
            " ON CONFLICT (retailer_id, external_id) DO NOTHING RETURNING id",
            {
                "r": row.retailer_id,
                "x": ret.external_id,
                "ox": ret.original_order_id,
                "store": ret.store_id,
                "d": ret.return_date,
                "at": returned_at,
                "c": ret.currency,
                "total": ret.refund_total,
                "disc": ret.discount,
                "tax": ret.tax,
                "f": row.id,
            },
        ).fetchone()
        if found is None:
            first = conn.execute(
                "SELECT tlog_file_id FROM returns WHERE retailer_id = %s AND external_id = %s",
                (row.retailer_id, ret.external_id),
            ).fetchone()
            return StoredReturn(None, first[0] if first else None)
        return_id = int(found[0])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO return_items (return_id, item_seq, product_id, gtin, quantity, unit_price, tax,"
                " line_total, original_external_id, restock, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s)",
                [
                    (
                        return_id,
                        x.item_seq,
                        x.product_id,
                        x.gtin,
                        x.quantity,
                        x.unit_price,
                        x.tax,
                        x.line_total,
                        x.original_order_id,
                        x.restock,
                        x.reason,
                    )
                    for x in ret.lines
                ],
            )
            if ret.refunds:
                cur.executemany(
                    "INSERT INTO return_refunds (return_id, seq, payment_method_type_id, pos_payment_method, amount)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [(return_id, r.seq, r.payment_method_type_id, r.pos_payment_method, r.amount) for r in ret.refunds],
                )
        return StoredReturn(return_id)
