"""An order's life after the sale on PostgreSQL: ship, reject, cancel and release, the fulfilment feed, corrected
and voided TLogs, returns checked against their sale, inventory loads, and the current payload.

Every change of stock that is not an inventory variance is one row of inventory_movements, once per source
(`UNIQUE (retailer_id, source)`): applying the same record, command or file twice changes nothing.
docs/order-lifecycle.md describes the behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.inventory import PgStock
from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.core.errors import NotFound
from worker.core.inventory import InventoryRow, Rejected, Variance
from worker.core.lifecycle import (
    CANCELLED,
    NOT_A_FACILITY,
    REJECTED,
    SHIPPED,
    ActionRefused,
    FulfillmentFile,
    ItemChange,
    StoredItem,
    cancel,
    current_payload,
    describe_diff,
    judge_correction,
    label,
    order_status,
    payload_diff,
    reject,
    ship,
)
from worker.core.oms import COUNTED_PAYMENTS, ITEM_CANCELLED, Order, json_default
from worker.core.returns import Return
from worker.services.ports import DUPLICATE, FAILED, LedgerRow, Recorded

CONFLICT = "conflict"


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"))


@dataclass(frozen=True)
class ActionResult:
    order_id: int
    external_id: str
    changed: tuple[int, ...]  # lines changed now
    already: tuple[int, ...]  # lines already in that state (the same action before)
    order_status: str


@dataclass(frozen=True)
class FulfillmentApplied:
    applied: int
    already: int
    rejected: tuple[Rejected, ...]
    reorder: bool  # a line went back to brokering: a brokering run is owed

    @property
    def failed(self) -> bool:
        return self.applied == 0 and self.already == 0

    @property
    def summary(self) -> str | None:
        if not self.rejected:
            return None
        shown = "; ".join(r.reason for r in self.rejected[:5])
        more = f"; and {len(self.rejected) - 5} more" if len(self.rejected) > 5 else ""
        total = self.applied + self.already + len(self.rejected)
        return f"{len(self.rejected)} of {total} records rejected: {shown}{more}"


class PgLifecycle:
    """One retailer's orders after the sale, inside the caller's transaction."""

    def __init__(self, conn: psycopg.Connection[Any], retailer_id: str):
        self.conn, self.retailer_id = conn, retailer_id

    # -- reading under lock
    def lock_order(self, external_id: str) -> tuple[int, str, Any] | None:
        row = self.conn.execute(
            "SELECT id, status_id, oms_payload FROM orders WHERE retailer_id = %s AND external_id = %s FOR UPDATE",
            (self.retailer_id, external_id),
        ).fetchone()
        return (int(row[0]), str(row[1]), row[2]) if row else None

    def items(self, order_id: int) -> list[StoredItem]:
        with self.conn.cursor(row_factory=class_row(StoredItem)) as cur:
            cur.execute(
                "SELECT item_seq, fulfillment, status_id, facility_id, quantity, gtin FROM order_items"
                " WHERE order_id = %s ORDER BY item_seq",
                (order_id,),
            )
            return cur.fetchall()

    # -- one line's change, once per source
    def apply_change(self, order_id: int, change: ItemChange, reason: str, source: str, file_id: int | None) -> bool:
        """Move the stock the change names (one movement row, once per source), then the line and its history;
        False when the source was applied already."""
        moved = change.release or change.ship
        if moved and change.stock_facility:
            product = self.conn.execute(
                "SELECT product_id FROM inventory WHERE retailer_id = %s AND facility_id = %s"
                " AND gtin = (SELECT gtin FROM order_items WHERE order_id = %s AND item_seq = %s)"
                " ORDER BY product_id LIMIT 1 FOR UPDATE",
                (self.retailer_id, change.stock_facility, order_id, change.item_seq),
            ).fetchone()
            if product is not None:
                inserted = self.conn.execute(
                    "INSERT INTO inventory_movements (retailer_id, facility_id, product_id, on_hand_delta,"
                    " reserved_delta, reason, source, order_id, item_seq, tlog_file_id, note)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (retailer_id, source) DO NOTHING RETURNING id",
                    (
                        self.retailer_id,
                        change.stock_facility,
                        product[0],
                        -change.ship,
                        -(change.release + change.ship),
                        reason,
                        source,
                        order_id,
                        change.item_seq,
                        file_id,
                        change.note or None,
                    ),
                ).fetchone()
                if inserted is None:
                    return False
                self.conn.execute(
                    "UPDATE inventory SET quantity_on_hand = quantity_on_hand - %(ship)s,"
                    " reserved = greatest(reserved - %(rel)s, 0), updated_at = now()"
                    " WHERE retailer_id = %(r)s AND facility_id = %(f)s AND product_id = %(p)s",
                    {
                        "ship": change.ship,
                        "rel": change.release + change.ship,
                        "r": self.retailer_id,
                        "f": change.stock_facility,
                        "p": product[0],
                    },
                )
        self.conn.execute(
            "UPDATE order_items SET status_id = %s, facility_id = %s WHERE order_id = %s AND item_seq = %s",
            (change.status_id, change.facility_id, order_id, change.item_seq),
        )
        if change.exclude:
            self.conn.execute(
                "INSERT INTO order_item_exclusions (order_id, item_seq, facility_id, reason) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (order_id, change.item_seq, change.exclude, f"rejected by the store: {change.note}"[:1000]),
            )
        if change.stock_facility and change.facility_id != change.stock_facility:
            quantity = change.release or change.ship
            self.conn.execute(
                "INSERT INTO order_facility_changes (retailer_id, order_id, item_seq, from_facility_id, facility_id,"
                " quantity, reason, run_id, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    self.retailer_id,
                    order_id,
                    change.item_seq,
                    change.stock_facility,
                    change.facility_id,
                    quantity,
                    reason,
                    source,
                    change.note or None,
                ),
            )
        return True

    def reverse_sale_variance(self, order_id: int, external_id: str, item: StoredItem, store_id: str) -> bool:
        """An in-store line voided after its sale lowered stock: the POS_SALE variance reversed, once."""
        original = self.conn.execute(
            "SELECT facility_id, id_type, id_value, available_delta FROM inventory_variances"
            " WHERE retailer_id = %s AND source = %s",
            (self.retailer_id, f"order:{order_id}:{item.item_seq}"),
        ).fetchone()
        if original is None:
            return False
        product = self.conn.execute(
            "SELECT product_id FROM inventory WHERE retailer_id = %s AND facility_id = %s AND gtin = %s LIMIT 1",
            (self.retailer_id, original[0], original[2]),
        ).fetchone()
        variance = Variance(
            original[0],
            original[1],
            original[2],
            -int(original[3]),
            "POS_SALE",
            f"void:{order_id}:{item.item_seq}",
            comments=f"POS void of {external_id} line {item.item_seq}",
        )
        return PgStock(self.conn, self.retailer_id).apply_variance(variance, product[0] if product else item.gtin)

    def finish_many(self, order_ids: Sequence[int]) -> None:
        """finish for a batch of orders (a brokering run's): two reads and one pipelined update in all."""
        if not order_ids:
            return
        ids = sorted(set(order_ids))
        items: dict[int, list[StoredItem]] = {i: [] for i in ids}
        for row in self.conn.execute(
            "SELECT order_id, item_seq, fulfillment, status_id, facility_id, quantity, gtin FROM order_items"
            " WHERE order_id = ANY(%s) ORDER BY order_id, item_seq",
            (ids,),
        ).fetchall():
            items[int(row[0])].append(StoredItem(*row[1:]))
        payloads = dict(self.conn.execute("SELECT id, oms_payload FROM orders WHERE id = ANY(%s)", (ids,)).fetchall())
        updates = []
        for order_id in ids:
            status = order_status([i.status_id for i in items[order_id]])
            current = Jsonb(current_payload(payloads[order_id], items[order_id], status), dumps=_dumps)
            updates.append((status, current, order_id))
        with self.conn.cursor() as cur:
            cur.executemany("UPDATE orders SET status_id = %s, current_payload = %s WHERE id = %s", updates)

    def finish(self, order_id: int) -> str:
        """The order's status from its items, and its current payload."""
        items = self.items(order_id)
        status = order_status([i.status_id for i in items])
        row = self.conn.execute("SELECT oms_payload FROM orders WHERE id = %s", (order_id,)).fetchone()
        assert row is not None
        self.conn.execute(
            "UPDATE orders SET status_id = %s, current_payload = %s WHERE id = %s",
            (status, Jsonb(current_payload(row[0], items, status), dumps=_dumps), order_id),
        )
        return status

    # -- the three actions
    def act(
        self,
        action: str,
        external_id: str,
        item_seq: int | None = None,
        facility_id: str | None = None,
        quantity: int | None = None,
        reason: str | None = None,
        file_id: int | None = None,
    ) -> ActionResult:
        """Ship, reject or cancel one line (item_seq) or every open line of an order; ActionRefused names why
        not, NotFound when the retailer has no such order or line."""
        found = self.lock_order(external_id)
        if found is None:
            raise NotFound(f"order {external_id} of retailer {self.retailer_id!r} does not exist")
        order_id = found[0]
        store = self.conn.execute("SELECT store_id FROM orders WHERE id = %s", (order_id,)).fetchone()
        items = self.items(order_id)
        chosen = [i for i in items if item_seq is None or i.item_seq == item_seq]
        if not chosen:
            raise NotFound(f"order {external_id} has no line {item_seq}")
        changed, already = [], []
        for item in chosen:
            where = f"order {external_id} line {item.item_seq}"
            if action == CANCELLED:
                if item.status_id == ITEM_CANCELLED:
                    already.append(item.item_seq)
                    continue
                if item_seq is None and item.status_id == "ITEM_COMPLETED" and item.fulfillment == "SHIP_TO_HOME":
                    continue  # cancelling an order leaves what shipped shipped
                self._lock_inventory_followup(order_id)
                if item.fulfillment == "IN_STORE" and item.status_id == "ITEM_COMPLETED":
                    self.reverse_sale_variance(order_id, external_id, item, store[0] if store else "")
                    change = ItemChange(item.item_seq, ITEM_CANCELLED, item.facility_id, 0, 0, None)
                else:
                    change = cancel(item, where)
                source = f"cancel:{order_id}:{item.item_seq}"
            elif action == SHIPPED:
                if item.status_id == "ITEM_COMPLETED" and item.fulfillment == "SHIP_TO_HOME":
                    already.append(item.item_seq)
                    continue
                if item_seq is None and (
                    item.fulfillment != "SHIP_TO_HOME"
                    or item.status_id != "ITEM_APPROVED"
                    or item.facility_id in NOT_A_FACILITY
                ):
                    continue  # the whole order: the lines a facility holds
                change = ship(item, facility_id, quantity, where)
                source = f"ship:{order_id}:{item.item_seq}"
            elif action == REJECTED:
                if item_seq is None and (
                    item.fulfillment != "SHIP_TO_HOME"
                    or item.status_id != "ITEM_APPROVED"
                    or item.facility_id in NOT_A_FACILITY
                ):
                    continue
                change = reject(item, facility_id, reason, where)
                source = f"reject:{order_id}:{item.item_seq}:{item.facility_id}"
            else:
                raise ValueError(f"unknown action {action!r}")
            if self.apply_change(order_id, change, action, source, file_id):
                changed.append(item.item_seq)
            else:
                already.append(item.item_seq)
        if not changed and not already:
            verb = {SHIPPED: "ship", REJECTED: "reject", CANCELLED: "cancel"}[action]
            raise ActionRefused(f"order {external_id}: no open line to {verb}")
        status = self.finish(order_id)
        if action == REJECTED and changed:
            self._owe_brokering(order_id)
        return ActionResult(order_id, external_id, tuple(changed), tuple(already), status)

    def _lock_inventory_followup(self, order_id: int) -> None:
        # the in-store decrement of this order takes turns with its cancellation: never both for one line
        self.conn.execute(
            "SELECT 1 FROM order_followups WHERE order_id = %s AND kind = 'inventory' FOR UPDATE", (order_id,)
        )

    def _owe_brokering(self, order_id: int) -> None:
        """The order has a line back in the brokering queue: its brokering follow-up is pending again and the
        retailer's brokering trigger set (the outbox sweep starts the run if nobody publishes it)."""
        self.conn.execute(
            "INSERT INTO order_followups (order_id, kind, retailer_id, sent_at) VALUES (%s, 'brokering', %s, now())"
            " ON CONFLICT (order_id, kind) DO UPDATE SET status = 'pending', done_at = NULL, attempts = 0,"
            " result = 'back in the queue: rejected by the store', sent_at = now()",
            (order_id, self.retailer_id),
        )
        self.conn.execute(
            "INSERT INTO routing_triggers AS t (retailer_id, kind, pending, requested_at)"
            " VALUES (%s, 'brokering', true, now())"
            " ON CONFLICT (retailer_id, kind) DO UPDATE SET pending = true, requested_at = now()",
            (self.retailer_id,),
        )

    # -- the fulfilment feed
    def apply_fulfillment_file(self, file_id: int, parsed: FulfillmentFile) -> FulfillmentApplied:
        """Each record applied in its own savepoint: a refused record is recorded with its reason and the
        others still count."""
        word = label(parsed.format)
        applied = already = 0
        rejected = list(parsed.rejected)
        reorder = False
        for r in parsed.records:
            where = f"{word} {r.line}"
            try:
                with self.conn.transaction():
                    result = self.act(r.status, r.external_id, r.item_seq, r.facility_id, r.quantity, r.reason, file_id)
                outcome = "applied" if result.changed else "already applied"
                applied += bool(result.changed)
                already += not result.changed
                reorder = reorder or (r.status == REJECTED and bool(result.changed))
                order_id: int | None = result.order_id
            except (ActionRefused, NotFound) as exc:
                outcome = f"{where}: {exc}"
                rejected.append(Rejected(r.line, outcome))
                order_id = None
            self.conn.execute(
                "INSERT INTO fulfillment_records (tlog_file_id, line, order_id, external_id, item_seq, facility_id,"
                " quantity, status, tracking_code, reason, result) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    file_id,
                    r.line,
                    order_id,
                    r.external_id,
                    r.item_seq,
                    r.facility_id,
                    r.quantity or 0,
                    r.status,
                    r.tracking_code,
                    r.reason,
                    outcome[:1000],
                ),
            )
        rejected.sort(key=lambda x: x.line)
        return FulfillmentApplied(applied, already, tuple(rejected), reorder)

    # -- a TLog whose orderId is stored already
    def correction(self, row: LedgerRow, recorded: Recorded, order: Order, followups: Sequence[str] = ()) -> Recorded:
        """The file was found a duplicate by order id. Same content: it stays a duplicate. Other content: a
        newer version is applied (cancellations, or a replacement while no stock moved) or refused with the
        diff (failed); an older or equal one is a conflict (the diff kept, the file to the error folder)."""
        found = self.conn.execute(
            "SELECT id, oms_payload, source_updated_ms, tlog_file_id FROM orders WHERE retailer_id = %s"
            " AND external_id = %s FOR UPDATE",
            (self.retailer_id, order.external_id),
        ).fetchone()
        if found is None:
            return recorded
        order_id, stored_payload, stored_ms, first_file = int(found[0]), found[1], found[2], found[3]
        diff = payload_diff(stored_payload, order.payload)
        if not diff:
            return recorded
        self._lock_inventory_followup(order_id)  # an inventory run of this sale takes turns with its correction
        items = self.items(order_id)
        stored_cancelled = {i.item_seq for i in items if i.status_id == ITEM_CANCELLED}
        cancelled_now = {line.item_seq for line in order.lines if line.status_id == ITEM_CANCELLED}
        verdict = judge_correction(
            stored_ms, order.updated_ms, diff, cancelled_now, self._stock_moved(order_id), stored_cancelled
        )
        text = describe_diff(diff)
        triggered: tuple[str, ...] = ()
        if verdict.outcome == CONFLICT:
            status, error = (
                CONFLICT,
                (
                    f"order {order.external_id}: conflicts with the version stored from ledger row"
                    f" {first_file}: {verdict.reason}; differs in {text}"
                ),
            )
            version = "conflict"
        elif verdict.outcome == "refuse":
            status, error = FAILED, f"order {order.external_id}: {verdict.reason}; differs in {text}"
            version = "refused"
        else:
            if verdict.outcome == "replace":
                self._replace(order_id, order)
                triggered = self._owe(order_id, followups)
            for seq in verdict.cancel_items:
                self.act(CANCELLED, order.external_id, seq, file_id=row.id)
            if verdict.outcome != "replace" and order.payments:
                # the tenders as the newer version has them: a void voids its tenders (kept, no longer counted)
                with self.conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE order_payments SET status_id = %s WHERE order_id = %s AND seq = %s",
                        [(p.status_id, order_id, p.seq) for p in order.payments],
                    )
            self.conn.execute(
                "UPDATE orders SET oms_payload = %s, source_updated_ms = %s, grand_total = %s WHERE id = %s",
                (Jsonb(order.payload, dumps=_dumps), order.updated_ms, order.grand_total, order_id),
            )
            self.finish(order_id)
            status, error, version = "processed", None, "applied"
        self.conn.execute(
            "INSERT INTO order_versions (order_id, tlog_file_id, updated_ms, outcome, diff, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                order_id,
                row.id,
                order.updated_ms,
                version,
                Jsonb(diff, dumps=_dumps),
                Jsonb(order.payload, dumps=_dumps),
            ),
        )
        with self.conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            from worker.adapters.postgres.rows import ROW_COLUMNS

            updated = cur.execute(
                "UPDATE tlog_files SET status = %s, error = %s, diff = %s,"
                " duplicate_of = CASE WHEN %s = 'duplicate' THEN duplicate_of END"
                f" WHERE id = %s RETURNING {ROW_COLUMNS}",
                (status, error, Jsonb(diff, dumps=_dumps), status, row.id),
            ).fetchone()
        assert updated is not None
        return Recorded(updated, order_id if status == "processed" else None, triggered=triggered)

    def _owe(self, order_id: int, kinds: Sequence[str]) -> tuple[str, ...]:
        """The follow-ups a replaced sale needs (a version may add in-store or ship-to-home lines), pending; the
        kinds whose run must start."""
        for kind in kinds:
            self.conn.execute(
                "INSERT INTO order_followups (order_id, kind, retailer_id, sent_at) VALUES (%s, %s, %s, now())"
                " ON CONFLICT (order_id, kind) DO UPDATE SET status = 'pending', done_at = NULL, attempts = 0,"
                " result = 'a newer version replaced the order'",
                (order_id, kind, self.retailer_id),
            )
            self.conn.execute(
                "INSERT INTO routing_triggers AS t (retailer_id, kind, pending, requested_at)"
                " VALUES (%s, %s, true, now())"
                " ON CONFLICT (retailer_id, kind) DO UPDATE SET pending = true, requested_at = now()",
                (self.retailer_id, kind),
            )
        return tuple(kinds)

    def _stock_moved(self, order_id: int) -> bool:
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM inventory_variances WHERE retailer_id = %(r)s"
            "   AND source LIKE 'order:' || %(o)s || ':%%')"
            " OR EXISTS (SELECT 1 FROM order_items WHERE order_id = %(o)s AND fulfillment = 'SHIP_TO_HOME'"
            "   AND facility_id <> '_NA_')"
            " OR EXISTS (SELECT 1 FROM returns WHERE original_order_id = %(o)s)",
            {"r": self.retailer_id, "o": order_id},
        ).fetchone()
        return bool(row and row[0])

    def _replace(self, order_id: int, order: Order) -> None:
        """A newer version of a sale that moved no stock yet: its lines, tenders and adjustments replaced."""
        conn = self.conn
        conn.execute("DELETE FROM order_items WHERE order_id = %s", (order_id,))
        conn.execute("DELETE FROM order_payments WHERE order_id = %s", (order_id,))
        conn.execute("DELETE FROM order_adjustments WHERE order_id = %s", (order_id,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO order_items (order_id, item_seq, product_id, gtin, quantity, unit_price, tax, line_total,"
                " fulfillment, status_id, facility_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        order_id,
                        x.item_seq,
                        x.product_id,
                        x.gtin,
                        x.quantity,
                        x.unit_price,
                        x.tax,
                        x.line_total,
                        x.fulfillment,
                        x.status_id,
                        x.facility_id,
                    )
                    for x in order.lines
                ],
            )
            cur.executemany(
                "INSERT INTO order_payments (order_id, seq, payment_method_type_id, pos_payment_method, amount,"
                " status_id) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (order_id, p.seq, p.payment_method_type_id, p.pos_payment_method, p.amount, p.status_id)
                    for p in order.payments
                ],
            )
            cur.executemany(
                "INSERT INTO order_adjustments (order_id, seq, item_seq, adjustment_type, amount)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(order_id, a.seq, a.item_seq, a.adjustment_type, a.amount) for a in order.adjustments],
            )

    # -- returns against their sale
    def check_return(self, ret: Return) -> str | None:
        """Why a return cannot be stored against its sale, or None: per sale line, returned quantity at most what
        was sold less what earlier returns took (a line returned already names that return); refunds at most what
        was paid less earlier refunds."""
        stored = self.conn.execute(
            "SELECT 1 FROM returns WHERE retailer_id = %s AND external_id = %s", (self.retailer_id, ret.external_id)
        ).fetchone()
        if stored is not None:
            return None  # the return id is stored already: a duplicate of that file, as before
        original_ids = {line.original_order_id for line in ret.lines if line.original_order_id}
        for external in sorted(original_ids):
            sale = self.conn.execute(
                "SELECT id FROM orders WHERE retailer_id = %s AND external_id = %s FOR UPDATE",
                (self.retailer_id, external),
            ).fetchone()
            if sale is None:
                continue  # a sale this system never saw: the return stands alone
            sale_id = int(sale[0])
            sold = {
                str(seq): (int(q), gtin, status)
                for seq, q, gtin, status in self.conn.execute(
                    "SELECT item_seq, quantity, gtin, status_id FROM order_items WHERE order_id = %s", (sale_id,)
                )
            }
            earlier = self.conn.execute(
                "SELECT ri.original_item_seq, sum(ri.quantity), string_agg(DISTINCT r.external_id, ', '),"
                " min(r.tlog_file_id) FROM return_items ri JOIN returns r ON r.id = ri.return_id"
                " WHERE ri.original_order_id = %s GROUP BY ri.original_item_seq",
                (sale_id,),
            ).fetchall()
            taken = {str(seq): (int(q), names, file_id) for seq, q, names, file_id in earlier}
            for line in ret.lines:
                if line.original_order_id != external:
                    continue
                seq = self.original_line(line.original_item_seq, line.gtin, sold)
                if seq is None:
                    return f"return {ret.external_id} line {line.item_seq}: sale {external} has no line for {line.gtin}"
                quantity, _, status = sold[seq]
                if status == ITEM_CANCELLED:
                    return f"return {ret.external_id} line {line.item_seq}: sale {external} line {seq} was cancelled"
                before, names, file_id = taken.get(seq, (0, None, None))
                if before >= quantity:
                    return (
                        f"return {ret.external_id} line {line.item_seq}: sale {external} line {seq} was refunded"
                        f" already by return {names} (ledger row {file_id}); a second refund is refused"
                    )
                if line.quantity > quantity - before:
                    return (
                        f"return {ret.external_id} line {line.item_seq}: quantity {line.quantity} is more than sale"
                        f" {external} line {seq} has left to return ({quantity} sold, {before} returned)"
                    )
            paid = self.conn.execute(
                "SELECT coalesce(sum(amount), 0) FROM order_payments WHERE order_id = %s AND status_id = ANY(%s)",
                (sale_id, list(COUNTED_PAYMENTS)),
            ).fetchone()
            refunded = self.conn.execute(
                "SELECT coalesce(sum(refund_total), 0) FROM returns WHERE original_order_id = %s", (sale_id,)
            ).fetchone()
            assert paid is not None and refunded is not None
            if len(original_ids) == 1 and ret.refund_total > paid[0] - refunded[0]:
                return (
                    f"return {ret.external_id}: refund {ret.refund_total} is more than sale {external} has left to"
                    f" refund ({paid[0]} paid, {refunded[0]} refunded before)"
                )
        return None

    @staticmethod
    def original_line(seq: int | None, gtin: str, sold: dict[str, tuple[int, str, str]]) -> str | None:
        if seq is not None:
            return str(seq) if str(seq) in sold else None
        matches = [s for s, (_, g, _) in sold.items() if g == gtin]
        return sorted(matches, key=int)[0] if matches else None

    def link_return(self, ret: Return, return_id: int, count_damaged: bool = True) -> None:
        """Each returned line linked to its sale line, damaged units counted non-sellable at the store, and an
        exchange's return linked to its new sale."""
        conn = self.conn
        for line in ret.lines:
            if line.original_order_id:
                sale = conn.execute(
                    "SELECT id FROM orders WHERE retailer_id = %s AND external_id = %s",
                    (self.retailer_id, line.original_order_id),
                ).fetchone()
                if sale is not None:
                    sold = {
                        str(s): (int(q), g, st)
                        for s, q, g, st in conn.execute(
                            "SELECT item_seq, quantity, gtin, status_id FROM order_items WHERE order_id = %s",
                            (sale[0],),
                        )
                    }
                    seq = self.original_line(line.original_item_seq, line.gtin, sold)
                    conn.execute(
                        "UPDATE return_items SET original_order_id = %s, original_item_seq = %s, condition = %s"
                        " WHERE return_id = %s AND item_seq = %s",
                        (sale[0], int(seq) if seq else None, line.condition, return_id, line.item_seq),
                    )
            conn.execute(
                "UPDATE return_items SET condition = %s WHERE return_id = %s AND item_seq = %s",
                (line.condition, return_id, line.item_seq),
            )
            if line.condition == "DAMAGED" and count_damaged:
                inserted = conn.execute(
                    "INSERT INTO inventory_variances (retailer_id, facility_id, id_type, id_value, available_delta,"
                    " reason_id, comments, source) VALUES (%s, %s, 'UPCA', %s, 0, 'VAR_DAMAGED', %s, %s)"
                    " ON CONFLICT (retailer_id, source) DO NOTHING RETURNING id",
                    (
                        self.retailer_id,
                        ret.store_id,
                        line.gtin,
                        f"returned damaged: {line.quantity} non-sellable ({ret.external_id})",
                        f"return:{return_id}:{line.item_seq}",
                    ),
                ).fetchone()
                if inserted is not None:
                    conn.execute(
                        "INSERT INTO inventory AS i (retailer_id, facility_id, product_id, gtin, non_sellable)"
                        " VALUES (%s, %s, coalesce((SELECT product_id FROM inventory WHERE retailer_id = %s"
                        "   AND gtin = %s ORDER BY (facility_id = %s) DESC LIMIT 1), %s), %s, %s)"
                        " ON CONFLICT (retailer_id, facility_id, product_id) DO UPDATE"
                        " SET non_sellable = i.non_sellable + EXCLUDED.non_sellable, updated_at = now()",
                        (
                            self.retailer_id,
                            ret.store_id,
                            self.retailer_id,
                            line.gtin,
                            ret.store_id,
                            line.product_id or line.gtin,
                            line.gtin,
                            line.quantity,
                        ),
                    )
        if ret.exchange_order_id:
            conn.execute(
                "UPDATE returns SET exchange_external_id = %s, exchange_order_id = (SELECT id FROM orders"
                " WHERE retailer_id = %s AND external_id = %s) WHERE id = %s",
                (ret.exchange_order_id, self.retailer_id, ret.exchange_order_id, return_id),
            )


