"""Facilities, inventory, variances and brokering on PostgreSQL. The SQL of the routing path lives here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.core.brokering import BROKERING_QUEUE, UNFILLABLE_PARKING, BrokeringPlan, Facility, LineToPlace, ShipGroup
from worker.core.errors import GaveUp, NotFound, Oversell, WrongRetailer
from worker.core.inventory import (
    FacilityRow,
    InventoryRow,
    Rejected,
    Variance,
    VarianceFile,
    VarianceFileApplied,
    record_label,
    variance_file_applied,
    variance_for_record,
)
from worker.core.returns import Return, lines_to_restock, restock
from worker.core.routing import BROKERING, INVENTORY, BrokeringSnapshot, SoldLine, sale_variances

GTIN_TYPES = ("UPCA", "EAN", "GTIN")


def order_owner(conn: psycopg.Connection[Any], order_id: int) -> str | None:
    row = conn.execute("SELECT retailer_id FROM orders WHERE id = %s", (order_id,)).fetchone()
    return row[0] if row else None


def refuse_foreign_order(order_id: int, owner: str | None, retailer_id: str) -> None:
    """A follow-up message must name an order of its own retailer: another's stock must not move for it."""
    if owner is not None and owner != retailer_id:
        raise WrongRetailer(f"order {order_id} belongs to retailer {owner}, not {retailer_id}")


class PgStock:
    """A retailer's stock changed inside the caller's transaction: variance files, returns back on the shelf."""

    def __init__(self, conn: psycopg.Connection[Any], retailer_id: str):
        self.conn, self.retailer_id = conn, retailer_id

    def apply_variance(self, v: Variance, product_id: str) -> bool:
        """Record the variance and move quantity on hand, once per source; False if the source was applied already."""
        inserted = self.conn.execute(
            "INSERT INTO inventory_variances (retailer_id, facility_id, id_type, id_value, available_delta, reason_id,"
            " location_seq_id, comments, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (retailer_id, source) DO NOTHING RETURNING id",
            (
                self.retailer_id,
                v.facility_id,
                v.id_type,
                v.id_value,
                v.available_delta,
                v.reason_id,
                v.location_seq_id,
                v.comments,
                v.source,
            ),
        ).fetchone()
        if inserted is None:
            return False
        gtin = v.id_value if v.id_type in GTIN_TYPES else None
        self.conn.execute(
            "INSERT INTO inventory AS i (retailer_id, facility_id, product_id, gtin, quantity_on_hand)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (retailer_id, facility_id, product_id) DO UPDATE"
            " SET quantity_on_hand = i.quantity_on_hand + EXCLUDED.quantity_on_hand, updated_at = now()",
            (self.retailer_id, v.facility_id, product_id, gtin, v.available_delta),
        )
        return True

    def _product_id(self, facility_id: str, id_type: str, id_value: str) -> str | None:
        """The product a variance names, preferring the facility's own row; None when the retailer has no such
        product."""
        column = "product_id" if id_type == "SKU" else "gtin"
        row = self.conn.execute(
            f"SELECT product_id FROM inventory WHERE retailer_id = %s AND {column} = %s"
            " ORDER BY (facility_id = %s) DESC LIMIT 1",
            (self.retailer_id, id_value, facility_id),
        ).fetchone()
        return row[0] if row else None

    def apply_variance_file(self, file_id: int, parsed: VarianceFile) -> VarianceFileApplied:
        """Apply what can be applied; record every rejected record with its reason (the core judges the file)."""
        label = record_label(parsed.format)
        facilities = {
            row[0]
            for row in self.conn.execute(
                "SELECT facility_id FROM facilities WHERE retailer_id = %s", (self.retailer_id,)
            )
        }
        applied, rejected = 0, []
        for record in parsed.records:
            known = record.facility_id in facilities
            product_id = self._product_id(record.facility_id, record.id_type, record.id_value) if known else None
            change = variance_for_record(record, file_id, label, known, product_id)
            if isinstance(change, Rejected):
                rejected.append(change)
                continue
            assert product_id is not None  # a variance is only made for a known product
            if self.apply_variance(change, product_id):
                applied += 1
        result = variance_file_applied(parsed, applied, rejected)
        if result.rejected:
            with self.conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO variance_rejections (tlog_file_id, line, reason) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(file_id, r.line, r.reason) for r in result.rejected],
                )
        return result

    def restock_return(self, ret: Return, return_id: int) -> None:
        """Returned merchandise back on the store's shelf (one POS_RETURN variance per line, once), on the
        product the retailer's stock holds for the GTIN, the store's own row first."""
        for line in lines_to_restock(ret):
            stocked = self.conn.execute(
                "SELECT product_id FROM inventory WHERE retailer_id = %s AND gtin = %s"
                " ORDER BY (facility_id = %s) DESC LIMIT 1",
                (self.retailer_id, line.gtin, ret.store_id),
            ).fetchone()
            change = restock(ret, return_id, line, stocked[0] if stocked else None)
            self.apply_variance(change.variance, change.product_id)


