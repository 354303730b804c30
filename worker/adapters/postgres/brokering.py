"""A brokering run's batch on PostgreSQL: one transaction, the reads pipelined in one round trip (orders,
lines, exclusions, the network with today's counts, the stock of their products, all locked), the writes in one
statement (reservations, line moves, facility changes, decisions, auto-cancel dates, follow-ups done).

Also the read-only views of brokering: a dry run's history, an order's explained decisions."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from worker.adapters.postgres.inventory import refuse_foreign_order
from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.core.brokering import BROKERING_QUEUE, UNFILLABLE_PARKING, Facility, LineToPlace, ShipGroup
from worker.core.errors import NotFound, Oversell
from worker.core.routing import BROKERING, BatchSnapshot
from worker.core.routings import OrderOutcome, OrderToBroker, decision_lines, match_stock, outcome_summary

# The order head and its ship-to-home ship group, taken apart in SQL: Python never parses the whole envelope.
ORDERS = """
SELECT o.id, o.external_id, o.store_id, o.ordered_at, o.order_date, o.auto_cancel_at,
       h.p->>'channel' AS channel, h.p->>'priority' AS priority,
       sg.g->>'shipmentMethodTypeId' AS shipping_method, sg.g->>'maySplit' AS may_split,
       sg.g->'shipTo'->'postalAddress'->>'postalCode' AS postal_code,
       coalesce(sg.g->>'shipByDate', sg.g->>'promisedDatetime', h.p->>'shipByDate') AS ship_by,
       ARRAY(SELECT DISTINCT it->>'productCategoryId' FROM jsonb_array_elements(sg.g->'items') it
             WHERE it->>'productCategoryId' IS NOT NULL) AS categories,
       ARRAY(SELECT it->>'idValue' FROM jsonb_array_elements(sg.g->'items') it
             WHERE it->>'productClass' IS NOT NULL AND lower(it->>'productClass') <> 'merchandise') AS non_merchandise
FROM orders o
CROSS JOIN LATERAL (SELECT o.oms_payload->0->'dataList'->0->'data'->'order' AS p) h
LEFT JOIN LATERAL (SELECT x AS g FROM jsonb_array_elements(h.p->'shipGroup') x
                   WHERE x->>'facilityId' = '_NA_' OR x ? 'shipTo' LIMIT 1) sg ON true
WHERE o.id = ANY(%(o)s) AND o.retailer_id = %(r)s AND o.status_id <> 'ORDER_CANCELLED'
ORDER BY o.id
FOR UPDATE OF o
"""

LINES = """
SELECT order_id, item_seq, product_id, gtin, quantity, facility_id FROM order_items
WHERE order_id = ANY(%(o)s) AND fulfillment = 'SHIP_TO_HOME' AND facility_id = ANY(%(q)s)
  AND status_id = 'ITEM_APPROVED'
ORDER BY order_id, item_seq
"""

EXCLUSIONS = "SELECT order_id, item_seq, facility_id, reason FROM order_item_exclusions WHERE order_id = ANY(%(o)s)"

# Every facility of the retailer, locked (two batches cannot both take a facility's last order of the day), with
# the orders brokered to it since midnight in its own time zone (other orders than these).
FACILITIES = """
SELECT f.facility_id, f.latitude, f.longitude, f.postal_code, f.allow_brokering, f.max_orders_per_day,
       f.facility_group, f.sequence,
       CASE WHEN f.max_orders_per_day IS NULL THEN 0 ELSE (
           SELECT count(DISTINCT c.order_id) FROM order_facility_changes c
           WHERE c.retailer_id = f.retailer_id AND c.facility_id = f.facility_id AND c.reason = 'BROKERED'
             AND c.changed_at >= date_trunc('day', now() AT TIME ZONE coalesce(f.time_zone, 'UTC'))
                                 AT TIME ZONE coalesce(f.time_zone, 'UTC')
             AND c.order_id <> ALL(%(o)s)) END AS orders_today
