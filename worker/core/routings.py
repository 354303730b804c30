"""Brokering runs as an order management system organises them: runs -> routings -> inventory rules.

Pure. A run's batch of orders is brokered in memory against one read of the network and the stock: each order
goes to the first routing whose order filters it matches (an order none matches stays where it is, and says why),
the orders of a routing are taken in its sort, and each order's plan is made by the routing's inventory rules on
the stock and capacity left by the orders before it. The caller writes the outcome in one transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.core.brokering import (
    BROKERING_QUEUE,
    DEFAULT_RULES,
    UNFILLABLE_PARKING,
    BrokeringPlan,
    Facility,
    Rule,
    ShipGroup,
    Stock,
    broker,
    distance_km,
)

ORDER_SORT_KEYS = ("order_date", "ship_by", "priority", "shipping_method")
DEFAULT_QUEUES = (UNFILLABLE_PARKING, BROKERING_QUEUE)  # parked orders first, as HotWax does
# filter name -> what it reads from the order (the include form; `exclude_<name>` is the exclude form)
SET_FILTERS = ("shipping_methods", "priorities", "channels", "origin_facility_groups", "categories", "queues")


@dataclass(frozen=True)
class Routing:
    """One routing: which orders (include/exclude filters, each None = any), in which order, by which rules."""

    name: str
    rules: tuple[Rule, ...] = DEFAULT_RULES
    include: Mapping[str, frozenset[str]] = field(default_factory=dict)
    exclude: Mapping[str, frozenset[str]] = field(default_factory=dict)
    ship_by_within_days: float | None = None  # include only orders to ship by within this many days
    exclude_ship_by_within_days: float | None = None
    sort: tuple[str, ...] = ("order_date",)

    @property
    def queues(self) -> tuple[str, ...]:
        chosen = self.include.get("queues")
        if chosen is None:
            return tuple(q for q in DEFAULT_QUEUES if q not in self.exclude.get("queues", frozenset()))
        return tuple(sorted(chosen - self.exclude.get("queues", frozenset())))


DEFAULT_ROUTINGS: tuple[Routing, ...] = (Routing("default: every order"),)


def legacy_routing(rules: Sequence[Rule]) -> Routing:
    """The flat `[[brokering.rules]]` list of older retailers files: one routing that matches every order."""
    return Routing("default: every order", tuple(rules) or DEFAULT_RULES)


@dataclass(frozen=True)
class OrderToBroker:
    """What a run knows of one waiting order: its attributes for the filters and sorts, and its ship group."""

    group: ShipGroup
    external_id: str
    queue: str  # where its waiting lines sit (the first one's, parked queues first)
    shipping_method: str | None
    priority: str | None
    channel: str | None
    origin_facility_id: str | None
    order_date: dt.datetime | None  # UTC
    ship_by: dt.datetime | None = None
    categories: frozenset[str] = frozenset()
    auto_cancel_at: dt.datetime | None = None


@dataclass(frozen=True)
class OrderOutcome:
    order: OrderToBroker
    routing: str | None  # None: no routing matched
    plan: BrokeringPlan | None
    why_unrouted: str | None = None
    auto_cancel_at: dt.datetime | None = None  # newly set by a rule's action
    remove_auto_cancel: bool = False  # a rule's action removes the order's auto-cancel date


def _attributes(order: OrderToBroker, origin_group: str | None) -> dict[str, set[str]]:
    def one(value: str | None) -> set[str]:
        return {value} if value is not None else set()

    return {
        "shipping_methods": one(order.shipping_method),
        "priorities": one(order.priority),
        "channels": one(order.channel),
        "origin_facility_groups": one(origin_group),
        "categories": set(order.categories),
        "queues": one(order.queue),
    }


_LABEL = {
    "shipping_methods": "shipping method",
    "priorities": "priority",
    "channels": "sales channel",
    "origin_facility_groups": "origin facility group",
    "categories": "product category",
    "queues": "queue",
}


def why_not(routing: Routing, order: OrderToBroker, origin_group: str | None, now: dt.datetime) -> str | None:
    """Why the routing does not take the order (None: it does)."""
    values = _attributes(order, origin_group)
    for name in SET_FILTERS:
        have = values[name]
        shown = ", ".join(sorted(have)) or "none"
        wanted = routing.include.get(name)
        if name == "queues" and wanted is None:
            wanted = frozenset(DEFAULT_QUEUES)
        if wanted is not None and not (have & wanted):
            return f"{_LABEL[name]} {shown} not in {sorted(wanted)}"
        unwanted = routing.exclude.get(name)
        if unwanted and have & unwanted:
            return f"{_LABEL[name]} {shown} is excluded ({sorted(unwanted)})"
    for days, include in ((routing.ship_by_within_days, True), (routing.exclude_ship_by_within_days, False)):
        if days is None:
            continue
        within = order.ship_by is not None and order.ship_by <= now + dt.timedelta(days=days)
        if include and not within:
            return f"ship-by date {_when(order.ship_by)} not within {days:g} days"
        if not include and within:
            return f"ship-by date {_when(order.ship_by)} is within {days:g} days (excluded)"
    return None


def _when(moment: dt.datetime | None) -> str:
    return moment.isoformat(timespec="minutes") if moment is not None else "none"


def _sort_key(routing: Routing, order: OrderToBroker) -> tuple[Any, ...]:
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    parts: list[Any] = [order.queue != UNFILLABLE_PARKING]  # parked orders are tried first
    for name in routing.sort:
        if name == "order_date":
            parts.append(order.order_date or far)
        elif name == "ship_by":
            parts.append(order.ship_by or far)
        elif name == "priority":
            # HotWax priorities: lower number first; unknown last
            parts.append((order.priority is None, _number(order.priority)))
        elif name == "shipping_method":
            parts.append(order.shipping_method or "~")
    parts.append(order.group.order_id)
    return tuple(parts)


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else 0.0
    except ValueError:
        return 0.0


def plan_batch(
    orders: Sequence[OrderToBroker],
    facilities: Sequence[Facility],
    stock: Stock,
    routings: Sequence[Routing],
    now: dt.datetime,
) -> list[OrderOutcome]:
    """Broker a batch of orders routing by routing, each order on the stock and capacity the ones before it
    left. The caller's stock is not changed."""
    stock = dict(stock)
    network = list(facilities)
    index = {f.facility_id: i for i, f in enumerate(network)}
    groups = {f.facility_id: f.facility_group for f in network}
    routed: dict[int, list[OrderToBroker]] = {i: [] for i in range(len(routings))}
    outcomes: list[OrderOutcome] = []
    for order in orders:
        reasons = []
        for i, routing in enumerate(routings):
            why = why_not(routing, order, groups.get(order.origin_facility_id or ""), now)
            if why is None:
                routed[i].append(order)
                break
            reasons.append(f"{routing.name}: {why}")
        else:
            outcomes.append(OrderOutcome(order, None, None, "no routing matches: " + "; ".join(reasons)))
    for i, routing in enumerate(routings):
        for order in sorted(routed[i], key=lambda o: _sort_key(routing, o)):
            plan = broker(order.group, network, stock, routing.rules)
            for a in plan.allocations:
                gtin = next(line.gtin for line in order.group.lines if line.item_seq == a.item_seq)
                stock[(a.facility_id, gtin)] = stock.get((a.facility_id, gtin), 0) - a.quantity
            for fid in {a.facility_id for a in plan.allocations}:
                f = network[index[fid]]
                network[index[fid]] = dataclasses.replace(f, orders_today=f.orders_today + 1)
            cancel_at = None
            if plan.unfillable and plan.auto_cancel_days is not None and order.auto_cancel_at is None:
                cancel_at = now + dt.timedelta(days=plan.auto_cancel_days)
            outcomes.append(
                OrderOutcome(
                    order,
                    routing.name,
                    plan,
                    auto_cancel_at=cancel_at,
                    remove_auto_cancel=bool(plan.unfillable) and plan.remove_auto_cancel,
                )
            )
    return outcomes