@dataclass(frozen=True)
class WaitingLine:
    item_seq: int
    gtin: str
    quantity: int
    facility_id: str


@dataclass(frozen=True)
class FacilityRecord:
    facility_id: str
    latitude: float | None
    longitude: float | None
    postal_code: str | None
    allow_brokering: bool
    max_orders_per_day: int | None
    facility_group: str | None
    sequence: int | None


@dataclass(frozen=True)
class SaleLinesRow:
    order_id: int
    external_id: str
    store_id: str
    item_seq: int | None
    product_id: str | None
    gtin: str | None
    quantity: int | None
    stock_product_id: str | None
    known_here: bool


# The in-store lines of several sales, each with the product id its store's stock row uses (else the one
# another facility uses for the GTIN, else the line's own) and whether the store has the row.
SALE_LINES_MANY = """
SELECT o.id AS order_id, o.external_id, o.store_id, i.item_seq, i.product_id, i.gtin, i.quantity,
       coalesce(inv.product_id,
                (SELECT x.product_id FROM inventory x WHERE x.retailer_id = o.retailer_id AND x.gtin = i.gtin LIMIT 1),
                i.product_id, i.gtin) AS stock_product_id,
       inv.product_id IS NOT NULL AS known_here
FROM orders o
LEFT JOIN order_items i ON i.order_id = o.id AND i.fulfillment = 'IN_STORE' AND i.status_id <> 'ITEM_CANCELLED'
LEFT JOIN inventory inv ON inv.retailer_id = o.retailer_id AND inv.facility_id = o.store_id AND inv.gtin = i.gtin
WHERE o.id = ANY(%(o)s) AND o.retailer_id = %(r)s
ORDER BY o.id, i.item_seq
"""

# The variances of several sales, once per source, the on-hand quantities they move and their follow-ups marked
# done with a result each, in one statement.
APPLY_SALE_MANY = """
WITH v AS (
    INSERT INTO inventory_variances (retailer_id, facility_id, id_type, id_value, available_delta, reason_id,
                                     comments, source)
    SELECT %(r)s, u.f, 'UPCA', u.g, u.d, 'POS_SALE', u.c, u.s
    FROM unnest(%(f)s::text[], %(g)s::text[], %(d)s::int[], %(c)s::text[], %(s)s::text[]) AS u(f, g, d, c, s)
    ON CONFLICT (retailer_id, source) DO NOTHING
    RETURNING facility_id, id_value, available_delta, source
), products AS (
    SELECT * FROM unnest(%(s)s::text[], %(p)s::text[]) AS u(source, product_id)
), moved AS (
    INSERT INTO inventory AS i (retailer_id, facility_id, product_id, gtin, quantity_on_hand)
    SELECT %(r)s, v.facility_id, products.product_id, max(v.id_value), sum(v.available_delta)
    FROM v JOIN products USING (source)
    GROUP BY v.facility_id, products.product_id
    ORDER BY v.facility_id, products.product_id  -- rows locked in the order brokering locks them: no deadlock
    ON CONFLICT (retailer_id, facility_id, product_id) DO UPDATE
        SET quantity_on_hand = i.quantity_on_hand + EXCLUDED.quantity_on_hand, updated_at = now()
    RETURNING 1
), done AS (
    UPDATE order_followups f SET status = 'done', done_at = now(), result = u.res
    FROM unnest(%(o)s::bigint[], %(res)s::text[]) AS u(order_id, res)
    WHERE f.order_id = u.order_id AND f.kind = %(kind)s AND f.status = 'pending'
)
SELECT (SELECT count(*) FROM v), (SELECT count(*) FROM moved)
"""