FROM facilities f WHERE f.retailer_id = %(r)s
ORDER BY f.facility_id
FOR UPDATE OF f
"""

# The stock of the batch's products by GTIN or by product id, every row locked in one order (facility, product):
# brokering is serialized per SKU without deadlocks.
STOCK = """
SELECT facility_id, product_id, gtin, quantity_on_hand - reserved FROM inventory
WHERE retailer_id = %(r)s AND (
    gtin IN (SELECT gtin FROM order_items WHERE order_id = ANY(%(o)s) AND fulfillment = 'SHIP_TO_HOME'
             AND facility_id = ANY(%(q)s))
    OR product_id IN (SELECT product_id FROM order_items WHERE order_id = ANY(%(o)s)
                      AND fulfillment = 'SHIP_TO_HOME' AND facility_id = ANY(%(q)s) AND product_id IS NOT NULL))
ORDER BY facility_id, product_id
FOR UPDATE
"""

# Everything a batch's outcome writes, in one statement. `reserved` counts the stock rows it could reserve: the
# caller compares with what it asked for and rolls the whole batch back on a shortfall (Oversell).
APPLY = """
WITH reserved AS (
    UPDATE inventory i SET reserved = i.reserved + u.q, updated_at = now()
    FROM unnest(%(rf)s::text[], %(rp)s::text[], %(rq)s::int[]) AS u(f, p, q)
    WHERE i.retailer_id = %(r)s AND i.facility_id = u.f AND i.product_id = u.p
      AND i.quantity_on_hand - i.reserved >= u.q
    RETURNING 1
), moved AS (
    UPDATE order_items i SET facility_id = u.f
    FROM unnest(%(mo)s::bigint[], %(ms)s::int[], %(mf)s::text[]) AS u(o, s, f)
    WHERE i.order_id = u.o AND i.item_seq = u.s
    RETURNING 1
), changes AS (
    INSERT INTO order_facility_changes (retailer_id, order_id, item_seq, from_facility_id, facility_id, quantity,
                                        reason, rule, run_id, note)
    SELECT %(r)s, u.o, u.s, u.fr, u.f, u.q, u.why, u.rule, %(run)s, u.note
    FROM unnest(%(mo)s::bigint[], %(ms)s::int[], %(mfr)s::text[], %(mf)s::text[], %(mq)s::int[], %(mwhy)s::text[],
                %(mrule)s::text[], %(mnote)s::text[]) AS u(o, s, fr, f, q, why, rule, note)
    RETURNING 1
), decisions AS (
    INSERT INTO brokering_decisions (retailer_id, order_id, run_id, routing, summary, lines)
    SELECT %(r)s, u.o, %(run)s, u.routing, u.summary, u.lines
    FROM unnest(%(do)s::bigint[], %(drouting)s::text[], %(dsummary)s::text[], %(dlines)s::jsonb[])
         AS u(o, routing, summary, lines)
    RETURNING 1
), cancel_dates AS (
    UPDATE orders o SET auto_cancel_at = CASE WHEN u.clear THEN NULL ELSE coalesce(o.auto_cancel_at, u.at) END
    FROM unnest(%(co)s::bigint[], %(cat)s::timestamptz[], %(cclear)s::boolean[]) AS u(o, at, clear)
    WHERE o.id = u.o
    RETURNING 1
), done AS (
    UPDATE order_followups f SET status = 'done', done_at = now(), parked = false, result = u.res
    FROM unnest(%(fo)s::bigint[], %(fres)s::text[]) AS u(o, res)
    WHERE f.order_id = u.o AND f.kind = %(kind)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM reserved)
