"""The audit's reads and its report table on PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.core.dayaudit import DayData, FileOfDay, Jurisdiction, SaleOfDay, TenderLine, TxnRef

# The day's sales as the audit checks them: stored orders with their payments' statuses and the facts their
# file's ledger row kept (register, tax by jurisdiction); the order's hour from its store-local date.
SALES_OF_DAY = """
SELECT o.external_id, o.store_id, o.order_type, o.status_id, o.grand_total,
       coalesce(i.units, 0) AS units, coalesce(i.merchandise, 0) AS merchandise,
       coalesce(-a.discounts, 0) AS discounts, coalesce(a.tax, 0) AS tax, coalesce(a.shipping, 0) AS shipping,
       coalesce(a.total, 0) AS adjustments, coalesce(p.tenders, '[]'::jsonb) AS tenders,
       extract(hour FROM o.order_date)::int AS hour, t.register_id, t.register_txn,
       t.sale_totals -> 'jurisdictions' AS jurisdictions, t.sale_totals ->> 'sales_tax' AS sales_tax,
       o.tlog_file_id AS file_id
FROM orders o
LEFT JOIN tlog_files t ON t.id = o.tlog_file_id
LEFT JOIN LATERAL (SELECT sum(quantity) AS units, sum(unit_price * quantity) AS merchandise
                   FROM order_items WHERE order_id = o.id) i ON true
LEFT JOIN LATERAL (
    SELECT sum(amount) FILTER (WHERE adjustment_type IN ('DISCOUNT_ADJUSTMENT', 'PROMOTION_ADJUSTMENT')) AS discounts,
           sum(amount) FILTER (WHERE adjustment_type IN ('SALES_TAX', 'SHIPPING_SALES_TAX')) AS tax,
           sum(amount) FILTER (WHERE adjustment_type = 'SHIPPING_CHARGES') AS shipping,
           sum(amount) AS total
    FROM order_adjustments WHERE order_id = o.id) a ON true
LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('method', payment_method_type_id, 'amount', amount::text,
                                                       'status', status_id) ORDER BY seq) AS tenders
                   FROM order_payments WHERE order_id = o.id) p ON true
WHERE o.retailer_id = %(r)s AND o.order_date >= %(d)s::date AND o.order_date < %(d)s::date + 1
ORDER BY o.store_id, o.external_id
"""

RETURNS_OF_DAY_FULL = """
SELECT r.external_id, r.store_id, r.refund_total, r.discount, r.tax,
       coalesce(i.units, 0) AS units, coalesce(i.merchandise, 0) AS merchandise,
       coalesce(i.lines_total, 0) AS lines_total, coalesce(p.refunds, '[]'::jsonb) AS refunds,
       extract(hour FROM r.return_date)::int AS hour, t.register_id, t.register_txn,
       t.sale_totals -> 'jurisdictions' AS jurisdictions, r.tlog_file_id AS file_id
FROM returns r
LEFT JOIN tlog_files t ON t.id = r.tlog_file_id
LEFT JOIN LATERAL (SELECT sum(quantity) AS units, sum(unit_price * quantity) AS merchandise,
                          sum(line_total) AS lines_total FROM return_items WHERE return_id = r.id) i ON true
LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('method', payment_method_type_id, 'amount', amount::text)
                                    ORDER BY seq) AS refunds
                   FROM return_refunds WHERE return_id = r.id) p ON true
WHERE r.retailer_id = %(r)s AND r.return_date >= %(d)s::date AND r.return_date < %(d)s::date + 1
ORDER BY r.store_id, r.external_id
"""

# Sales the ledger holds but the orders table does not: in-store sales of a retailer that is not the order master.
# Nothing stored means no unique key caught a sale sent twice in other bytes: each order id counts once, from its
# first file (the core lists the others as duplicates), and not at all when the order is stored after all.
NOT_STORED_OF_DAY = """
SELECT * FROM (
    SELECT DISTINCT ON (t.sale_totals ->> 'order_id') t.id, t.store_id, t.register_id, t.register_txn, t.sale_totals
    FROM tlog_files t
    WHERE t.retailer_id = %(r)s AND t.feed = 'orders' AND t.business_day = %(d)s AND t.status = 'skipped'
      AND t.replayed_by IS NULL AND t.sale_totals IS NOT NULL AND t.sale_totals ->> 'kind' = 'sale'
      AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.retailer_id = t.retailer_id
                      AND o.external_id = t.sale_totals ->> 'order_id')
    ORDER BY t.sale_totals ->> 'order_id', t.id
) first_files
ORDER BY store_id, id
"""

# Every row of the orders feed that may belong to the day: its sale says so, or (no sale read, claimed two days
# before the day or later) its name or time is near it; the core decides (worker.core.dayaudit.file_day).
FILES_NEAR_DAY = """
SELECT id, file_name, status, error, replayed_by, moved_at IS NOT NULL AS moved, business_day, store_id,
       register_id, register_txn, claimed_at, mtime, sale_totals ->> 'order_id' AS order_id