def record_load(conn: psycopg.Connection[Any], retailer_id: str, rows: Sequence[InventoryRow], load_id: str) -> None:
    """An inventory load's snapshot is the physical count on the shelf, reserved units included (they have not
    left the store): on hand is set to it, each difference recorded as a LOAD movement, and reserved recomputed
    from the open reservations (approved ship-to-home lines at a facility), so a load also mends drift."""
    for r in rows:
        before = conn.execute(
            "SELECT quantity_on_hand FROM inventory WHERE retailer_id = %s AND facility_id = %s AND product_id = %s",
            (retailer_id, r.facility_id, r.product_id),
        ).fetchone()
        delta = r.quantity_on_hand - (int(before[0]) if before else 0)
        if delta:
            conn.execute(
                "INSERT INTO inventory_movements (retailer_id, facility_id, product_id, on_hand_delta, reason, source,"
                " note) VALUES (%s, %s, %s, %s, 'LOAD', %s, %s) ON CONFLICT (retailer_id, source) DO NOTHING",
                (
                    retailer_id,
                    r.facility_id,
                    r.product_id,
                    delta,
                    f"load:{load_id}:{r.facility_id}:{r.product_id}",
                    f"snapshot {r.quantity_on_hand}",
                ),
            )
    conn.execute(RECOMPUTE_RESERVED, {"r": retailer_id, "f": sorted({r.facility_id for r in rows})})