"""


@dataclass(frozen=True)
class _OrderRow:
    id: int
    external_id: str
    store_id: str
    ordered_at: dt.datetime | None
    order_date: dt.datetime
    auto_cancel_at: dt.datetime | None
    channel: str | None
    priority: str | None
    shipping_method: str | None
    may_split: str | None
    postal_code: str | None
    ship_by: str | None
    categories: list[str]
    non_merchandise: list[str]


@dataclass(frozen=True)
class _LineRow:
    order_id: int
    item_seq: int
    product_id: str | None
    gtin: str
    quantity: int
    facility_id: str


@dataclass(frozen=True)
class _FacilityRow:
    facility_id: str
    latitude: float | None
    longitude: float | None
    postal_code: str | None
    allow_brokering: bool
    max_orders_per_day: int | None
    facility_group: str | None
    sequence: int | None
    orders_today: int


def _moment(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class PgBrokeringBatch:
    """One batch of a brokering run (or one order of `broker_order`) in one transaction."""

    def __init__(
        self, conn: psycopg.Connection[Any], retailer_id: str, order_ids: Sequence[int], queues: Sequence[str]
    ):
        self.conn, self.retailer_id = conn, retailer_id
        self.order_ids = sorted(set(order_ids))
        self.queues = list(queues)
        self._lines: dict[tuple[int, int], _LineRow] = {}
        self._row_of: dict[tuple[str, str], str] = {}
        self._nothing: list[int] = []

    def snapshot(self) -> BatchSnapshot:
        conn = self.conn
        params = {"o": self.order_ids, "r": self.retailer_id, "q": self.queues}
        with conn.pipeline():
            orders_cur = conn.cursor(row_factory=class_row(_OrderRow)).execute(ORDERS, params)
            lines_cur = conn.cursor(row_factory=class_row(_LineRow)).execute(LINES, params)
            excl_cur = conn.cursor().execute(EXCLUSIONS, params)
            fac_cur = conn.cursor(row_factory=class_row(_FacilityRow)).execute(FACILITIES, params)
            stock_cur = conn.cursor().execute(STOCK, params)
            now_cur = conn.cursor().execute("SELECT now()")
            order_rows = orders_cur.fetchall()
            line_rows = lines_cur.fetchall()
            exclusions = excl_cur.fetchall()
            facility_rows = fac_cur.fetchall()
            stock_rows = stock_cur.fetchall()
            now_row = now_cur.fetchone()
        assert now_row is not None
        if len(self.order_ids) == 1 and not order_rows:
            (order_id,) = self.order_ids
            owner = conn.execute("SELECT retailer_id FROM orders WHERE id = %s", (order_id,)).fetchone()
            refuse_foreign_order(order_id, owner[0] if owner else None, self.retailer_id)
            if owner is None:
                raise NotFound(f"order {order_id} of retailer {self.retailer_id!r} does not exist")
        rejected: dict[tuple[int, int], dict[str, str]] = {}
        for order_id, item_seq, facility_id, reason in exclusions:
            rejected.setdefault((order_id, item_seq), {})[facility_id] = reason
        by_order: dict[int, list[_LineRow]] = {}
        for w in line_rows:
            by_order.setdefault(w.order_id, []).append(w)
        orders: list[OrderToBroker] = []
        postal: dict[int, str | None] = {}
        for o in order_rows:
            skip = set(o.non_merchandise)  # gift cards, services: never brokered, never touch inventory
            waiting = [w for w in by_order.get(o.id, []) if w.gtin not in skip]
            if not waiting:
                self._nothing.append(o.id)
                continue
            for w in waiting:
                self._lines[(o.id, w.item_seq)] = w
            queue = next((w.facility_id for w in waiting if w.facility_id != BROKERING_QUEUE), BROKERING_QUEUE)
            group = ShipGroup(
                o.id,
                tuple(LineToPlace(w.item_seq, w.gtin, w.quantity) for w in waiting),
                o.may_split == "Y",
                o.store_id,
                None,
                None,
                {w.item_seq: rejected[(o.id, w.item_seq)] for w in waiting if (o.id, w.item_seq) in rejected},
            )
            when = o.ordered_at or o.order_date.replace(tzinfo=dt.UTC)
            orders.append(
                OrderToBroker(
                    group,
                    o.external_id,
                    queue,
                    o.shipping_method,
                    o.priority,
                    o.channel,
                    o.store_id,
                    when,
                    _moment(o.ship_by),
                    frozenset(o.categories),
                    o.auto_cancel_at,
                )
            )
            postal[o.id] = o.postal_code
        self._nothing += [i for i in self.order_ids if i not in {o.id for o in order_rows}]
        facilities = _facilities(facility_rows)
        stock, self._row_of = match_stock(
            ((fid, pid, gtin, int(atp)) for fid, pid, gtin, atp in stock_rows),
            ((w.gtin, w.product_id) for w in self._lines.values()),
        )
        return BatchSnapshot(
            tuple(orders),
            postal,
            facilities,
            {f.facility_id: f.postal_code for f in facility_rows},
            stock,
            now_row[0],
            tuple(self._nothing),
        )

    def apply(self, outcomes: Sequence[OrderOutcome], run_id: str) -> None:
        want: dict[tuple[str, str], int] = {}
        moves: list[tuple[int, int, str, str, int, str, str | None, str | None]] = []
        decisions: list[tuple[int, str | None, str, str]] = []
        cancels: list[tuple[int, dt.datetime | None, bool]] = []
        followups: list[tuple[int, str]] = [(i, "nothing waiting") for i in self._nothing]
        for outcome in outcomes:
            order_id = outcome.order.group.order_id
            summary = outcome_summary(outcome)
            decisions.append((order_id, outcome.routing, summary, json.dumps(decision_lines(outcome))))
            followups.append((order_id, f"{summary} (run {run_id})"[:1000]))
            plan = outcome.plan
            if plan is None:
                continue
            for a in plan.allocations:
                line = self._lines[(order_id, a.item_seq)]
                key = (a.facility_id, line.gtin)
                product = self._row_of[key]
                want[(a.facility_id, product)] = want.get((a.facility_id, product), 0) + a.quantity
                moves.append(
                    (order_id, a.item_seq, line.facility_id, a.facility_id, a.quantity, "BROKERED", a.rule, a.note)
                )
            for u in plan.unfillable:
                line = self._lines[(order_id, u.item_seq)]
                reason = "UNFILLABLE" if u.queue == UNFILLABLE_PARKING else "QUEUED"
                moves.append((order_id, u.item_seq, line.facility_id, u.queue, line.quantity, reason, None, u.reason))
            if not plan.unfillable or outcome.remove_auto_cancel:
                cancels.append((order_id, None, True))  # placed, or held: an auto-cancel date no longer applies
            elif outcome.auto_cancel_at is not None:
                cancels.append((order_id, outcome.auto_cancel_at, False))
        if not decisions and not followups:
            return
        reservations = sorted(want.items())
        row = self.conn.execute(
            APPLY,
            {
                "r": self.retailer_id,
                "run": run_id,
                "kind": BROKERING,
                "rf": [f for (f, _), _ in reservations],
                "rp": [p for (_, p), _ in reservations],
                "rq": [q for _, q in reservations],
                "mo": [m[0] for m in moves],
                "ms": [m[1] for m in moves],
                "mfr": [m[2] for m in moves],
                "mf": [m[3] for m in moves],
                "mq": [m[4] for m in moves],
                "mwhy": [m[5] for m in moves],
                "mrule": [m[6] for m in moves],
                "mnote": [m[7] for m in moves],
                "do": [d[0] for d in decisions],
                "drouting": [d[1] for d in decisions],
                "dsummary": [d[2] for d in decisions],
                "dlines": [d[3] for d in decisions],
                "co": [c[0] for c in cancels],
                "cat": [c[1] for c in cancels],
                "cclear": [c[2] for c in cancels],
                "fo": [f[0] for f in followups],
                "fres": [f[1] for f in followups],
            },
        ).fetchone()
        if row is None or int(row[0]) != len(reservations):
            raise Oversell(
                f"retailer {self.retailer_id}: a batch of {len(self.order_ids)} orders found less stock than it"
                " planned on at reservation; the batch is brokered again"
            )
        from worker.adapters.postgres.lifecycle import PgLifecycle

        # the orders' status and current payload: their lines' new facilities
        PgLifecycle(self.conn, self.retailer_id).finish_many([m[0] for m in moves])


@contextmanager
def brokering_batch(
    db: Database, retailer_id: str, order_ids: Sequence[int], queues: Sequence[str]
) -> Iterator[PgBrokeringBatch]:
    with transient_db_errors(), db.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '30s'")
        yield PgBrokeringBatch(conn, retailer_id, order_ids, queues)


class PgBrokeringViews:
    """Brokering read side: an order's decisions, and a dry run's snapshot (read-only transaction)."""

    def __init__(self, db: Database):
        self.db = db

    def decisions(self, retailer_id: str, external_id: str, limit: int = 20) -> dict[str, Any] | None:
        """The order, its lines where they are now, and its latest decisions (newest first)."""
        with transient_db_errors(), self.db.connection() as conn:
            order = conn.execute(
                "SELECT id, external_id, status_id, store_id, auto_cancel_at FROM orders"
                " WHERE retailer_id = %s AND external_id = %s",
                (retailer_id, external_id),
            ).fetchone()
            if order is None:
                return None
            lines = conn.execute(
                "SELECT item_seq, gtin, quantity, fulfillment, status_id, facility_id FROM order_items"
                " WHERE order_id = %s ORDER BY item_seq",
                (order[0],),
            ).fetchall()
            rows = conn.execute(
                "SELECT run_id, routing, summary, lines, decided_at FROM brokering_decisions WHERE order_id = %s"
                " ORDER BY decided_at DESC, id DESC LIMIT %s",
                (order[0], limit),
            ).fetchall()
        return {
            "order_id": order[1],
            "id": order[0],
            "status": order[2],
            "store": order[3],
            "auto_cancel_at": order[4].isoformat() if order[4] else None,
            "lines": [
                {"item_seq": s, "gtin": g, "quantity": q, "fulfillment": f, "status": st, "facility": fac}
                for s, g, q, f, st, fac in lines
            ],
            "decisions": [
                {"run_id": r, "routing": ro, "summary": su, "lines": li, "decided_at": at.isoformat()}
                for r, ro, su, li, at in rows
            ],
        }

    def replay(self, retailer_id: str, order_ids: Sequence[int]) -> tuple[BatchSnapshot, dict[int, dict[int, str]]]:
        found = replay(self.db, retailer_id, order_ids)
        return found.snapshot, found.where_now

    def history(self, retailer_id: str, since: dt.datetime | None, limit: int = 5000) -> list[int]:
        """The send-sale orders of a period (newest `limit`), for a dry run."""
        with transient_db_errors(), self.db.connection() as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM orders WHERE retailer_id = %s AND order_type <> 'IN_STORE'"
                    " AND status_id <> 'ORDER_CANCELLED' AND (%s::timestamptz IS NULL OR created_at >= %s)"
                    " ORDER BY id DESC LIMIT %s",
                    (retailer_id, since, since, limit),
                )
            ]


# A dry run reads without locking, in a read-only transaction: the same queries without FOR UPDATE, and every
# ship-to-home line of the period wherever it is now.
ORDERS_READ = ORDERS.replace("FOR UPDATE OF o", "")
FACILITIES_READ = FACILITIES.replace("FOR UPDATE OF f", "")
REPLAY_LINES = """
SELECT order_id, item_seq, product_id, gtin, quantity, facility_id, status_id FROM order_items
WHERE order_id = ANY(%(o)s) AND fulfillment = 'SHIP_TO_HOME' AND status_id <> 'ITEM_CANCELLED'
ORDER BY order_id, item_seq
"""
REPLAY_STOCK = """
SELECT facility_id, product_id, gtin, quantity_on_hand - reserved FROM inventory
WHERE retailer_id = %(r)s AND (
    gtin IN (SELECT gtin FROM order_items WHERE order_id = ANY(%(o)s) AND fulfillment = 'SHIP_TO_HOME')
    OR product_id IN (SELECT product_id FROM order_items WHERE order_id = ANY(%(o)s)
                      AND fulfillment = 'SHIP_TO_HOME' AND product_id IS NOT NULL))