FROM tlog_files
WHERE retailer_id = %(r)s AND feed = 'orders'
  AND business_day = %(d)s
UNION ALL
SELECT id, file_name, status, error, replayed_by, moved_at IS NOT NULL AS moved, business_day, store_id,
       register_id, register_txn, claimed_at, mtime, NULL AS order_id
FROM tlog_files
WHERE retailer_id = %(r)s AND feed = 'orders' AND business_day IS NULL
  AND claimed_at >= %(d)s::date - 2
  AND (strpos(file_name, to_char(%(d)s::date, 'YYYY-MM-DD')) > 0
       OR strpos(file_name, to_char(%(d)s::date, 'YYYYMMDD')) > 0
       OR coalesce(mtime, claimed_at) BETWEEN %(d)s::date - 1 AND %(d)s::date + 2
       OR claimed_at BETWEEN %(d)s::date - 1 AND %(d)s::date + 2)
ORDER BY id
"""

# The neighbours of the day's register sequences: per store register, the last transaction of the latest
# earlier day and the first of the earliest later day (numbers only).
NEIGHBOURS = """
WITH keys AS (
    SELECT DISTINCT store_id, coalesce(register_id, '-') AS register_id FROM tlog_files
    WHERE retailer_id = %(r)s AND feed = 'orders' AND business_day = %(d)s AND register_txn IS NOT NULL
), numbered AS (
    SELECT t.store_id, coalesce(t.register_id, '-') AS register_id,
           CASE WHEN t.register_txn ~ '^[0-9]{1,18}$' THEN t.register_txn::bigint END AS txn, t.business_day,
           t.file_name, t.sale_totals ->> 'order_id' AS order_id
    FROM tlog_files t JOIN keys k ON k.store_id = t.store_id AND k.register_id = coalesce(t.register_id, '-')
    WHERE t.retailer_id = %(r)s AND t.feed = 'orders' AND t.business_day <> %(d)s
      AND t.business_day BETWEEN %(d)s::date - 31 AND %(d)s::date + 31 AND t.register_txn ~ '^[0-9]{1,18}$'
)
(SELECT DISTINCT ON (store_id, register_id) 'before' AS side, * FROM numbered WHERE business_day < %(d)s
 ORDER BY store_id, register_id, business_day DESC, txn DESC)
UNION ALL
(SELECT DISTINCT ON (store_id, register_id) 'after' AS side, * FROM numbered WHERE business_day > %(d)s
 ORDER BY store_id, register_id, business_day, txn)