# reserved = the open reservations: approved ship-to-home lines allocated to the facility, by GTIN
RECOMPUTE_RESERVED = """
UPDATE inventory i SET reserved = coalesce(open.q, 0), updated_at = now()
FROM inventory x LEFT JOIN (
    SELECT i2.facility_id, i2.gtin, sum(i2.quantity) AS q FROM order_items i2 JOIN orders o ON o.id = i2.order_id
    WHERE o.retailer_id = %(r)s AND i2.fulfillment = 'SHIP_TO_HOME' AND i2.status_id = 'ITEM_APPROVED'
    GROUP BY i2.facility_id, i2.gtin
) open ON open.facility_id = x.facility_id AND open.gtin = x.gtin
WHERE i.retailer_id = %(r)s AND x.retailer_id = i.retailer_id AND x.facility_id = i.facility_id
  AND x.product_id = i.product_id AND i.facility_id = ANY(%(f)s)
"""


class PgOrderActions:
    """ship / reject / cancel from a command or a task: one transaction each."""

    def __init__(self, db: Database):
        self.db = db

    def act(
        self, retailer_id: str, action: str, external_id: str, item_seq: int | None = None, reason: str | None = None
    ) -> ActionResult:
        with transient_db_errors(), self.db.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '30s'")
            return PgLifecycle(conn, retailer_id).act(action, external_id, item_seq, reason=reason)

    def diff(self, retailer_id: str, external_id: str) -> list[dict[str, Any]]:
        """The versions of an order TLogs brought after the first: outcome, ledger row, diff."""
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "SELECT v.outcome, v.tlog_file_id, f.file_name, v.updated_ms, v.diff FROM order_versions v"
                " JOIN orders o ON o.id = v.order_id JOIN tlog_files f ON f.id = v.tlog_file_id"
                " WHERE o.retailer_id = %s AND o.external_id = %s ORDER BY v.id",
                (retailer_id, external_id),
            ).fetchall()
        return [{"outcome": r[0], "ledger_id": r[1], "file": r[2], "updated_ms": r[3], "diff": r[4]} for r in rows]

    def allocated(self, retailer_id: str, limit: int) -> list[tuple[str, int, str, str, str]]:
        """(order, line, facility, gtin, product) of send-sale lines reserved at a facility, oldest first."""
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "SELECT o.external_id, i.item_seq, i.facility_id, i.gtin, coalesce(i.product_id, i.gtin)"
                " FROM orders o JOIN order_items i ON i.order_id = o.id"
                " WHERE o.retailer_id = %s AND i.fulfillment = 'SHIP_TO_HOME' AND i.status_id = 'ITEM_APPROVED'"
                " AND i.facility_id NOT IN ('_NA_', 'UNFILLABLE_PARKING') ORDER BY o.id, i.item_seq LIMIT %s",
                (retailer_id, limit),
            ).fetchall()
        return [(str(a), int(b), str(c), str(d), str(e)) for a, b, c, d, e in rows]

    def lines(self, retailer_id: str, external_ids: Sequence[str]) -> list[tuple[str, str, int, str, str]]:
        """(order, order status, line, line status, facility) of these orders."""
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "SELECT o.external_id, o.status_id, i.item_seq, i.status_id, i.facility_id FROM orders o"
                " JOIN order_items i ON i.order_id = o.id WHERE o.retailer_id = %s AND o.external_id = ANY(%s)"
                " ORDER BY o.external_id, i.item_seq",
                (retailer_id, list(external_ids)),
            ).fetchall()
        return [(str(a), str(b), int(c), str(d), str(e)) for a, b, c, d, e in rows]

    def file_outcomes(self, retailer_id: str, names: Sequence[str]) -> list[tuple[str, str, str | None]]:
        """(file, status, error) of the latest ledger row of each name, of any feed."""
        with transient_db_errors(), self.db.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (file_name) file_name, status, error FROM tlog_files WHERE retailer_id = %s"
                " AND file_name = ANY(%s) AND status <> 'claimed' AND moved_at IS NOT NULL ORDER BY file_name, id DESC",
                (retailer_id, list(names)),
            ).fetchall()
        return [(str(a), str(b), c) for a, b, c in rows]

    def invariant(self, retailer_id: str) -> list[str]:
        """Every facility and product where reserved is not the open reservations, or on hand is not what its
        variances and movements add up to since the last load: empty when the inventory invariant holds."""
        with transient_db_errors(), self.db.connection() as conn:
            return check_invariant(conn, retailer_id)


