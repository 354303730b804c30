"""Where a stored sale goes next: inventory for in-store lines, brokering for ship-to-home lines."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.core.brokering import BROKERING_QUEUE, BrokeringPlan, Facility, Rule, Stock
from worker.core.geo import zip_location
from worker.core.inventory import Variance
from worker.core.oms import Order
from worker.core.retailers import Retailer
from worker.core.routings import OrderOutcome, OrderToBroker, Routing, legacy_routing, plan_batch
from worker.core.tlog import IN_STORE, SHIP_TO_HOME

INVENTORY, BROKERING = "inventory", "brokering"
POS_SALE = "POS_SALE"


def followups_for(order: Order, retailer: Retailer) -> tuple[str, ...]:
    """The downstream work a stored order needs, decided per line, not per file."""
    # a cancelled (voided) line moves no stock and goes to no facility
    kinds = {line.fulfillment for line in order.lines if line.status_id != "ITEM_CANCELLED"}
    out = []
    # Not the order master, or the variance feed's POS_SALE records lower stock: the sale must not do it too.
    if IN_STORE in kinds and retailer.sales_lower_stock:
        out.append(INVENTORY)
    # a line waits for brokering in _NA_; a non-merchandise one (gift card, service) never does
    if any(line.fulfillment == SHIP_TO_HOME and line.facility_id == BROKERING_QUEUE for line in order.lines):
        out.append(BROKERING)
    return tuple(out)


@dataclass(frozen=True)
class SoldLine:
    item_seq: int
    product_id: str | None
    gtin: str
    quantity: int


def sale_variances(order_id: int, external_id: str, store_id: str, lines: Sequence[SoldLine]) -> list[Variance]:
    """An in-store sale lowers the selling store's inventory by what left the till, one variance per line."""
    return [
        Variance(
            store_id,
            "UPCA",
            line.gtin,
            -line.quantity,
            POS_SALE,
            f"order:{order_id}:{line.item_seq}",
            product_id=line.product_id,
            comments=f"POS in-store sale {external_id}",
        )
        for line in lines
    ]


@dataclass(frozen=True)
class BatchSnapshot:
    """What a brokering run sees of a batch, read under lock in one transaction: the orders' waiting lines and
    attributes, the network (with today's order counts) and the stock of their products, read once."""

    orders: tuple[OrderToBroker, ...]  # coordinates may be None: filled from postal codes here
    ship_to_postal_codes: Mapping[int, str | None]
    facilities: tuple[Facility, ...]
    facility_postal_codes: Mapping[str, str | None]
    stock: Stock
    now: dt.datetime  # the database's clock, UTC
    nothing_waiting: tuple[int, ...] = ()  # orders taken whose lines were brokered or moved meanwhile


class BrokeringBatch(Protocol):
    def snapshot(self) -> BatchSnapshot:
        """The batch's orders with lines waiting, locked, with the network and stock."""
        ...

    def apply(self, outcomes: Sequence[OrderOutcome], run_id: str) -> None:
        """Reserve, move the lines, record each move and each order's decision, in the snapshot's transaction."""
        ...


# the per-order unit of `broker_order` is a batch of one
BrokeringUnit = BrokeringBatch


def locate(snapshot: BatchSnapshot) -> tuple[tuple[OrderToBroker, ...], tuple[Facility, ...]]:
    """Fill unknown coordinates from postal codes (ship-to and facilities)."""
    orders = []
    for order in snapshot.orders:
        group = order.group
        if group.latitude is None or group.longitude is None:
            where = zip_location(snapshot.ship_to_postal_codes.get(group.order_id))
            if where:
                order = dataclasses.replace(
                    order, group=dataclasses.replace(group, latitude=where[0], longitude=where[1])
                )
        orders.append(order)
    facilities = []
    for f in snapshot.facilities:
        if f.latitude is None or f.longitude is None:
            where = zip_location(snapshot.facility_postal_codes.get(f.facility_id))
            if where:
                f = dataclasses.replace(f, latitude=where[0], longitude=where[1])
        facilities.append(f)
    return tuple(orders), tuple(facilities)


def broker_batch(batch: BrokeringBatch, routings: Sequence[Routing], run_id: str) -> list[OrderOutcome]:
    """Broker a batch of orders by the retailer's routings and record the outcome."""
    snapshot = batch.snapshot()
    orders, facilities = locate(snapshot)
    outcomes = plan_batch(orders, facilities, snapshot.stock, routings, snapshot.now)
    batch.apply(outcomes, run_id)
    return outcomes


def as_routings(rules_or_routings: Sequence[Rule] | Sequence[Routing]) -> tuple[Routing, ...]:
    """Routings as they are, or a flat rule list as the one routing that matches every order."""
    items = tuple(rules_or_routings)
    if items and all(isinstance(x, Routing) for x in items):
        return items  # type: ignore[return-value]
    return (legacy_routing([x for x in items if isinstance(x, Rule)]),)


def broker_order(unit: BrokeringBatch, rules: Sequence[Rule] | Sequence[Routing], run_id: str) -> BrokeringPlan | None:
    """Allocate one order's waiting lines; None when nothing was waiting (or no routing took it)."""
    outcomes = broker_batch(unit, as_routings(rules), run_id)
    return outcomes[0].plan if outcomes else None