"""

NOTES_OF_DAY = "SELECT subject, note FROM audit_notes WHERE retailer_id = %(r)s AND business_date = %(d)s"


def _money(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _jurisdictions(value: Any) -> tuple[Jurisdiction, ...] | None:
    if not value:
        return None
    return tuple(Jurisdiction(j["name"], j.get("type", ""), j.get("rate", ""), Decimal(j["amount"])) for j in value)


def _ledger_sale(row: dict[str, Any]) -> SaleOfDay:
    t = row["sale_totals"]
    merchandise, discounts = Decimal(t["merchandise"]), Decimal(t["discounts"])
    tax, shipping = Decimal(t["tax"]), Decimal(t["shipping"])
    return SaleOfDay(
        t["order_id"],
        row["store_id"],
        t["type"],
        "NOT_STORED",
        "ledger",
        int(t.get("units") or 0),
        merchandise,
        discounts,
        tax,
        shipping,
        Decimal(t["total"]),
        merchandise - discounts + tax + shipping,
        tuple(TenderLine(x["method"], Decimal(x["amount"]), x["status"]) for x in t.get("tenders") or ()),
        _jurisdictions(t.get("jurisdictions")),
        Decimal(t["sales_tax"]) if t.get("sales_tax") is not None else None,
        row["register_id"],
        row["register_txn"],
        t.get("hour"),
        row["id"],
    )


class PgAudit:
    def __init__(self, db: Database):
        self.db = db

    def day_data(self, retailer_id: str, business_date: date, time_zone: str) -> DayData:
        """The day's sales (stored orders and returns, and the sales the ledger kept but did not store), the
        ledger rows that may belong to the day, the neighbouring register transactions and the notes."""
        params: dict[str, Any] = {"r": retailer_id, "d": business_date}
        data = DayData()
        with transient_db_errors(), self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            for o in cur.execute(SALES_OF_DAY, params).fetchall():
                data.sales.append(
                    SaleOfDay(
                        o["external_id"],
                        o["store_id"],
                        o["order_type"],
                        o["status_id"],
                        "oms",
                        int(o["units"]),
                        o["merchandise"],
                        o["discounts"],
                        o["tax"],
                        o["shipping"],
                        o["grand_total"],
                        o["merchandise"] + o["adjustments"],
                        tuple(TenderLine(x["method"], Decimal(x["amount"]), x["status"]) for x in o["tenders"]),
                        _jurisdictions(o["jurisdictions"]),
                        Decimal(o["sales_tax"]) if o["sales_tax"] is not None else None,
                        o["register_id"],
                        o["register_txn"],
                        o["hour"],
                        o["file_id"],
                    )
                )
            for r in cur.execute(RETURNS_OF_DAY_FULL, params).fetchall():
                data.sales.append(
                    SaleOfDay(
                        r["external_id"],
                        r["store_id"],
                        "RETURN",
                        "",
                        "oms",
                        int(r["units"]),
                        -r["merchandise"],
                        -r["discount"],
                        -r["tax"],
                        Decimal(0),
                        -r["refund_total"],
                        -(r["lines_total"] - r["discount"]),
                        tuple(TenderLine(x["method"], -Decimal(x["amount"]), "PAYMENT_SETTLED") for x in r["refunds"]),
                        _jurisdictions(r["jurisdictions"]),
                        -r["tax"],
                        r["register_id"],
                        r["register_txn"],
                        r["hour"],
                        r["file_id"],
                    )
                )
            data.sales += [_ledger_sale(row) for row in cur.execute(NOT_STORED_OF_DAY, params).fetchall()]
            data.files = [
                FileOfDay(**row) for row in conn.cursor(row_factory=dict_row).execute(FILES_NEAR_DAY, params).fetchall()
            ]
            for n in cur.execute(NEIGHBOURS, params).fetchall():
                ref = TxnRef(
                    n["store_id"], n["register_id"], n["txn"], n["business_day"], n["file_name"], n["order_id"]
                )
                (data.before if n["side"] == "before" else data.after)[(n["store_id"], n["register_id"])] = ref
            data.notes = {row["subject"]: row["note"] for row in cur.execute(NOTES_OF_DAY, params).fetchall()}
        return data

    def save(self, retailer_id: str, business_date: date, document: dict[str, Any]) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO audit_reports (retailer_id, business_date, report, consistent, differences)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (retailer_id, business_date) DO UPDATE SET report = EXCLUDED.report,"
                " consistent = EXCLUDED.consistent, differences = EXCLUDED.differences, created_at = now()",
                (
                    retailer_id,
                    business_date,
                    Jsonb(document),
                    document["consistent"],
                    int(document.get("differences_count", 0)),
                ),
            )

    def note(self, retailer_id: str, business_date: date, subject: str, note: str) -> None:
        """An operator's explanation of one difference of the day (the subject as the report prints it)."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO audit_notes (retailer_id, business_date, subject, note) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (retailer_id, business_date, subject) DO UPDATE SET note = EXCLUDED.note,"
                " noted_at = now()",
                (retailer_id, business_date, subject, note),
            )

    def sales_by_id(self, retailer_id: str, external_ids: list[str]) -> dict[str, tuple[date, str, str]]:
        """Where the OMS counts sales of other days: external id -> (business day, store, type), from the
        orders, the returns and the sales the ledger kept without storing them."""
        if not external_ids:
            return {}
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "SELECT external_id, order_date::date, store_id, order_type FROM orders"
                " WHERE retailer_id = %(r)s AND external_id = ANY(%(x)s)"
                " UNION ALL SELECT external_id, return_date::date, store_id, 'RETURN' FROM returns"
                " WHERE retailer_id = %(r)s AND external_id = ANY(%(x)s)"
                " UNION ALL SELECT sale_totals ->> 'order_id', business_day, store_id, sale_totals ->> 'type'"
                " FROM tlog_files WHERE retailer_id = %(r)s AND feed = 'orders' AND status = 'skipped'"
                " AND replayed_by IS NULL AND sale_totals ->> 'order_id' = ANY(%(x)s)",
                {"r": retailer_id, "x": external_ids},
            ).fetchall()
        return {x: (d, store, kind) for x, d, store, kind in rows}

    def done(self, retailer_id: str, business_date: date) -> bool:
        with transient_db_errors(), self.db.connection() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM audit_reports WHERE retailer_id = %s AND business_date = %s",
                    (retailer_id, business_date),
                ).fetchone()
                is not None
            )
