"""The `[retailers.<id>.brokering]` table: the run's schedule, the routings and their inventory rules.

Validated when a process loads the retailers file; an error names the retailer, the routing, the rule and the key.
The older flat `[[retailers.<id>.brokering.rules]]` list is one routing that matches every order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from worker.core.brokering import ACTIONS, ALL_SORT_KEYS, KM, KM_PER_MILE, MILES, MOVE_TO_QUEUE, NEXT_RULE, Rule
from worker.core.crontab import crontab_fields
from worker.core.routings import DEFAULT_ROUTINGS, ORDER_SORT_KEYS, SET_FILTERS, Routing, legacy_routing
from worker.core.validation import flatten_messages

QUEUE_NAME = re.compile(r"^[A-Z0-9_]{1,60}$")


class BrokeringConfigError(ValueError):
    """The message names the routing, the rule and the key (the caller prefixes the retailer)."""


@dataclass(frozen=True)
class BrokeringConfig:
    routings: tuple[Routing, ...] = DEFAULT_ROUTINGS
    schedule: str | None = None  # crontab of the retailer's scheduled brokering run
    # or an interval; by default a run every 15 minutes, so parked orders are tried again once stock arrives
    # (every_seconds = 0: no scheduled run, only the runs after ingest and `tlogsync broker`)
    every_seconds: float | None = 900.0

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue some routing takes orders from: what a scheduled run looks at."""
        seen: list[str] = []
        for routing in self.routings:
            seen += [q for q in routing.queues if q not in seen]
        return tuple(seen)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.routings[0].rules


DEFAULT_BROKERING = BrokeringConfig()


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _cron(value: str) -> None:
    """The shape only; Celery's crontab checks the fields when the retailers file is read (worker/core/retailers.py)."""
    try:
        crontab_fields(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


_names = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=None)
_queues = fields.List(
    fields.String(validate=validate.Regexp(QUEUE_NAME, error="must be a queue (parking facility) id, e.g. _NA_")),
    load_default=None,
)


class RuleSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    facility_group = fields.String(load_default=None)
    exclude_facility_group = fields.String(load_default=None)
    max_distance_km = fields.Float(load_default=None, validate=validate.Range(min=0))
    max_distance = fields.Float(load_default=None, validate=validate.Range(min=0))
    distance_unit = fields.String(load_default=KM, validate=validate.OneOf([KM, MILES]))
    safety_stock = fields.Integer(load_default=0, validate=validate.Range(min=0))
    allow_split = fields.Boolean(load_default=False)
    sort = fields.List(
        fields.String(validate=validate.OneOf(ALL_SORT_KEYS)),
        load_default=lambda: ["distance", "inventory", "sequence"],
    )
    ignore_order_limit = fields.Boolean(load_default=False)
    action = fields.String(load_default=NEXT_RULE, validate=validate.OneOf(ACTIONS))
    queue = fields.String(load_default=None, validate=validate.Regexp(QUEUE_NAME, error="must be a queue id"))
    auto_cancel_days = fields.Integer(load_default=None, validate=validate.Range(min=1, max=3650))
    remove_auto_cancel = fields.Boolean(load_default=False)

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("max_distance") is not None and data.get("max_distance_km") is not None:
            raise ValidationError("set max_distance (with distance_unit) or max_distance_km, not both", "max_distance")
        if data.get("action") == MOVE_TO_QUEUE and not data.get("queue"):
            raise ValidationError("required when action is move_to_queue", "queue")
        if data.get("queue") and data.get("action") != MOVE_TO_QUEUE:
            raise ValidationError("only with action = 'move_to_queue'", "queue")
        if data.get("queue") in ("_NA_",):
            raise ValidationError("cannot be the brokering queue itself", "queue")
        if data.get("auto_cancel_days") is not None and data.get("remove_auto_cancel"):
            raise ValidationError("set auto_cancel_days or remove_auto_cancel, not both", "remove_auto_cancel")
        same = data.get("facility_group")
        if same is not None and same == data.get("exclude_facility_group"):
            raise ValidationError("the same group cannot be included and excluded", "exclude_facility_group")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Rule:
        limit = data.pop("max_distance")
        if limit is not None:
            data["max_distance_km"] = limit * KM_PER_MILE if data["distance_unit"] == MILES else limit
        return Rule(**{**data, "sort": tuple(data["sort"])})


class RoutingSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    shipping_methods = _names
    exclude_shipping_methods = _names
    priorities = _names
    exclude_priorities = _names
    channels = _names
    exclude_channels = _names
    origin_facility_groups = _names
    exclude_origin_facility_groups = _names
    categories = _names
    exclude_categories = _names
    queues = _queues
    exclude_queues = _queues
    ship_by_within_days = fields.Float(load_default=None, validate=validate.Range(min=0))
    exclude_ship_by_within_days = fields.Float(load_default=None, validate=validate.Range(min=0))
    sort = fields.List(fields.String(validate=validate.OneOf(ORDER_SORT_KEYS)), load_default=lambda: ["order_date"])
    rules = fields.Raw(load_default=None)  # validated one by one, so that errors name the rule

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        for name in SET_FILTERS:
            both = set(data.get(name) or ()) & set(data.get(f"exclude_{name}") or ())
            if both:
                raise ValidationError(f"{sorted(both)} both included and excluded", f"exclude_{name}")


def _interval(value: float) -> None:
    if value != 0 and value < 10:
        raise ValidationError("must be 0 (no scheduled run) or at least 10 seconds")


class BrokeringSchema(_Strict):
    schedule = fields.String(load_default=None, validate=_cron)
    every_seconds = fields.Float(load_default=None, validate=lambda v: _interval(v))
    rules = fields.Raw(load_default=None)
    routings = fields.Raw(load_default=None)

    @validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("schedule") is not None and data.get("every_seconds") is not None:
            raise ValidationError("set schedule (crontab) or every_seconds, not both", "schedule")
        if data.get("rules") is not None and data.get("routings") is not None:
            raise ValidationError("set routings, or the older flat rules list, not both", "rules")


def _rules(raw: Any, where: str) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BrokeringConfigError(f"{where}rules: must be a list of [[...rules]] tables")
    out: list[Rule] = []
    for index, table in enumerate(raw):
        name = table.get("name") if isinstance(table, dict) else None
        label = f"{where}rule {name!r}" if isinstance(name, str) and name else f"{where}rule #{index + 1}"
        try:
            rule = RuleSchema().load(table if isinstance(table, dict) else {})
        except ValidationError as exc:
            raise BrokeringConfigError(f"{label}: {flatten_messages(exc.messages)}") from None
        if any(r.name == rule.name for r in out):
            raise BrokeringConfigError(f"{label}: name: another rule of this routing has the same name")
        out.append(rule)
    return tuple(out)


def _routing(table: Any, index: int) -> Routing:
    name = table.get("name") if isinstance(table, dict) else None
    label = f"brokering routing {name!r}: " if isinstance(name, str) and name else f"brokering routing #{index + 1}: "
    try:
        data = RoutingSchema().load(table if isinstance(table, dict) else {})
    except ValidationError as exc:
        raise BrokeringConfigError(f"{label}{flatten_messages(exc.messages)}") from None
    rules = _rules(data.pop("rules"), label)
    include = {n: frozenset(data[n]) for n in SET_FILTERS if data.get(n) is not None}
    exclude = {n: frozenset(data[f"exclude_{n}"]) for n in SET_FILTERS if data.get(f"exclude_{n}")}
    return Routing(
        data["name"],
        rules or Routing(data["name"]).rules,
        include,
        exclude,
        data["ship_by_within_days"],
        data["exclude_ship_by_within_days"],
        tuple(data["sort"]),
    )


def parse_brokering(raw: Any) -> BrokeringConfig:
    """The brokering table of one retailer (None: the defaults)."""
    if raw is None:
        return DEFAULT_BROKERING
    if not isinstance(raw, dict):
        raise BrokeringConfigError("brokering: must be a table")
    try:
        data = BrokeringSchema().load(raw)
    except ValidationError as exc:
        raise BrokeringConfigError(f"brokering: {flatten_messages(exc.messages)}") from None
    if data["routings"] is not None:
        if not isinstance(data["routings"], list) or not data["routings"]:
            raise BrokeringConfigError("brokering: routings: must be a non-empty list of [[...routings]] tables")
        routings = tuple(_routing(table, i) for i, table in enumerate(data["routings"]))
        names = [r.name for r in routings]
        for name in names:
            if names.count(name) > 1:
                raise BrokeringConfigError(f"brokering routing {name!r}: name: two routings have this name")
    else:
        rules = _rules(data["rules"], "brokering ")
        routings = (legacy_routing(rules),) if rules else DEFAULT_ROUTINGS
    every = data["every_seconds"]
    if every is None and data["schedule"] is None:
        every = DEFAULT_BROKERING.every_seconds
    return BrokeringConfig(routings, data["schedule"], every or None)