def check_invariant(conn: psycopg.Connection[Any], retailer_id: str) -> list[str]:
    """reserved = the open reservations (approved ship-to-home lines allocated there), never negative; on hand =
    the sum of its variances and movements (every change traced to one source row)."""
    problems = []
    for facility, product, reserved, open_q in conn.execute(
        "SELECT i.facility_id, i.product_id, i.reserved, coalesce((SELECT sum(x.quantity) FROM order_items x"
        "  JOIN orders o ON o.id = x.order_id WHERE o.retailer_id = i.retailer_id AND x.facility_id = i.facility_id"
        "  AND x.gtin = i.gtin AND x.fulfillment = 'SHIP_TO_HOME' AND x.status_id = 'ITEM_APPROVED'), 0)"
        " FROM inventory i WHERE i.retailer_id = %s ORDER BY 1, 2",
        (retailer_id,),
    ):
        if reserved < 0 or reserved != open_q:
            problems.append(f"{facility} {product}: reserved {reserved}, open reservations {open_q}")
    for facility, product, on_hand, traced in conn.execute(TRACED, (retailer_id,)):
        if on_hand != traced:
            problems.append(f"{facility} {product}: on hand {on_hand}, its variances and movements add up to {traced}")
    return problems


# on hand as its source rows add it up: variances (by GTIN, or SKU = product id) and movements (by product)
TRACED = """
SELECT i.facility_id, i.product_id, i.quantity_on_hand,
       coalesce((SELECT sum(v.available_delta) FROM inventory_variances v WHERE v.retailer_id = i.retailer_id
                 AND v.facility_id = i.facility_id
                 AND (v.id_value = i.gtin AND v.id_type <> 'SKU'
                      OR v.id_type = 'SKU' AND v.id_value = i.product_id)), 0)
     + coalesce((SELECT sum(m.on_hand_delta) FROM inventory_movements m WHERE m.retailer_id = i.retailer_id
                 AND m.facility_id = i.facility_id AND m.product_id = i.product_id), 0)
FROM inventory i WHERE i.retailer_id = %s ORDER BY 1, 2
"""


__all__ = ["CONFLICT", "DUPLICATE", "PgLifecycle", "PgOrderActions", "check_invariant", "record_load"]
