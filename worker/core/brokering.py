"""Brokering: which facility ships each line of a ship group, under ordered inventory rules (DOMAIN.md, "Brokering").

Pure: the caller loads facilities, today's order counts and available-to-promise stock, then records
and reserves what the plan allocates. Lines are allocated whole; what no rule can place is reported
as unfillable with a reason, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

BROKERING_QUEUE = "_NA_"
UNFILLABLE_PARKING = "UNFILLABLE_PARKING"
SORT_KEYS = ("distance", "inventory", "sequence")
_EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius


@dataclass(frozen=True)
class Rule:
    """One inventory rule: which facilities may ship, and in which order they are preferred."""

    name: str
    facility_group: str | None = None
    max_distance_km: float | None = None
    safety_stock: int = 0
    allow_split: bool = False
    sort: tuple[str, ...] = ("distance", "inventory", "sequence")


DEFAULT_RULES: tuple[Rule, ...] = (Rule("default: nearest facility", sort=("distance",)),)


@dataclass(frozen=True)
class Facility:
    facility_id: str
    facility_group: str | None
    latitude: float | None
    longitude: float | None
    allow_brokering: bool
    max_orders_per_day: int | None  # None: no limit
    orders_today: int  # orders already allocated to it this UTC day, not counting this one
    sequence: int | None  # custom sort sequence, lower first, None last


@dataclass(frozen=True)
class LineToPlace:
    item_seq: int
    gtin: str
    quantity: int


@dataclass(frozen=True)
class ShipGroup:
    order_id: int
    lines: tuple[LineToPlace, ...]
    may_split: bool
    excluded_facility_id: str | None  # the originating store of a send sale
    latitude: float | None  # ship-to location, None when unknown
    longitude: float | None


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


@dataclass(frozen=True)
class BrokeringPlan:
    allocations: tuple[Allocation, ...]
    unfillable: tuple[Unfillable, ...]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km by the haversine formula."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi, half_dlambda = (phi2 - phi1) / 2, math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    # Rounding can push h a hair above 1 for antipodal points, outside asin's domain.
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class _Candidate:
    facility: Facility
    distance: float | None  # None: the ship-to or the facility has no coordinates


class _Ledger:
    """What this plan has taken so far, so that later rules see stock and capacity net of it."""

    def __init__(self, stock: Stock) -> None:
        self._stock = stock
        self._taken: dict[tuple[str, str], int] = {}
        self._used: set[str] = set()

    def available(self, facility_id: str, gtin: str, rule: Rule) -> int:
        key = (facility_id, gtin)
        return self._stock.get(key, 0) - rule.safety_stock - self._taken.get(key, 0)

    def can_take(self, facility_id: str, lines: Sequence[LineToPlace], rule: Rule) -> bool:
        # Two lines of one product at one facility draw on the same units, so compare the sum.
        wanted: dict[str, int] = {}
        for line in lines:
            wanted[line.gtin] = wanted.get(line.gtin, 0) + line.quantity
        return all(self.available(facility_id, gtin, rule) >= quantity for gtin, quantity in wanted.items())

    def has_capacity(self, facility: Facility) -> bool:
        if facility.max_orders_per_day is None:
            return True
        # A facility already shipping part of this order does not count it as a second order.
        new_order = 0 if facility.facility_id in self._used else 1
        return facility.orders_today + new_order <= facility.max_orders_per_day

    def take(self, facility_id: str, line: LineToPlace) -> None:
        key = (facility_id, line.gtin)
        self._taken[key] = self._taken.get(key, 0) + line.quantity
        self._used.add(facility_id)


def _check(group: ShipGroup, rules: Sequence[Rule]) -> None:
    for rule in rules:
        unknown = [key for key in rule.sort if key not in SORT_KEYS]
        if unknown:
            raise ValueError(f"rule {rule.name!r}: unknown sort key(s) {unknown}; expected some of {list(SORT_KEYS)}")
        if rule.safety_stock < 0:
            raise ValueError(f"rule {rule.name!r}: safety_stock {rule.safety_stock} is negative")
    for line in group.lines:
        if line.quantity < 1:
            raise ValueError(f"order {group.order_id} line {line.item_seq}: quantity {line.quantity} is not positive")


def _distance(group: ShipGroup, facility: Facility) -> float | None:
    if group.latitude is None or group.longitude is None or facility.latitude is None or facility.longitude is None:
        return None
    return distance_km(group.latitude, group.longitude, facility.latitude, facility.longitude)


def _candidates(group: ShipGroup, facilities: Sequence[Facility], rule: Rule, ledger: _Ledger) -> list[_Candidate]:
    found: list[_Candidate] = []
    for facility in facilities:
        if not facility.allow_brokering or facility.facility_id == group.excluded_facility_id:
            continue
        if rule.facility_group is not None and facility.facility_group != rule.facility_group:
            continue
        distance = _distance(group, facility)
        # An unknown distance cannot be shown to be within the limit, so it does not match.
        if rule.max_distance_km is not None and (distance is None or distance > rule.max_distance_km):
            continue
        if not ledger.has_capacity(facility):
            continue
        found.append(_Candidate(facility, distance))
    return found


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
            else:
                raise ValueError(f"rule {rule.name!r}: unknown sort key {name!r}")
        return tuple(parts), facility.facility_id

    return sorted(candidates, key=key)


def _note(group: ShipGroup, candidate: _Candidate) -> str:
    if group.latitude is None or group.longitude is None:
        return "distance unknown: ship-to location unknown"
    if candidate.distance is None:
        return f"distance unknown: facility {candidate.facility.facility_id} has no coordinates"
    return f"{candidate.distance:.1f} km"


def _reason(line: LineToPlace, held_back: bool, tried: str) -> str:
    if held_back:
        return (
            f"{line.quantity} of {line.gtin} was available only apart from the rest of the ship group,"
            f" and no rule could split it off (rules tried: {tried})"
        )
    return f"no facility has {line.quantity} of {line.gtin} available under any rule (rules tried: {tried})"


def broker(
    group: ShipGroup, facilities: Sequence[Facility], stock: Stock, rules: Sequence[Rule] = DEFAULT_RULES
) -> BrokeringPlan:
    """Allocate a ship group's lines to facilities, trying the rules in order; what none can place is unfillable."""
    _check(group, rules)
    remaining = sorted(group.lines, key=lambda line: line.item_seq)
    ledger = _Ledger(stock)
    allocations: list[Allocation] = []
    # Lines some rule could have shipped on their own, had it been allowed to split: their reason says so.
    held_back: set[int] = set()

    def allocate(candidate: _Candidate, line: LineToPlace, rule: Rule) -> None:
        facility_id = candidate.facility.facility_id
        ledger.take(facility_id, line)
        allocations.append(Allocation(line.item_seq, facility_id, line.quantity, rule.name, _note(group, candidate)))

    for rule in rules:
        if not remaining:
            break
        candidates = _sorted(_candidates(group, facilities, rule, ledger), remaining, rule, ledger)
        whole = next((c for c in candidates if ledger.can_take(c.facility.facility_id, remaining, rule)), None)
        if whole is not None:
            for line in remaining:
                allocate(whole, line, rule)
            remaining = []
        elif group.may_split and rule.allow_split:
            unplaced: list[LineToPlace] = []
            # Capacity needs no second look here: using a facility only frees it from counting this order again.
            for line in remaining:
                home = next((c for c in candidates if ledger.can_take(c.facility.facility_id, [line], rule)), None)
                if home is None:
                    unplaced.append(line)
                else:
                    allocate(home, line, rule)
            remaining = unplaced
        else:
            held_back |= {
                line.item_seq
                for line in remaining
                if any(ledger.can_take(c.facility.facility_id, [line], rule) for c in candidates)
            }

    tried = ", ".join(rule.name for rule in rules) or "none"
    unfillable = tuple(
        Unfillable(line.item_seq, _reason(line, line.item_seq in held_back, tried)) for line in remaining
    )
    return BrokeringPlan(tuple(sorted(allocations, key=lambda a: a.item_seq)), unfillable)