class PgInventory:
    """Inventory, facilities and brokering on a connection pool."""

    def __init__(self, db: Database):
        self.db = db

    # -- loads: upserts in one transaction, nothing half-loaded
    def load_facilities(self, retailer_id: str, rows: Sequence[FacilityRow]) -> int:
        with transient_db_errors(), self.db.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO facilities (retailer_id, facility_id, name, facility_type, postal_code, latitude,"
                " longitude, allow_brokering, max_orders_per_day, facility_group, sequence)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (retailer_id, facility_id) DO UPDATE SET name = EXCLUDED.name,"
                " facility_type = EXCLUDED.facility_type, postal_code = EXCLUDED.postal_code,"
                " latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,"
                " allow_brokering = EXCLUDED.allow_brokering, max_orders_per_day = EXCLUDED.max_orders_per_day,"
                " facility_group = EXCLUDED.facility_group, sequence = EXCLUDED.sequence",
                [
                    (
                        retailer_id,
                        r.facility_id,
                        r.name,
                        r.facility_type,
                        r.postal_code,
                        r.latitude,
                        r.longitude,
                        r.allow_brokering,
                        r.max_orders_per_day,
                        r.facility_group,
                        r.sequence,
                    )
                    for r in rows
                ],
            )
        return len(rows)

    def load_inventory(self, retailer_id: str, rows: Sequence[InventoryRow]) -> int:
        """Set quantity on hand to the snapshot (a physical count: reserved units included); reserved is
        recomputed from the open reservations, each difference recorded (lifecycle.record_load)."""
        import uuid

        from worker.adapters.postgres.lifecycle import record_load

        with transient_db_errors(), self.db.connection() as conn, conn.transaction(), conn.cursor() as cur:
            record_load(conn, retailer_id, rows, uuid.uuid4().hex[:12])
            cur.executemany(
                "INSERT INTO inventory (retailer_id, facility_id, product_id, gtin, quantity_on_hand)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (retailer_id, facility_id, product_id) DO UPDATE SET gtin = EXCLUDED.gtin,"
                " quantity_on_hand = EXCLUDED.quantity_on_hand, updated_at = now()",
                [(retailer_id, r.facility_id, r.product_id, r.gtin, r.quantity_on_hand) for r in rows],
            )
        return len(rows)

    def start_followup(self, retailer_id: str, order_id: int, kind: str, max_attempts: int) -> None:
        """Count one more attempt, committed at once; past max_attempts the follow-up fails and GaveUp is raised.
        An order of another retailer is refused (WrongRetailer) and its follow-up left as it is."""
        with transient_db_errors(), self.db.connection() as conn:
            row = conn.execute(
                "WITH counted AS (UPDATE order_followups SET attempts = attempts + (status = 'pending')::int"
                "  WHERE order_id = %(o)s AND kind = %(k)s AND retailer_id = %(r)s RETURNING status, attempts)"
                " SELECT (SELECT retailer_id FROM orders WHERE id = %(o)s), status, attempts"
                " FROM (SELECT 1) AS one LEFT JOIN counted ON true",
                {"o": order_id, "k": kind, "r": retailer_id},
            ).fetchone()
            assert row is not None
            owner, status, attempts = row
            refuse_foreign_order(order_id, owner, retailer_id)
            if status != "pending" or attempts <= max_attempts:
                return
            reason = f"gave up after {attempts - 1} attempts: the task crashed, timed out or kept failing"
            conn.execute(
                "UPDATE order_followups SET status = 'failed', done_at = now(), result = %s"
                " WHERE order_id = %s AND kind = %s",
                (reason, order_id, kind),
            )
        raise GaveUp(f"order {order_id} {kind}: {reason}")

    def forgive_followup(self, order_id: int, kind: str) -> None:
        """A transient failure was handled cleanly: it does not count toward the poison-message bound."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE order_followups SET attempts = greatest(attempts - 1, 0) WHERE order_id = %s"
                " AND kind = %s AND status = 'pending'",
                (order_id, kind),
            )

    # -- in-store sales
    def apply_sale(self, retailer_id: str, order_id: int) -> tuple[int, list[str]]:
        """Lower the store's inventory for an order's in-store lines, once; (variances applied, notes).

        Two round trips, pipelined: lock the follow-up and read the lines with their stock rows; then the same
        statement as an inventory run's (apply_sale_lines), for this one sale.
        """
        with transient_db_errors(), self.db.connection() as conn, conn.pipeline(), conn.transaction():
            follow = conn.execute(
                "SELECT status FROM order_followups WHERE order_id = %s AND kind = %s AND retailer_id = %s FOR UPDATE",
                (order_id, INVENTORY, retailer_id),
            )
            found = (
                conn.cursor(row_factory=class_row(SaleLinesRow))
                .execute(SALE_LINES_MANY, {"o": [order_id], "r": retailer_id})
                .fetchall()
            )
            status = follow.fetchone()
            if not found:
                refuse_foreign_order(order_id, order_owner(conn, order_id), retailer_id)
                raise NotFound(f"order {order_id} of retailer {retailer_id!r} does not exist")
            if status is not None and status[0] == "done":
                return 0, ["already applied"]
            applied, notes = apply_sale_lines(conn, retailer_id, found)
        return applied, notes.get(order_id, [])

    # -- brokering
    @contextmanager
    def brokering_unit(self, retailer_id: str, order_id: int, parked: bool = False) -> Iterator[PgBrokeringUnit]:
        with transient_db_errors(), self.db.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '30s'")
            yield PgBrokeringUnit(conn, retailer_id, order_id, parked)

    def orders_waiting(self, retailer_id: str, parked: bool) -> list[int]:
        """Orders with lines still in the brokering queue (and, with parked, in UNFILLABLE_PARKING)."""
        places = [BROKERING_QUEUE, UNFILLABLE_PARKING] if parked else [BROKERING_QUEUE]
        with transient_db_errors(), self.db.connection() as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT o.id FROM orders o JOIN order_items i ON i.order_id = o.id"
                    " WHERE o.retailer_id = %s AND i.facility_id = ANY(%s) AND i.fulfillment = 'SHIP_TO_HOME'"
                    " AND i.status_id = 'ITEM_APPROVED' ORDER BY o.id",
                    (retailer_id, places),
                )
            ]


class PgBrokeringUnit:
    """One order's brokering in one transaction: lock, read, then reserve and record."""

    def __init__(self, conn: psycopg.Connection[Any], retailer_id: str, order_id: int, parked: bool):
        self.conn, self.retailer_id, self.order_id, self.parked = conn, retailer_id, order_id, parked
        self._from: dict[int, str] = {}
        self._gtin: dict[int, str] = {}
        self._quantity: dict[int, int] = {}

    def snapshot(self) -> BrokeringSnapshot | None:
        conn = self.conn
        # The order row lock makes two deliveries of the same brokering message take turns.
        order = conn.execute(
            "SELECT store_id, oms_payload FROM orders WHERE id = %s AND retailer_id = %s FOR UPDATE",
            (self.order_id, self.retailer_id),
        ).fetchone()
        if order is None:
            refuse_foreign_order(self.order_id, order_owner(conn, self.order_id), self.retailer_id)
            raise NotFound(f"order {self.order_id} of retailer {self.retailer_id!r} does not exist")
        store_id, payload = order
        places = [BROKERING_QUEUE, UNFILLABLE_PARKING] if self.parked else [BROKERING_QUEUE]
        rows = (
            conn.cursor(row_factory=class_row(WaitingLine))
            .execute(
                "SELECT item_seq, gtin, quantity, facility_id FROM order_items WHERE order_id = %s"
                " AND fulfillment = 'SHIP_TO_HOME' AND facility_id = ANY(%s) AND status_id = 'ITEM_APPROVED'"
                " ORDER BY item_seq",
                (self.order_id, places),
            )
            .fetchall()
        )
        if not rows:
            self._done("nothing waiting")
            return None
        for w in rows:
            self._from[w.item_seq], self._gtin[w.item_seq], self._quantity[w.item_seq] = (
                w.facility_id,
                w.gtin,
                w.quantity,
            )
        group_json = _ship_group(payload)
        postal = ((group_json.get("shipTo") or {}).get("postalAddress") or {}).get("postalCode")
        may_split = group_json.get("maySplit") == "Y"
        # Capacity-limited facilities are locked so two orders cannot both take a facility's last slot today.
        conn.execute(
            "SELECT facility_id FROM facilities WHERE retailer_id = %s AND max_orders_per_day IS NOT NULL"
            " ORDER BY facility_id FOR UPDATE",
            (self.retailer_id,),
        )
        today = dict(
            conn.execute(
                "SELECT facility_id, count(DISTINCT order_id) FROM order_facility_changes WHERE retailer_id = %s"
                " AND reason = 'BROKERED'"
                " AND changed_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
                " AND order_id <> %s GROUP BY facility_id",
                (self.retailer_id, self.order_id),
            ).fetchall()
        )
        facilities, postal_codes = [], {}
        for f in (
            conn.cursor(row_factory=class_row(FacilityRecord))
            .execute(
                "SELECT facility_id, latitude, longitude, postal_code, allow_brokering, max_orders_per_day,"
                " facility_group, sequence FROM facilities WHERE retailer_id = %s ORDER BY facility_id",
                (self.retailer_id,),
            )
            .fetchall()
        ):
            facilities.append(
                Facility(
                    f.facility_id,
                    f.facility_group,
                    f.latitude,
                    f.longitude,
                    f.allow_brokering,
                    f.max_orders_per_day,
                    int(today.get(f.facility_id, 0)),
                    f.sequence,
                )
            )
            postal_codes[f.facility_id] = f.postal_code
        gtins = sorted({w.gtin for w in rows})
        # Locking every stock row of these products, in one order, serializes brokering per SKU without deadlocks.
        stock = {
            (fid, gtin): int(atp)
            for fid, gtin, atp in conn.execute(
                "SELECT facility_id, gtin, quantity_on_hand - reserved FROM inventory WHERE retailer_id = %s"
                " AND gtin = ANY(%s) ORDER BY facility_id, product_id FOR UPDATE",
                (self.retailer_id, gtins),
            )
        }
        # a facility that rejected a line of this order does not get it back (order_item_exclusions)
        for fid, gtin in conn.execute(
            "SELECT e.facility_id, i.gtin FROM order_item_exclusions e JOIN order_items i"
            " ON i.order_id = e.order_id AND i.item_seq = e.item_seq WHERE e.order_id = %s",
            (self.order_id,),
        ).fetchall():
            stock.pop((fid, gtin), None)
        lines = tuple(LineToPlace(w.item_seq, w.gtin, w.quantity) for w in rows)
        group = ShipGroup(self.order_id, lines, may_split, store_id, None, None)
        return BrokeringSnapshot(group, postal, tuple(facilities), postal_codes, stock)

    def apply(self, plan: BrokeringPlan, run_id: str) -> None:
        conn = self.conn
        for a in plan.allocations:
            reserved = conn.execute(
                "UPDATE inventory SET reserved = reserved + %(q)s, updated_at = now() WHERE retailer_id = %(r)s"
                " AND facility_id = %(f)s AND gtin = %(g)s AND quantity_on_hand - reserved >= %(q)s RETURNING 1",
                {"q": a.quantity, "r": self.retailer_id, "f": a.facility_id, "g": self._gtin[a.item_seq]},
            ).fetchone()
            if reserved is None:
                raise Oversell(f"order {self.order_id} line {a.item_seq}: {a.facility_id} lacks {a.quantity}")
            self._move(a.item_seq, a.facility_id, a.quantity, "BROKERED", a.rule, run_id, a.note)
        for u in plan.unfillable:
            self._move(u.item_seq, UNFILLABLE_PARKING, self._quantity[u.item_seq], "UNFILLABLE", None, run_id, u.reason)
        self._done(f"{len(plan.allocations)} allocated, {len(plan.unfillable)} unfillable (run {run_id})")
        from worker.adapters.postgres.lifecycle import PgLifecycle

        PgLifecycle(self.conn, self.retailer_id).finish(self.order_id)  # the current payload: new facilities

    def _move(
        self,
        item_seq: int,
        facility_id: str,
        quantity: int,
        reason: str,
        rule: str | None,
        run_id: str,
        note: str | None,
    ) -> None:
        self.conn.execute(
            "UPDATE order_items SET facility_id = %s WHERE order_id = %s AND item_seq = %s",
            (facility_id, self.order_id, item_seq),
        )
        self.conn.execute(
            "INSERT INTO order_facility_changes (retailer_id, order_id, item_seq, from_facility_id, facility_id,"
            " quantity, reason, rule, run_id, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                self.retailer_id,
                self.order_id,
                item_seq,
                self._from[item_seq],
                facility_id,
                quantity,
                reason,
                rule,
                run_id,
                note,
            ),
        )

    def _done(self, result: str) -> None:
        self.conn.execute(
            "UPDATE order_followups SET status = 'done', done_at = now(),"
            " result = %s WHERE order_id = %s AND kind = %s",
            (result, self.order_id, BROKERING),
        )


