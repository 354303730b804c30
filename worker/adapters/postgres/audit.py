"""The audit's reads and its report table on PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.core.audit import AuditOrder

ORDERS_OF_DAY = """
SELECT o.external_id, o.store_id, o.order_type, o.grand_total,
       coalesce(i.units, 0), coalesce(i.merchandise, 0),
       coalesce(-a.discounts, 0), coalesce(a.tax, 0), coalesce(a.shipping, 0), coalesce(a.total, 0),
       coalesce(p.tenders, '{}'::jsonb)
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
       coalesce(i.units, 0), coalesce(i.merchandise, 0), coalesce(i.lines_total, 0),
       coalesce(p.refunds, '{}'::jsonb)
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


class PgAudit:
    def __init__(self, db: Database):
        self.db = db

    def day(self, retailer_id: str, business_date: date, time_zone: str) -> tuple[list[AuditOrder], list[str]]:
        """Every order and return of the business day, and the files not yet final by its end."""
        params: dict[str, Any] = {"r": retailer_id, "d": business_date, "tz": time_zone}
        with transient_db_errors(), self.db.connection() as conn:
            orders = [
                AuditOrder(x, store, kind, int(units), merch, disc, tax, ship, total, merch + adj,
                           {m: Decimal(a) for m, a in tenders.items()})
                for x, store, kind, total, units, merch, disc, tax, ship, adj, tenders
                in conn.execute(ORDERS_OF_DAY, params).fetchall()]
            returns = [
                AuditOrder(x, store, "RETURN", int(units), -merch, -disc, -tax, Decimal(0), -refund,
                           -(lines - disc), {m: -Decimal(a) for m, a in refunds.items()})
                for x, store, refund, disc, tax, units, merch, lines, refunds
                in conn.execute(RETURNS_OF_DAY, params).fetchall()]
            unfinished = [row[0] for row in conn.execute(UNFINISHED, params)]
        return orders + returns, unfinished

    def save(self, retailer_id: str, business_date: date, document: dict[str, Any]) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO audit_reports (retailer_id, business_date, report, consistent) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (retailer_id, business_date) DO UPDATE SET report = EXCLUDED.report,"
                " consistent = EXCLUDED.consistent, created_at = now()",
                (retailer_id, business_date, Jsonb(document), document["consistent"]))

    def done(self, retailer_id: str, business_date: date) -> bool:
        with transient_db_errors(), self.db.connection() as conn:
            return conn.execute("SELECT 1 FROM audit_reports WHERE retailer_id = %s AND business_date = %s",
                                (retailer_id, business_date)).fetchone() is not None