ORDER BY facility_id, product_id
"""
QUEUES = {BROKERING_QUEUE, UNFILLABLE_PARKING, "BACKORDER_PARKING", "REJECTED_ITM_PARKING"}


@dataclass(frozen=True)
class Replay:
    """A period's orders as if they were all waiting now, on today's network and stock (the units they hold
    reserved given back), and where each line is today."""

    snapshot: BatchSnapshot
    where_now: dict[int, dict[int, str]]


def replay(db: Database, retailer_id: str, order_ids: Sequence[int]) -> Replay:
    params = {"o": sorted(order_ids), "r": retailer_id}
    with transient_db_errors(), db.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        order_rows = conn.cursor(row_factory=class_row(_OrderRow)).execute(ORDERS_READ, params).fetchall()
        line_rows = conn.execute(REPLAY_LINES, params).fetchall()
        facility_rows = conn.cursor(row_factory=class_row(_FacilityRow)).execute(FACILITIES_READ, params).fetchall()
        stock_rows = conn.execute(REPLAY_STOCK, params).fetchall()
        now_row = conn.execute("SELECT now()").fetchone()
    assert now_row is not None
    by_order: dict[int, list[Any]] = {}
    for row in line_rows:
        by_order.setdefault(row[0], []).append(row)
    orders, postal, where_now = [], {}, {}
    held: dict[tuple[str, str], int] = {}
    for o in order_rows:
        skip = set(o.non_merchandise)
        lines = [r for r in by_order.get(o.id, []) if r[3] not in skip]
        if not lines:
            continue
        where_now[o.id] = {r[1]: r[5] for r in lines}
        for r in lines:
            if r[5] not in QUEUES and r[6] == "ITEM_APPROVED":
                held[(r[5], r[3])] = held.get((r[5], r[3]), 0) + r[4]
        group = ShipGroup(
            o.id, tuple(LineToPlace(r[1], r[3], r[4]) for r in lines), o.may_split == "Y", o.store_id, None, None
        )
        when = o.ordered_at or o.order_date.replace(tzinfo=dt.UTC)
        orders.append(
            OrderToBroker(
                group,
                o.external_id,
                BROKERING_QUEUE,
                o.shipping_method,
                o.priority,
                o.channel,
                o.store_id,
                when,
                _moment(o.ship_by),
                frozenset(o.categories),
            )
        )
        postal[o.id] = o.postal_code
    stock, _ = match_stock(
        ((fid, pid, gtin, int(atp)) for fid, pid, gtin, atp in stock_rows),
        ((r[3], r[2]) for rows in by_order.values() for r in rows),
    )
    for key, units in held.items():
        stock[key] = stock.get(key, 0) + units
    facilities = _facilities(facility_rows)
    snapshot = BatchSnapshot(
        tuple(orders), postal, facilities, {f.facility_id: f.postal_code for f in facility_rows}, stock, now_row[0]
    )
    return Replay(snapshot, where_now)


def _facilities(rows: Sequence[Any]) -> tuple[Facility, ...]:
    """The network as the engine sees it, from facility rows with today's order counts."""
    return tuple(
        Facility(
            f.facility_id,
            f.facility_group,
            f.latitude,
            f.longitude,
            f.allow_brokering,
            f.max_orders_per_day,
            int(f.orders_today),
            f.sequence,
        )
        for f in rows
    )