def apply_sale_lines(
    conn: psycopg.Connection[Any], retailer_id: str, found: list[SaleLinesRow]
) -> tuple[int, dict[int, list[str]]]:
    """Record the POS_SALE variances of these sales' lines, move on-hand and mark their follow-ups done, in one
    statement; (variances applied, notes per order)."""
    by_order: dict[int, list[SaleLinesRow]] = {}
    for x in found:
        by_order.setdefault(x.order_id, []).append(x)
    variances: list[Variance] = []
    products: list[str | None] = []
    notes: dict[int, list[str]] = {}
    done: list[int] = []
    results: list[str] = []
    for order_id, rows in by_order.items():
        lines = [
            SoldLine(x.item_seq, x.product_id, x.gtin, x.quantity)
            for x in rows
            if x.item_seq is not None and x.gtin is not None and x.quantity is not None
        ]
        stock = {x.item_seq: x for x in rows}
        store_id = rows[0].store_id
        # the sale happened: a line the store had no row for is recorded as negative stock
        order_notes = [
            f"store {store_id} had no inventory row for {line.gtin}: created at {-line.quantity}"
            for line in lines
            if not stock[line.item_seq].known_here
        ]
        notes[order_id] = order_notes
        for variance, line in zip(sale_variances(order_id, rows[0].external_id, store_id, lines), lines, strict=True):
            variances.append(variance)
            products.append(stock[line.item_seq].stock_product_id)
        done.append(order_id)
        results.append(f"{len(lines)} variances" + "".join(f"; {n}" for n in order_notes))
    row = conn.execute(
        APPLY_SALE_MANY,
        {
            "r": retailer_id,
            "kind": INVENTORY,
            "f": [v.facility_id for v in variances],
            "g": [v.id_value for v in variances],
            "d": [v.available_delta for v in variances],
            "c": [v.comments for v in variances],
            "s": [v.source for v in variances],
            "p": products,
            "o": done,
            "res": results,
        },
    ).fetchone()
    return (int(row[0]) if row else 0), notes


def _ship_group(payload: Any) -> dict[str, Any]:
    """The ship-to-home ship group of a stored createSalesOrder envelope."""
    order = payload[0]["dataList"][0]["data"]["order"]
    for group in order["shipGroup"]:
        if group.get("facilityId") == BROKERING_QUEUE or "shipTo" in group:
            return group  # type: ignore[no-any-return]
    return {}
