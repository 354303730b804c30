"""The audit's reads and its report table on PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.core.audit import AuditOrder

ORDERS_OF_DAY = """
SELECT o.external_id, o.store_id, o.order_type, o.grand_total,
       coalesce(i.units, 0) AS units, coalesce(i.merchandise, 0) AS merchandise,
       coalesce(-a.discounts, 0) AS discounts, coalesce(a.tax, 0) AS tax, coalesce(a.shipping, 0) AS shipping,
       coalesce(a.total, 0) AS adjustments, coalesce(p.tenders, '{}'::jsonb) AS tenders
FROM orders o
LEFT JOIN LATERAL (SELECT sum(quantity) AS units, sum(unit_price * quantity) AS merchandise
                   FROM order_items WHERE order_id = o.id) i ON true
LEFT JOIN LATERAL (
    SELECT sum(amount) FILTER (WHERE adjustment_type IN ('DISCOUNT_ADJUSTMENT', 'PROMOTION_ADJUSTMENT')) AS discounts,
           sum(amount) FILTER (WHERE adjustment_type IN ('SALES_TAX', 'SHIPPING_SALES_TAX')) AS tax,
           sum(amount) FILTER (WHERE adjustment_type = 'SHIPPING_CHARGES') AS shipping,
           sum(amount) AS total
    FROM order_adjustments WHERE order_id = o.id) a ON true
LEFT JOIN LATERAL (SELECT jsonb_object_agg(m, s) AS tenders FROM (
    SELECT payment_method_type_id AS m, sum(amount)::text AS s FROM order_payments WHERE order_id = o.id
    GROUP BY 1) x) p ON true
WHERE o.retailer_id = %(r)s AND o.order_date >= %(d)s::date AND o.order_date < %(d)s::date + 1
ORDER BY o.store_id, o.external_id
"""

RETURNS_OF_DAY = """
SELECT r.external_id, r.store_id, r.refund_total, r.discount, r.tax,
       coalesce(i.units, 0) AS units, coalesce(i.merchandise, 0) AS merchandise,
       coalesce(i.lines_total, 0) AS lines_total, coalesce(p.refunds, '{}'::jsonb) AS refunds
FROM returns r
LEFT JOIN LATERAL (SELECT sum(quantity) AS units, sum(unit_price * quantity) AS merchandise,
                          sum(line_total) AS lines_total FROM return_items WHERE return_id = r.id) i ON true
LEFT JOIN LATERAL (SELECT jsonb_object_agg(m, s) AS refunds FROM (
    SELECT payment_method_type_id AS m, sum(amount)::text AS s FROM return_refunds WHERE return_id = r.id
    GROUP BY 1) x) p ON true
WHERE r.retailer_id = %(r)s AND r.return_date >= %(d)s::date AND r.return_date < %(d)s::date + 1
ORDER BY r.store_id, r.external_id
"""

# Files claimed by the end of the business day (in the retailer's audit time zone) that are not final.
UNFINISHED = """
SELECT file_name || ' (' || status || CASE WHEN moved_at IS NULL AND status <> 'claimed'
                                           THEN ', not moved' ELSE '' END || ')'
FROM tlog_files
WHERE retailer_id = %(r)s AND replayed_by IS NULL AND (status = 'claimed' OR moved_at IS NULL)
  AND claimed_at < ((%(d)s::date + 1)::timestamp AT TIME ZONE %(tz)s)
ORDER BY claimed_at
"""


@dataclass(frozen=True)
class OrderOfDay:
    external_id: str
    store_id: str
    order_type: str
    grand_total: Decimal
    units: int
    merchandise: Decimal
    discounts: Decimal  # positive: what was taken off
    tax: Decimal
    shipping: Decimal
    adjustments: Decimal  # every adjustment, signed
    tenders: dict[str, str]  # payment method type -> amount


@dataclass(frozen=True)
class ReturnOfDay:
    external_id: str
    store_id: str
    refund_total: Decimal
    discount: Decimal
    tax: Decimal
    units: int
    merchandise: Decimal
    lines_total: Decimal
    refunds: dict[str, str]  # payment method type -> amount


class PgAudit:
    def __init__(self, db: Database):
        self.db = db

    def day(self, retailer_id: str, business_date: date, time_zone: str) -> tuple[list[AuditOrder], list[str]]:
        """Every order and return of the business day, and the files not yet final by its end."""
        params: dict[str, Any] = {"r": retailer_id, "d": business_date, "tz": time_zone}
        with transient_db_errors(), self.db.connection() as conn:
            orders = [
                AuditOrder(
                    o.external_id,
                    o.store_id,
                    o.order_type,
                    int(o.units),
                    o.merchandise,
                    o.discounts,
                    o.tax,
                    o.shipping,
                    o.grand_total,
                    o.merchandise + o.adjustments,
                    {m: Decimal(a) for m, a in o.tenders.items()},
                )
                for o in conn.cursor(row_factory=class_row(OrderOfDay)).execute(ORDERS_OF_DAY, params).fetchall()
            ]
            returns = [
                AuditOrder(
                    r.external_id,
                    r.store_id,
                    "RETURN",
                    int(r.units),
                    -r.merchandise,
                    -r.discount,
                    -r.tax,
                    Decimal(0),
                    -r.refund_total,
                    -(r.lines_total - r.discount),
                    {m: -Decimal(a) for m, a in r.refunds.items()},
                )
                for r in conn.cursor(row_factory=class_row(ReturnOfDay)).execute(RETURNS_OF_DAY, params).fetchall()
            ]
            unfinished = [row[0] for row in conn.execute(UNFINISHED, params)]
        return orders + returns, unfinished

    def save(self, retailer_id: str, business_date: date, document: dict[str, Any]) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO audit_reports (retailer_id, business_date, report, consistent) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (retailer_id, business_date) DO UPDATE SET report = EXCLUDED.report,"
                " consistent = EXCLUDED.consistent, created_at = now()",
                (retailer_id, business_date, Jsonb(document), document["consistent"]),
            )

    def done(self, retailer_id: str, business_date: date) -> bool:
        with transient_db_errors(), self.db.connection() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM audit_reports WHERE retailer_id = %s AND business_date = %s",
                    (retailer_id, business_date),
                ).fetchone()
                is not None
            )