def decision_lines(outcome: OrderOutcome) -> list[dict[str, Any]]:
    """The stored explanation of one order's outcome in a run: per line, the result and each rule's verdict on
    each facility (JSON-ready)."""
    order = outcome.order
    if outcome.plan is None:
        return [
            {
                "item_seq": line.item_seq,
                "gtin": line.gtin,
                "quantity": line.quantity,
                "result": "not routed",
                "queue": order.queue,
                "why": outcome.why_unrouted,
                "rules": [],
            }
            for line in order.group.lines
        ]
    plan = outcome.plan
    placed = {a.item_seq: a for a in plan.allocations}
    parked = {u.item_seq: u for u in plan.unfillable}
    out = []
    for line in order.group.lines:
        entry: dict[str, Any] = {"item_seq": line.item_seq, "gtin": line.gtin, "quantity": line.quantity}
        if line.item_seq in placed:
            a = placed[line.item_seq]
            entry |= {"result": "allocated", "facility": a.facility_id, "rule": a.rule, "why": a.note}
        else:
            u = parked[line.item_seq]
            entry |= {"result": "parked", "queue": u.queue, "why": u.reason}
        entry["rules"] = [
            {"rule": t.rule, "facilities": {fid: verdict for fid, verdict in t.facilities}}
            for t in plan.trace.get(line.item_seq, ())
        ]
        out.append(entry)
    return out


