"""Where a stored sale goes next: inventory for in-store lines, brokering for ship-to-home lines."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.core.brokering import BrokeringPlan, Facility, Rule, ShipGroup, Stock, broker
from worker.core.geo import zip_location
from worker.core.inventory import Variance
from worker.core.oms import Order
from worker.core.retailers import Retailer
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
    if SHIP_TO_HOME in kinds:
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
class BrokeringSnapshot:
    """What brokering sees of one order, read under lock: its unplaced lines, the network and the stock."""

    group: ShipGroup  # coordinates may be None: filled from postal codes here
    ship_to_postal_code: str | None
    facilities: tuple[Facility, ...]
    facility_postal_codes: dict[str, str | None]
    stock: Stock


class BrokeringUnit(Protocol):
    def snapshot(self) -> BrokeringSnapshot | None:
        """The order's lines waiting for brokering, or None when there are none."""
        ...

    def apply(self, plan: BrokeringPlan, run_id: str) -> None:
        """Reserve, move the lines and record each change, in the snapshot's transaction."""
        ...


def locate(snapshot: BrokeringSnapshot) -> tuple[ShipGroup, tuple[Facility, ...]]:
    """Fill unknown coordinates from postal codes (ship-to and facilities)."""
    group = snapshot.group
    if group.latitude is None or group.longitude is None:
        where = zip_location(snapshot.ship_to_postal_code)
        if where:
            group = dataclasses.replace(group, latitude=where[0], longitude=where[1])
    facilities = []
    for f in snapshot.facilities:
        if f.latitude is None or f.longitude is None:
            where = zip_location(snapshot.facility_postal_codes.get(f.facility_id))
            if where:
                f = dataclasses.replace(f, latitude=where[0], longitude=where[1])
        facilities.append(f)
    return group, tuple(facilities)


def broker_order(unit: BrokeringUnit, rules: Sequence[Rule], run_id: str) -> BrokeringPlan | None:
    """Allocate an order's waiting lines by the retailer's rules; None when nothing was waiting."""
    snapshot = unit.snapshot()
    if snapshot is None:
        return None
    group, facilities = locate(snapshot)
    plan = broker(group, facilities, snapshot.stock, rules)
    unit.apply(plan, run_id)
    return plan
