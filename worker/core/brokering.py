"""Brokering: which facility ships each line of a ship group, under ordered inventory rules (DOMAIN.md, "Brokering").

Pure: the caller loads facilities, today's order counts and available-to-promise stock, then records
and reserves what the plan allocates. Lines are allocated whole; what no rule can place is reported
as unfillable with a reason (or sent to the queue a rule's action names), never dropped. Every facility a
rule looked at is in the plan's trace with the reason it was or was not chosen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

BROKERING_QUEUE = "_NA_"
UNFILLABLE_PARKING = "UNFILLABLE_PARKING"
BACKORDER_PARKING = "BACKORDER_PARKING"
SORT_KEYS = ("distance", "inventory", "sequence")
EXTRA_SORT_KEYS = ("capacity",)  # most orders left today first; no limit counts as most
ALL_SORT_KEYS = SORT_KEYS + EXTRA_SORT_KEYS
NEXT_RULE, MOVE_TO_QUEUE = "next_rule", "move_to_queue"
ACTIONS = (NEXT_RULE, MOVE_TO_QUEUE)
KM, MILES = "km", "mi"
KM_PER_MILE = 1.609344
_EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
CHOSEN = "chosen"


@dataclass(frozen=True)
class Rule:
    """One inventory rule: which facilities may ship, in which order they are preferred, and what happens to
    the lines it cannot place."""

    name: str
    facility_group: str | None = None
    max_distance_km: float | None = None
    safety_stock: int = 0
    allow_split: bool = False
    sort: tuple[str, ...] = ("distance", "inventory", "sequence")
    exclude_facility_group: str | None = None
    ignore_order_limit: bool = False
    distance_unit: str = KM  # how distances are shown and max_distance was written; the limit is kept in km
    action: str = NEXT_RULE
    queue: str | None = None  # with action move_to_queue: the parking facility unplaced lines go to
    auto_cancel_days: int | None = None  # unplaced lines: the order gets an auto-cancel date this many days ahead
    remove_auto_cancel: bool = False  # unplaced lines: the order's auto-cancel date is removed (it waits, held)


DEFAULT_RULES: tuple[Rule, ...] = (Rule("default: nearest facility", sort=("distance",)),)


@dataclass(frozen=True)
class Facility:
    facility_id: str
    facility_group: str | None
    latitude: float | None
    longitude: float | None
    allow_brokering: bool
    max_orders_per_day: int | None  # None: no limit
    orders_today: int  # orders already allocated to it this (facility-local) day, not counting this one
    sequence: int | None  # custom sort sequence, lower first, None last


@dataclass(frozen=True)
class LineToPlace:
    item_seq: int
    gtin: str  # the stock key: the adapter maps stock held under the line's product id to it
    quantity: int


@dataclass(frozen=True)
class ShipGroup:
    order_id: int
    lines: tuple[LineToPlace, ...]
    may_split: bool
    excluded_facility_id: str | None  # the originating store of a send sale
    latitude: float | None  # ship-to location, None when unknown
    longitude: float | None
    # facilities that rejected a line: item_seq -> {facility_id: reason}; never offered that line again
    rejected: Mapping[int, Mapping[str, str]] = field(default_factory=dict)


# Available-to-promise per (facility_id, gtin) before safety stock; a missing key is 0.
Stock = dict[tuple[str, str], int]


@dataclass(frozen=True)
class Allocation:
    item_seq: int
    facility_id: str
    quantity: int
    rule: str
    note: str | None


@dataclass(frozen=True)
class Unfillable:
    item_seq: int
    reason: str
    queue: str = UNFILLABLE_PARKING  # where the line goes: a rule's action may name another queue


@dataclass(frozen=True)
class RuleTrace:
    """What one rule made of one line: each facility it looked at and why it was (not) chosen."""

    rule: str
    facilities: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BrokeringPlan:
    allocations: tuple[Allocation, ...]
    unfillable: tuple[Unfillable, ...]
    trace: Mapping[int, tuple[RuleTrace, ...]] = field(default_factory=dict, compare=False)
    auto_cancel_days: int | None = field(default=None, compare=False)  # set by a rule's action, if any
    remove_auto_cancel: bool = field(default=False, compare=False)  # a rule's action removes the date


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km by the haversine formula."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi, half_dlambda = (phi2 - phi1) / 2, math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    # Rounding can push h a hair above 1 for antipodal points, outside asin's domain.
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def in_unit(km: float, unit: str) -> float:
    return km / KM_PER_MILE if unit == MILES else km


@dataclass(frozen=True)
class _Candidate:
    facility: Facility
    distance: float | None  # None: the ship-to or the facility has no coordinates


class _Ledger:
    """What this plan has taken so far, so that later rules see stock and capacity net of it."""

    def __init__(self, stock: Stock, group: ShipGroup) -> None:
        self._stock = stock
        self._group = group
        self._taken: dict[tuple[str, str], int] = {}
        self.used: set[str] = set()

    def on_hand(self, facility_id: str, gtin: str) -> int:
        """ATP net of this plan, before safety stock."""
        key = (facility_id, gtin)
        return self._stock.get(key, 0) - self._taken.get(key, 0)

    def available(self, facility_id: str, gtin: str, rule: Rule) -> int:
        return self.on_hand(facility_id, gtin) - rule.safety_stock

    def can_take(self, facility_id: str, lines: Sequence[LineToPlace], rule: Rule) -> bool:
        if any(facility_id in self._group.rejected.get(line.item_seq, {}) for line in lines):
            return False
        # Two lines of one product at one facility draw on the same units, so compare the sum.
        wanted: dict[str, int] = {}
        for line in lines:
            wanted[line.gtin] = wanted.get(line.gtin, 0) + line.quantity
        return all(self.available(facility_id, gtin, rule) >= quantity for gtin, quantity in wanted.items())

    def has_capacity(self, facility: Facility, rule: Rule) -> bool:
        if facility.max_orders_per_day is None or rule.ignore_order_limit:
            return True
        # A facility already shipping part of this order does not count it as a second order.
        new_order = 0 if facility.facility_id in self.used else 1
        return facility.orders_today + new_order <= facility.max_orders_per_day

    def take(self, facility_id: str, line: LineToPlace) -> None:
        key = (facility_id, line.gtin)
        self._taken[key] = self._taken.get(key, 0) + line.quantity
        self.used.add(facility_id)


def check_rule(rule: Rule) -> None:
    """A rule the engine can run; ValueError names the rule and what is wrong."""
    unknown = [key for key in rule.sort if key not in ALL_SORT_KEYS]
    if unknown:
        raise ValueError(f"rule {rule.name!r}: unknown sort key(s) {unknown}; expected some of {list(ALL_SORT_KEYS)}")
    if rule.safety_stock < 0:
        raise ValueError(f"rule {rule.name!r}: safety_stock {rule.safety_stock} is negative")
    if rule.action not in ACTIONS:
        raise ValueError(f"rule {rule.name!r}: action {rule.action!r} is not one of {list(ACTIONS)}")
    if rule.action == MOVE_TO_QUEUE and not rule.queue:
        raise ValueError(f"rule {rule.name!r}: action move_to_queue needs a queue")
    if rule.distance_unit not in (KM, MILES):
        raise ValueError(f"rule {rule.name!r}: distance_unit {rule.distance_unit!r} is not km or mi")


def _check(group: ShipGroup, rules: Sequence[Rule]) -> None:
    for rule in rules:
        check_rule(rule)
    for line in group.lines:
        if line.quantity < 1:
            raise ValueError(f"order {group.order_id} line {line.item_seq}: quantity {line.quantity} is not positive")


def _distance(group: ShipGroup, facility: Facility) -> float | None:
    if group.latitude is None or group.longitude is None or facility.latitude is None or facility.longitude is None:
        return None
    return distance_km(group.latitude, group.longitude, facility.latitude, facility.longitude)


def _show_km(km: float, unit: str) -> str:
    return f"{in_unit(km, unit):.1f} {unit}"


def _filtered_out(group: ShipGroup, facility: Facility, rule: Rule, ledger: _Ledger) -> tuple[str | None, float | None]:
    """Why the rule does not consider the facility at all (None: it does), and its distance."""
    if facility.facility_id == group.excluded_facility_id:
        return "excluded: the selling store", None
    if not facility.allow_brokering:
        return "does not allow brokering", None
    if rule.facility_group is not None and facility.facility_group != rule.facility_group:
        return f"group: not in {rule.facility_group}", None
    if rule.exclude_facility_group is not None and facility.facility_group == rule.exclude_facility_group:
        return f"group: in excluded group {rule.exclude_facility_group}", None
    distance = _distance(group, facility)
    # An unknown distance cannot be shown to be within the limit, so it does not match.
    if rule.max_distance_km is not None:
        limit = _show_km(rule.max_distance_km, rule.distance_unit)
        if distance is None:
            return f"distance: unknown, the rule's limit is {limit}", None
        if distance > rule.max_distance_km:
            return f"distance: {_show_km(distance, rule.distance_unit)}, beyond {limit}", distance
    if not ledger.has_capacity(facility, rule):
        return f"capacity: {facility.orders_today} of {facility.max_orders_per_day} orders today", distance
    return None, distance


def _sorted(
    candidates: list[_Candidate], lines: Sequence[LineToPlace], rule: Rule, ledger: _Ledger
) -> list[_Candidate]:
    gtins = sorted({line.gtin for line in lines})

    def key(candidate: _Candidate) -> tuple[tuple[float, ...], str]:
        facility = candidate.facility
        parts: list[float] = []
        for name in rule.sort:
            if name == "distance":
                parts += [candidate.distance is None, candidate.distance or 0.0]
            elif name == "inventory":
                # Units beyond safety stock only; a shortfall of one product does not offset another's surplus.
                parts.append(-sum(max(0, ledger.available(facility.facility_id, gtin, rule)) for gtin in gtins))
            elif name == "sequence":
                parts += [facility.sequence is None, facility.sequence or 0]
            elif name == "capacity":
                limit = facility.max_orders_per_day
                parts.append(-math.inf if limit is None else -(limit - facility.orders_today))
            else:
                raise ValueError(f"rule {rule.name!r}: unknown sort key {name!r}")
        return tuple(parts), facility.facility_id

    return sorted(candidates, key=key)


def _note(group: ShipGroup, candidate: _Candidate, rule: Rule) -> str:
    if group.latitude is None or group.longitude is None:
        return "distance unknown: ship-to location unknown"
    if candidate.distance is None:
        return f"distance unknown: facility {candidate.facility.facility_id} has no coordinates"
    return _show_km(candidate.distance, rule.distance_unit)


def _reason(line: LineToPlace, held_back: bool, tried: str) -> str:
    if held_back:
        return (
            f"{line.quantity} of {line.gtin} was available only apart from the rest of the ship group,"
            f" and no rule could split it off (rules tried: {tried})"
        )
    return f"no facility has {line.quantity} of {line.gtin} available under any rule (rules tried: {tried})"


def _stock_verdict(
    line: LineToPlace, facility_id: str, rule: Rule, ledger: _Ledger, rejected: str | None
) -> str | None:
    """Why this facility cannot ship this line on its own under the rule (None: it can)."""
    if rejected is not None:
        return f"excluded: rejected by the store ({rejected})"
    have = ledger.on_hand(facility_id, line.gtin)
    if have < line.quantity:
        return f"short by {line.quantity - max(have, 0)}"
    if have - rule.safety_stock < line.quantity:
        return f"safety stock: {have} available, {rule.safety_stock} kept back"
    return None


def _fewest(
    candidates: list[_Candidate], lines: list[LineToPlace], rule: Rule, ledger: _Ledger
) -> list[tuple[_Candidate, list[LineToPlace]]]:
    """Split lines over as few facilities as it takes (greedy set cover: each step the facility that can ship the
    most remaining lines together, ties to the rule's sort), then check whether two facilities would do."""
    remaining = list(lines)
    chosen: list[tuple[_Candidate, list[LineToPlace]]] = []

    def takes(candidate: _Candidate, among: list[LineToPlace]) -> list[LineToPlace]:
        fid = candidate.facility.facility_id
        got: list[LineToPlace] = []
        for line in among:
            if ledger.can_take(fid, [*got, line], rule):
                got.append(line)
        return got

    while remaining:
        best: tuple[_Candidate, list[LineToPlace]] | None = None
        for candidate in candidates:
            if any(candidate is c for c, _ in chosen):
                continue
            got = takes(candidate, remaining)
            if got and (best is None or len(got) > len(best[1])):
                best = (candidate, got)
        if best is None:
            break
        chosen.append(best)
        remaining = [line for line in remaining if line not in best[1]]
    if len(chosen) > 2:
        placeable = [line for _, got in chosen for line in got]
        for i, first in enumerate(candidates):
            a = takes(first, placeable)
            rest = [line for line in placeable if line not in a]
            for second in candidates[i + 1 :]:
                b = takes(second, rest)
                if len(b) == len(rest):
                    return [(first, a), (second, b)] if b else [(first, a)]
    return chosen


def broker(
    group: ShipGroup, facilities: Sequence[Facility], stock: Stock, rules: Sequence[Rule] = DEFAULT_RULES
) -> BrokeringPlan:
    """Allocate a ship group's lines to facilities, trying the rules in order; what none can place is unfillable
    (or goes to the queue a rule's action names)."""
    _check(group, rules)
    remaining = sorted(group.lines, key=lambda line: line.item_seq)
    ledger = _Ledger(stock, group)
    allocations: list[Allocation] = []
    trace: dict[int, list[RuleTrace]] = {line.item_seq: [] for line in remaining}
    # Lines some rule could have shipped on their own, had it been allowed to split: their reason says so.
    held_back: set[int] = set()
    auto_cancel_days: int | None = None
    remove_auto_cancel = False
    queued: list[Unfillable] = []
    tried_rules: list[str] = []

    for rule in rules:
        if not remaining:
            break
        tried_rules.append(rule.name)
        verdicts: dict[str, str] = {}
        candidates: list[_Candidate] = []
        for facility in facilities:
            why, distance = _filtered_out(group, facility, rule, ledger)
            if why is None:
                candidates.append(_Candidate(facility, distance))
            else:
                verdicts[facility.facility_id] = why
        candidates = _sorted(candidates, remaining, rule, ledger)
        placed: dict[int, tuple[_Candidate, str]] = {}
        whole = next((c for c in candidates if ledger.can_take(c.facility.facility_id, remaining, rule)), None)
        if whole is not None:
            for line in remaining:
                placed[line.item_seq] = (whole, "")
        elif group.may_split and rule.allow_split:
            # Capacity needs no second look here: using a facility only frees it from counting this order again.
            for candidate, lines in _fewest(candidates, remaining, rule, ledger):
                for line in lines:
                    placed[line.item_seq] = (candidate, "")
        else:
            held_back |= {
                line.item_seq
                for line in remaining
                if any(ledger.can_take(c.facility.facility_id, [line], rule) for c in candidates)
            }
        # the trace, before the plan takes the stock, so that each verdict is what the rule saw
        for line in remaining:
            rejected = group.rejected.get(line.item_seq, {})
            home = placed.get(line.item_seq)
            rows: list[tuple[str, str]] = []
            for facility in facilities:
                fid = facility.facility_id
                if fid in verdicts:
                    why = verdicts[fid]
                    if fid in rejected and why != "excluded: the selling store":
                        why = f"excluded: rejected by the store ({rejected[fid]})"
                    rows.append((fid, why))
                    continue
                if home is not None and home[0].facility.facility_id == fid:
                    rows.append((fid, CHOSEN))
                    continue
                why_not = _stock_verdict(line, fid, rule, ledger, rejected.get(fid))
                if why_not is None:
                    if home is not None:
                        why_not = f"could ship it; {home[0].facility.facility_id} came first"
                    elif group.may_split and rule.allow_split:
                        why_not = "could ship it, but not with the other lines"
                    else:
                        why_not = "could ship this line but not the whole ship group, and the rule does not split"
                rows.append((fid, why_not))
            trace[line.item_seq].append(RuleTrace(rule.name, tuple(rows)))
        for line in remaining:
            if line.item_seq in placed:
                candidate = placed[line.item_seq][0]
                ledger.take(candidate.facility.facility_id, line)
                allocations.append(
                    Allocation(
                        line.item_seq,
                        candidate.facility.facility_id,
                        line.quantity,
                        rule.name,
                        _note(group, candidate, rule),
                    )
                )
        remaining = [line for line in remaining if line.item_seq not in placed]
        if remaining and rule.auto_cancel_days is not None and auto_cancel_days is None and not remove_auto_cancel:
            auto_cancel_days = rule.auto_cancel_days
        if remaining and rule.remove_auto_cancel:
            remove_auto_cancel, auto_cancel_days = True, None
        if remaining and rule.action == MOVE_TO_QUEUE:
            assert rule.queue is not None
            tried = ", ".join(tried_rules)
            queued = [
                Unfillable(
                    line.item_seq,
                    f"{_reason(line, line.item_seq in held_back, tried)}; rule {rule.name!r} moves it to {rule.queue}",
                    rule.queue,
                )
                for line in remaining
            ]
            remaining = []

    tried = ", ".join(rule.name for rule in rules) or "none"
    unfillable = tuple(queued) + tuple(
        Unfillable(line.item_seq, _reason(line, line.item_seq in held_back, tried)) for line in remaining
    )
    return BrokeringPlan(
        tuple(sorted(allocations, key=lambda a: a.item_seq)),
        tuple(sorted(unfillable, key=lambda u: u.item_seq)),
        {seq: tuple(rows) for seq, rows in trace.items()},
        auto_cancel_days,
        remove_auto_cancel,
    )