def outcome_summary(outcome: OrderOutcome) -> str:
    if outcome.plan is None:
        return outcome.why_unrouted or "not routed"
    plan = outcome.plan
    where = sorted({a.facility_id for a in plan.allocations})
    parts = [f"routing {outcome.routing!r}: {len(plan.allocations)} allocated"]
    if where:
        parts[0] += f" ({', '.join(where)})"
    if plan.unfillable:
        queues = sorted({u.queue for u in plan.unfillable})
        parts.append(f"{len(plan.unfillable)} to {', '.join(queues)}")
    return ", ".join(parts)


# -- dry run


@dataclass(frozen=True)
class DryRunStats:
    orders: int
    lines: int
    filled_lines: int
    split_orders: int
    average_distance_km: float | None

    @property
    def fill_rate(self) -> float:
        return self.filled_lines / self.lines if self.lines else 0.0

    @property
    def split_rate(self) -> float:
        return self.split_orders / self.orders if self.orders else 0.0


def dry_run_stats(outcomes: Iterable[OrderOutcome], facilities: Sequence[Facility]) -> DryRunStats:
    where = {f.facility_id: f for f in facilities}
    orders = lines = filled = split = 0
    distances: list[float] = []
    for o in outcomes:
        orders += 1
        lines += len(o.order.group.lines)
        if o.plan is None:
            continue
        filled += len(o.plan.allocations)
        if len({a.facility_id for a in o.plan.allocations}) > 1:
            split += 1
        g = o.order.group
        for a in o.plan.allocations:
            f = where.get(a.facility_id)
            if f and None not in (g.latitude, g.longitude, f.latitude, f.longitude):
                assert g.latitude is not None and g.longitude is not None
                assert f.latitude is not None and f.longitude is not None
                distances.append(distance_km(g.latitude, g.longitude, f.latitude, f.longitude))
    average = sum(distances) / len(distances) if distances else None
    return DryRunStats(orders, lines, filled, split, average)


def placements(outcome: OrderOutcome) -> dict[int, str]:
    """item_seq -> facility or queue: what an order's outcome is, for comparing two rule sets."""
    if outcome.plan is None:
        return {line.item_seq: outcome.order.queue for line in outcome.order.group.lines}
    found = {a.item_seq: a.facility_id for a in outcome.plan.allocations}
    found |= {u.item_seq: u.queue for u in outcome.plan.unfillable}
    return found


def changed_orders(
    before: Mapping[int, Mapping[int, str]], after: Iterable[OrderOutcome]
) -> list[tuple[str, dict[int, str], dict[int, str]]]:
    """(external id, before, after) of each order whose lines would end up somewhere else."""
    out = []
    for o in after:
        was = dict(before.get(o.order.group.order_id, {}))
        now = placements(o)
        if was != now:
            out.append((o.order.external_id, was, now))
    return out


# -- stock by either identifier


def match_stock(
    rows: Iterable[tuple[str, str, str | None, int]], lines: Iterable[tuple[str, str | None]]
) -> tuple[Stock, dict[tuple[str, str], str]]:
    """Stock rows (facility, product id, GTIN, ATP) keyed the way lines are placed, by the line's GTIN: a row
    with that GTIN, else a row under the line's product id (stock loaded without GTINs). Returns the stock and,
    per (facility, GTIN), the product id of the row to reserve. A facility's GTIN row wins over its product-id
    row."""
    by_product: dict[str, set[str]] = {}
    gtins: set[str] = set()
    for gtin, line_product in lines:
        gtins.add(gtin)
        if line_product:
            by_product.setdefault(line_product, set()).add(gtin)
    stock: Stock = {}
    row_of: dict[tuple[str, str], str] = {}
    exact: set[tuple[str, str]] = set()
    for facility_id, product_id, row_gtin, atp in rows:
        if row_gtin is not None and row_gtin in gtins:
            key = (facility_id, row_gtin)
            stock[key], row_of[key] = atp, product_id
            exact.add(key)
            continue
        for line_gtin in sorted(by_product.get(product_id, ())):
            key = (facility_id, line_gtin)
            if key not in exact and key not in row_of:
                stock[key], row_of[key] = atp, product_id
    return stock, row_of
