"""Routing runs on PostgreSQL: the trigger that coalesces their messages, the lock that keeps one run per retailer
and kind, the batch of follow-ups a run takes from the outbox, and in-store sales applied to stock in one go."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from psycopg.rows import class_row

from worker.adapters.postgres.inventory import SALE_LINES_MANY, SaleLinesRow, apply_sale_lines
from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.services.ports import TakenFollowups

# One statement: the due orders locked, their open lines cancelled, reservations of allocated lines released (on
# the stock row brokering reserved: the facility's GTIN row, else its product-id row), the changes and a decision
# recorded, the orders' status and date updated and their brokering follow-up closed.
AUTO_CANCEL = """
WITH due AS (
    SELECT id, external_id, auto_cancel_at FROM orders
    WHERE retailer_id = %(r)s AND auto_cancel_at <= now() AND status_id <> 'ORDER_CANCELLED'
    ORDER BY id FOR UPDATE
), open_lines AS (
    SELECT i.order_id, i.item_seq, i.facility_id, i.gtin, i.product_id, i.quantity,
           NOT (i.facility_id = ANY(%(q)s) OR i.facility_id IN ('_NA_', 'UNFILLABLE_PARKING', 'BACKORDER_PARKING',
                                                              'REJECTED_ITM_PARKING')) AS allocated
    FROM order_items i JOIN due ON due.id = i.order_id
    WHERE i.fulfillment = 'SHIP_TO_HOME' AND i.status_id = 'ITEM_APPROVED'
), to_release AS (
    SELECT o.facility_id, coalesce(
               (SELECT x.product_id FROM inventory x WHERE x.retailer_id = %(r)s AND x.facility_id = o.facility_id
                AND x.gtin = o.gtin), o.product_id) AS product_id, sum(o.quantity)::int AS q
    FROM open_lines o WHERE o.allocated GROUP BY 1, 2
), released AS (
    UPDATE inventory v SET reserved = greatest(v.reserved - r.q, 0), updated_at = now()
    FROM to_release r WHERE v.retailer_id = %(r)s AND v.facility_id = r.facility_id AND v.product_id = r.product_id
    RETURNING 1
), cancelled AS (
    UPDATE order_items i SET status_id = 'ITEM_CANCELLED'
    FROM open_lines o WHERE i.order_id = o.order_id AND i.item_seq = o.item_seq
    RETURNING i.order_id
), changes AS (
    INSERT INTO order_facility_changes (retailer_id, order_id, item_seq, from_facility_id, facility_id, quantity,
                                        reason, rule, run_id, note)
    SELECT %(r)s, o.order_id, o.item_seq, o.facility_id, o.facility_id, o.quantity, 'AUTO_CANCELLED', NULL, %(run)s,
           'auto-cancelled: not brokered by its auto-cancel date ' || to_char(d.auto_cancel_at AT TIME ZONE 'UTC',
           'YYYY-MM-DD HH24:MI') || ' UTC' || CASE WHEN o.allocated THEN '; reservation at ' || o.facility_id
           || ' released' ELSE '' END
    FROM open_lines o JOIN due d ON d.id = o.order_id
    RETURNING 1
), decided AS (
    INSERT INTO brokering_decisions (retailer_id, order_id, run_id, routing, summary, lines)
    SELECT %(r)s, d.id, %(run)s, NULL, 'auto-cancelled: not brokered by ' || to_char(d.auto_cancel_at AT TIME ZONE
           'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC', coalesce((SELECT jsonb_agg(jsonb_build_object('item_seq',
           o.item_seq, 'gtin', o.gtin, 'quantity', o.quantity, 'result', 'cancelled', 'why',
           'auto-cancel date passed', 'rules', '[]'::jsonb)) FROM open_lines o WHERE o.order_id = d.id), '[]'::jsonb)
    FROM due d
    RETURNING 1
), orders_done AS (
    UPDATE orders x SET auto_cancel_at = NULL, status_id = CASE WHEN NOT EXISTS (
            SELECT 1 FROM order_items i WHERE i.order_id = x.id AND i.status_id <> 'ITEM_CANCELLED'
            AND NOT EXISTS (SELECT 1 FROM open_lines o WHERE o.order_id = i.order_id AND o.item_seq = i.item_seq))
        THEN 'ORDER_CANCELLED' ELSE x.status_id END
    FROM due d WHERE x.id = d.id
    RETURNING 1
), followups AS (
    UPDATE order_followups f SET status = 'done', done_at = now(), parked = false, result = 'auto-cancelled'
    FROM due d WHERE f.order_id = d.id AND f.kind = 'brokering' AND f.status = 'pending'
    RETURNING 1
)
SELECT external_id FROM due ORDER BY id
"""


def run_lock_key(retailer_id: str, kind: str) -> int:
    """The advisory lock of one retailer's runs of one kind (distinct from the scan lock's key space)."""
    return zlib.crc32(f"tlogsync-run:{kind}:{retailer_id}".encode()) - 2**31


class PgRouting:
    """The outbox side of routing runs, on a connection pool."""

    def __init__(self, db: Database):
        self.db = db

    @contextmanager
    def run_lock(self, retailer_id: str, kind: str) -> Iterator[bool]:
        """Hold the retailer's run lock of this kind for the block, if no other run holds it (True)."""
        key = run_lock_key(retailer_id, kind)
        with transient_db_errors(), self.db.connection() as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            got = bool(row and row[0])
            try:
                yield got
            finally:
                if got:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def start_pass(self, retailer_id: str, kind: str) -> None:
        """A pass of the run begins: orders committed from now on ask for a run of their own."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO routing_triggers AS t (retailer_id, kind, pending, started_at)"
                " VALUES (%s, %s, false, now())"
                " ON CONFLICT (retailer_id, kind) DO UPDATE SET pending = false, started_at = now()",
                (retailer_id, kind),
            )

    def trigger_pending(self, retailer_id: str, kind: str) -> bool:
        """Whether an order asked for a run of this kind since the latest pass began."""
        with transient_db_errors(), self.db.connection() as conn:
            row = conn.execute(
                "SELECT pending FROM routing_triggers WHERE retailer_id = %s AND kind = %s", (retailer_id, kind)
            ).fetchone()
        return bool(row and row[0])

    def finish_run(self, retailer_id: str, kind: str, result: str) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE routing_triggers SET finished_at = now(), last_result = %s"
                " WHERE retailer_id = %s AND kind = %s",
                (result[:1000], retailer_id, kind),
            )

    def take(self, retailer_id: str, kind: str, limit: int, max_attempts: int) -> TakenFollowups:
        """Up to `limit` pending follow-ups, oldest first, each attempt counted and committed before the work; a
        follow-up past max_attempts is failed with the reason. Follow-ups that were tried before come alone, so a
        poison order cannot take a whole batch down with it."""
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "UPDATE order_followups f SET attempts = f.attempts + 1 FROM ("
                "  SELECT order_id, kind FROM order_followups WHERE retailer_id = %(r)s AND kind = %(k)s"
                "  AND status = 'pending' ORDER BY attempts DESC, parked DESC, created_at, order_id LIMIT %(n)s"
                "  FOR UPDATE SKIP LOCKED) p"
                " WHERE f.order_id = p.order_id AND f.kind = p.kind RETURNING f.order_id, f.attempts",
                {"r": retailer_id, "k": kind, "n": limit},
            ).fetchall()
            tried = [(order_id, attempts) for order_id, attempts in rows if attempts > 1]
            if tried:
                alone = max(tried, key=lambda r: r[1])
                conn.execute(  # the rest of the batch is not taken this time: its attempt is not counted
                    "UPDATE order_followups SET attempts = attempts - 1 WHERE kind = %s AND order_id = ANY(%s)",
                    (kind, [order_id for order_id, _ in rows if order_id != alone[0]]),
                )
                rows = [alone]
            given_up = [order_id for order_id, attempts in rows if attempts > max_attempts]
            if given_up:
                conn.execute(
                    "UPDATE order_followups SET status = 'failed', done_at = now(), result = %s"
                    " WHERE kind = %s AND order_id = ANY(%s)",
                    (
                        f"gave up after {max_attempts} attempts: the run crashed, timed out or kept failing on it",
                        kind,
                        given_up,
                    ),
                )
        return TakenFollowups(
            tuple(sorted(order_id for order_id, _ in rows if order_id not in given_up)), tuple(given_up)
        )

    def forgive(self, kind: str, order_ids: Sequence[int]) -> None:
        """A transient failure was handled cleanly: it does not count toward the poison bound."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE order_followups SET attempts = greatest(attempts - 1, 0) WHERE kind = %s"
                " AND order_id = ANY(%s) AND status = 'pending'",
                (kind, list(order_ids)),
            )

    def stale_runs(self, retailer_id: str, older_than_seconds: int) -> list[str]:
        """Kinds with follow-ups pending longer than this whose run was not asked for since: asked for again (the
        message that starts a run was lost, or an order committed just as a run ended)."""
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "INSERT INTO routing_triggers AS t (retailer_id, kind, pending, requested_at)"
                " SELECT %(r)s, k.kind, true, now() FROM (SELECT DISTINCT kind FROM order_followups"
                "   WHERE retailer_id = %(r)s AND status = 'pending'"
                "   AND created_at < now() - make_interval(secs => %(s)s)) k"
                " ON CONFLICT (retailer_id, kind) DO UPDATE SET pending = true, requested_at = now()"
                " WHERE t.requested_at IS NULL OR t.requested_at < now() - make_interval(secs => %(s)s)"
                " RETURNING kind",
                {"r": retailer_id, "s": older_than_seconds},
            ).fetchall()
        return sorted(row[0] for row in rows)

    def requeue(self, retailer_id: str, queues: Sequence[str]) -> int:
        """A scheduled run: every order with lines waiting in these queues (parked ones included) is pending
        brokering again, parked first; a follow-up that was given up on (failed) stays so. Returns how many."""
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "INSERT INTO order_followups AS f (order_id, kind, retailer_id, status, parked)"
                " SELECT i.order_id, 'brokering', %(r)s, 'pending', bool_or(i.facility_id <> '_NA_')"
                " FROM order_items i JOIN orders o ON o.id = i.order_id"
                " WHERE i.facility_id = ANY(%(q)s) AND i.status_id = 'ITEM_APPROVED'"
                "   AND i.fulfillment = 'SHIP_TO_HOME' AND o.retailer_id = %(r)s"
                " GROUP BY i.order_id"
                " ON CONFLICT (order_id, kind) DO UPDATE SET status = 'pending', attempts = 0,"
                "   parked = EXCLUDED.parked, done_at = NULL, result = 'taken again by a scheduled run'"
                " WHERE f.status = 'done'"
                " RETURNING 1",
                {"r": retailer_id, "q": list(queues)},
            ).fetchall()
        return len(rows)

    def cancel_due(self, retailer_id: str, run_id: str, queues: Sequence[str]) -> list[str]:
        """Orders past their auto-cancel date, still not fully brokered: every open ship-to-home line cancelled,
        the reservations of the ones already allocated released, each change recorded with why; the order is
        ORDER_CANCELLED when no line of it is left open. Returns the external ids cancelled."""
        with transient_db_errors(), self.db.connection() as conn, conn.transaction():
            rows = conn.execute(AUTO_CANCEL, {"r": retailer_id, "run": run_id, "q": list(queues)}).fetchall()
        return [row[0] for row in rows]

    def apply_sales(self, retailer_id: str, order_ids: Sequence[int]) -> tuple[int, list[str]]:
        """Lower the stores' inventory for the in-store lines of these sales, once each, in one transaction:
        (variances applied, notes). Two round trips: read the lines with their stock rows, then record every
        variance, move the on-hand quantities and mark the follow-ups done in one statement."""
        if not order_ids:
            return 0, []
        with transient_db_errors(), self.db.connection() as conn, conn.transaction():
            found = (
                conn.cursor(row_factory=class_row(SaleLinesRow))
                .execute(SALE_LINES_MANY, {"o": list(order_ids), "r": retailer_id})
                .fetchall()
            )
            applied, notes = apply_sale_lines(conn, retailer_id, found)
        return applied, [f"order {order_id}: {note}" for order_id, listed in notes.items() for note in listed]
