"""Runs -> routings -> inventory rules (issue 12): order filters and sorts, rule actions, the batch's shared stock,
the explained trace, stock by either identifier, the brokering table of the retailers file and its beat entry."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from tests.unit.helpers import retailer
from worker.app.schedule import build_beat_schedule
from worker.core.brokering import (
    BACKORDER_PARKING,
    MOVE_TO_QUEUE,
    UNFILLABLE_PARKING,
    Facility,
    LineToPlace,
    Rule,
    ShipGroup,
    broker,
)
from worker.core.brokering_config import parse_brokering
from worker.core.retailers import ConfigError
from worker.core.routings import (
    OrderToBroker,
    Routing,
    decision_lines,
    dry_run_stats,
    match_stock,
    plan_batch,
    why_not,
)

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
NEW_YORK = (40.7128, -74.0060)
NEWARK = (40.7357, -74.1724)
PHILADELPHIA = (39.9526, -75.1652)
LOS_ANGELES = (34.0522, -118.2437)


def fac(fid, at=NEWARK, group=None, max_orders=None, today=0, allow=True):
    return Facility(fid, group, at[0], at[1], allow, max_orders, today, None)


def group(order_id=1, *lines, may_split=False, store="254", rejected=None):
    lines = lines or (LineToPlace(1, "G1", 1),)
    return ShipGroup(order_id, tuple(lines), may_split, store, NEW_YORK[0], NEW_YORK[1], rejected or {})


def order(order_id=1, method="STANDARD", priority="2", queue="_NA_", when=None, ship_by=None, categories=(), **kw):
    return OrderToBroker(
        kw.pop("ship_group", None) or group(order_id),
        f"ORD{order_id}",
        queue,
        method,
        priority,
        kw.pop("channel", "POS_SALES_CHANNEL"),
        kw.pop("origin", "254"),
        when or NOW - dt.timedelta(hours=order_id),
        ship_by,
        frozenset(categories),
    )


STORES = [fac("301", NEWARK, "STORES"), fac("302", PHILADELPHIA, "STORES")]
DC = fac("DC1", LOS_ANGELES, "DC")
NEXT_DAY = Routing(
    "next day from stores",
    (Rule("stores within 50 km", facility_group="STORES", max_distance_km=50),),
    include={"shipping_methods": frozenset({"NEXT_DAY"})},
)
STANDARD = Routing("standard from the DC", (Rule("dc", facility_group="DC"),))


# Routings and their filters


def test_a_next_day_order_goes_to_a_store_within_distance_and_a_standard_one_to_the_dc():
    stock = {("301", "G1"): 5, ("302", "G1"): 5, ("DC1", "G1"): 5}
    out = plan_batch([order(1, "NEXT_DAY"), order(2, "STANDARD")], [*STORES, DC], stock, [NEXT_DAY, STANDARD], NOW)
    got = {o.order.external_id: (o.routing, o.plan.allocations[0].facility_id) for o in out}
    assert got == {"ORD1": ("next day from stores", "301"), "ORD2": ("standard from the DC", "DC1")}


def test_an_order_no_routing_matches_stays_queued_and_says_why():
    out = plan_batch(
        [order(1, "NEXT_DAY")],
        [DC],
        {("DC1", "G1"): 5},
        [STANDARD.__class__("only standard", include={"shipping_methods": frozenset({"STANDARD"})})],
        NOW,
    )
    (o,) = out
    assert o.plan is None and o.routing is None
    assert o.why_unrouted == "no routing matches: only standard: shipping method NEXT_DAY not in ['STANDARD']"
    (line,) = decision_lines(o)
    assert line["result"] == "not routed" and line["queue"] == "_NA_"


@pytest.mark.parametrize(
    ("routing", "attrs", "expected"),
    [
        (
            Routing("r", exclude={"shipping_methods": frozenset({"NEXT_DAY"})}),
            {"method": "NEXT_DAY"},
            "shipping method NEXT_DAY is excluded (['NEXT_DAY'])",
        ),
        (Routing("r", include={"priorities": frozenset({"1"})}), {"priority": "2"}, "priority 2 not in ['1']"),
        (Routing("r", include={"channels": frozenset({"WEB"})}), {}, "sales channel POS_SALES_CHANNEL not in ['WEB']"),
        (
            Routing("r", include={"origin_facility_groups": frozenset({"OUTLETS"})}),
            {},
            "origin facility group STORES not in ['OUTLETS']",
        ),
        (
            Routing("r", exclude={"categories": frozenset({"FURNITURE"})}),
            {"categories": ("FURNITURE",)},
            "product category FURNITURE is excluded (['FURNITURE'])",
        ),
        (
            Routing("r", include={"queues": frozenset({BACKORDER_PARKING})}),
            {},
            "queue _NA_ not in ['BACKORDER_PARKING']",
        ),
        (
            Routing("r", ship_by_within_days=2),
            {"ship_by": NOW + dt.timedelta(days=5)},
            "ship-by date 2026-12-02T12:00+00:00 not within 2 days",
        ),
        (
            Routing("r", exclude_ship_by_within_days=2),
            {"ship_by": NOW + dt.timedelta(days=1)},
            "ship-by date 2026-11-28T12:00+00:00 is within 2 days (excluded)",
        ),
        (Routing("r", ship_by_within_days=2), {"ship_by": NOW + dt.timedelta(days=1)}, None),
        (Routing("r"), {"queue": UNFILLABLE_PARKING}, None),
    ],
)
def test_each_filter_has_an_include_and_an_exclude_form(routing, attrs, expected):
    assert why_not(routing, order(1, **attrs), "STORES", NOW) == expected


def test_parked_orders_come_first_then_the_routings_sort():
    stock = {("DC1", "G1"): 2}  # two units for three orders: who gets them is the sort's
    orders = [order(1, priority="3"), order(2, priority="1"), order(3, priority="2", queue=UNFILLABLE_PARKING)]
    by_priority = Routing("by priority", (Rule("dc"),), sort=("priority",))
    out = plan_batch(orders, [DC], stock, [by_priority], NOW)
    assert [o.order.external_id for o in out] == ["ORD3", "ORD2", "ORD1"]
    assert [bool(o.plan.allocations) for o in out] == [True, True, False]
    by_date = Routing("by date", (Rule("dc"),), sort=("order_date",))
    out = plan_batch(orders, [DC], stock, [by_date], NOW)
    assert [o.order.external_id for o in out] == ["ORD3", "ORD2", "ORD1"]  # order 2 is older than order 1


def test_orders_of_a_batch_see_the_stock_and_capacity_the_ones_before_left():
    limited = fac("301", NEWARK, max_orders=1)
    out = plan_batch(
        [order(1), order(2), order(3)], [limited, DC], {("301", "G1"): 5, ("DC1", "G1"): 1}, [Routing("all")], NOW
    )
    assert [o.plan.allocations[0].facility_id if o.plan.allocations else None for o in out] == ["301", "DC1", None]
    assert out[2].plan.unfillable[0].queue == UNFILLABLE_PARKING


# Inventory rules: new filters and actions


def test_an_excluded_facility_group_is_never_chosen_and_the_trace_says_so():
    plan = broker(
        group(),
        [fac("301", group="OUTLETS"), DC],
        {("301", "G1"): 5, ("DC1", "G1"): 5},
        [Rule("no outlets", exclude_facility_group="OUTLETS")],
    )
    assert plan.allocations[0].facility_id == "DC1"
    assert dict(plan.trace[1][0].facilities)["301"] == "group: in excluded group OUTLETS"


def test_ignore_order_limit_lets_a_full_facility_take_the_order():
    full = [fac("301", max_orders=3, today=3)]
    assert broker(group(), full, {("301", "G1"): 5}, [Rule("limited")]).unfillable
    assert broker(group(), full, {("301", "G1"): 5}, [Rule("anyway", ignore_order_limit=True)]).allocations


def test_distances_in_miles():
    rule = Rule("10 miles", max_distance_km=10 * 1.609344, distance_unit="mi")
    plan = broker(group(), [fac("EWR", NEWARK), fac("PHL", PHILADELPHIA)], {("EWR", "G1"): 1, ("PHL", "G1"): 1}, [rule])
    assert plan.allocations[0].note == "8.9 mi"
    assert dict(plan.trace[1][0].facilities)["PHL"] == "distance: 80.5 mi, beyond 10.0 mi"


def test_move_to_queue_sends_what_the_rule_cannot_place_to_the_named_queue_and_stops():
    rules = [Rule("stores", facility_group="STORES", action=MOVE_TO_QUEUE, queue=BACKORDER_PARKING), Rule("dc")]
    plan = broker(group(), [*STORES, DC], {("DC1", "G1"): 5}, rules)
    assert plan.allocations == ()
    (u,) = plan.unfillable
    assert u.queue == BACKORDER_PARKING and "rule 'stores' moves it to BACKORDER_PARKING" in u.reason


def test_auto_cancel_days_set_an_auto_cancel_date_on_an_order_the_rules_cannot_place():
    routing = Routing("r", (Rule("dc", auto_cancel_days=3),))
    (o,) = plan_batch([order(1)], [DC], {}, [routing], NOW)
    assert o.auto_cancel_at == NOW + dt.timedelta(days=3)
    (o,) = plan_batch([order(1)], [DC], {("DC1", "G1"): 1}, [routing], NOW)
    assert o.auto_cancel_at is None


def test_a_rule_may_remove_the_auto_cancel_date_of_what_it_cannot_place():
    routing = Routing(
        "hold", (Rule("dc", auto_cancel_days=3), Rule("hold", facility_group="DC", remove_auto_cancel=True))
    )
    (o,) = plan_batch([order(1)], [DC], {}, [routing], NOW)
    assert o.auto_cancel_at is None and o.remove_auto_cancel


# The explained decision


def test_the_trace_names_the_reason_for_every_facility_not_chosen():
    facilities = [
        fac("254"),  # the selling store
        fac("CLOSED", allow=False),
        fac("OTHER", group="OUTLETS"),
        fac("FAR", LOS_ANGELES),
        fac("FULL", max_orders=2, today=2),
        fac("SHORT"),
        fac("SAFE"),
        fac("REJ"),
        fac("WIN", NEWARK),
        fac("LATER", PHILADELPHIA),
    ]
    stock = {
        ("SHORT", "G1"): 1,
        ("SAFE", "G1"): 3,
        ("REJ", "G1"): 9,
        ("WIN", "G1"): 9,
        ("LATER", "G1"): 9,
        ("254", "G1"): 9,
        ("FULL", "G1"): 9,
    }
    rule = Rule("near", max_distance_km=500, safety_stock=2, sort=("distance",))
    g = group(1, LineToPlace(1, "G1", 3), rejected={1: {"REJ": "damaged"}})
    plan = broker(
        g,
        facilities,
        stock,
        [
            Rule(
                "not outlets", exclude_facility_group="OUTLETS", max_distance_km=500, safety_stock=2, sort=("distance",)
            )
        ],
    )
    verdicts = dict(plan.trace[1][0].facilities)
    assert verdicts == {
        "254": "excluded: the selling store",
        "CLOSED": "does not allow brokering",
        "OTHER": "group: in excluded group OUTLETS",
        "FAR": verdicts["FAR"],
        "FULL": "capacity: 2 of 2 orders today",
        "SHORT": "short by 2",
        "SAFE": "safety stock: 3 available, 2 kept back",
        "REJ": "excluded: rejected by the store (damaged)",
        "WIN": "chosen",
        "LATER": "could ship it; WIN came first",
    }
    assert verdicts["FAR"].startswith("distance: ") and verdicts["FAR"].endswith("beyond 500.0 km")
    assert rule.name == "near"
    (line,) = decision_lines(plan_batch([order(1, ship_group=g)], facilities, stock, [Routing("r", (rule,))], NOW)[0])
    assert line["result"] == "allocated" and line["facility"] == "WIN"
    assert line["rules"][0]["facilities"]["SHORT"] == "short by 2"


def test_a_rejected_line_never_goes_back_to_the_store_that_rejected_it():
    g = group(1, LineToPlace(1, "G1", 1), rejected={1: {"301": "no stock on the shelf"}})
    plan = broker(g, [fac("301"), DC], {("301", "G1"): 5, ("DC1", "G1"): 5}, [Rule("any", sort=("distance",))])
    assert plan.allocations[0].facility_id == "DC1"


# Stock by either identifier


def test_stock_matches_a_line_by_gtin_or_else_by_product_id():
    rows = [("301", "SKU-1", None, 4), ("302", "SKU-1", "G1", 2), ("302", "OTHER", None, 9), ("303", "X", "G2", 1)]
    stock, row_of = match_stock(rows, [("G1", "SKU-1"), ("G2", None)])
    assert stock == {("301", "G1"): 4, ("302", "G1"): 2, ("303", "G2"): 1}
    assert row_of == {("301", "G1"): "SKU-1", ("302", "G1"): "SKU-1", ("303", "G2"): "X"}


# Dry-run statistics


def test_dry_run_statistics():
    two_lines = group(1, LineToPlace(1, "G1", 1), LineToPlace(2, "G2", 1), may_split=True)
    out = plan_batch(
        [order(1, ship_group=two_lines), order(2)],
        [fac("A", NEWARK), fac("B", NEWARK)],
        {("A", "G1"): 2, ("B", "G2"): 1},
        [Routing("r", (Rule("split", allow_split=True),))],
        NOW,
    )
    stats = dry_run_stats(out, [fac("A", NEWARK), fac("B", NEWARK)])
    assert (stats.orders, stats.lines, stats.filled_lines, stats.split_orders) == (2, 3, 3, 1)
    assert stats.fill_rate == 1.0 and stats.split_rate == 0.5
    assert stats.average_distance_km == pytest.approx(14.3, abs=0.1)


# The retailers file


def test_the_older_flat_rules_list_is_one_routing_that_matches_every_order():
    r = retailer(brokering={"rules": [{"name": "stores", "facility_group": "STORES"}, {"name": "anywhere"}]})
    (routing,) = r.brokering.routings
    assert [rule.name for rule in routing.rules] == ["stores", "anywhere"] == [x.name for x in r.brokering_rules]
    assert why_not(routing, order(1, "ANYTHING", queue=UNFILLABLE_PARKING), None, NOW) is None


def test_routings_with_filters_rules_and_a_schedule_load():
    r = retailer(
        brokering={
            "every_seconds": 300,
            "routings": [
                {
                    "name": "next day",
                    "shipping_methods": ["NEXT_DAY"],
                    "sort": ["ship_by", "order_date"],
                    "rules": [
                        {
                            "name": "stores",
                            "facility_group": "STORES",
                            "max_distance": 30,
                            "distance_unit": "mi",
                            "action": "move_to_queue",
                            "queue": "BACKORDER_PARKING",
                        },
                    ],
                },
                {"name": "the rest", "rules": [{"name": "dc", "auto_cancel_days": 5}]},
            ],
        }
    )
    first, rest = r.brokering.routings
    assert first.include == {"shipping_methods": frozenset({"NEXT_DAY"})} and first.sort == ("ship_by", "order_date")
    assert first.rules[0].max_distance_km == pytest.approx(48.28, abs=0.01) and first.rules[0].distance_unit == "mi"
    assert rest.rules[0].auto_cancel_days == 5
    assert r.brokering.every_seconds == 300
    entries = build_beat_schedule({"acme": r})
    assert entries["broker:acme"]["task"] == "tlogsync.run_brokering"
    assert entries["broker:acme"]["kwargs"] == {"scheduled": True}
    assert entries["broker:acme"]["schedule"].run_every.total_seconds() == 300
    # without a schedule a retailer's parked orders are still tried again: a run every 15 minutes by default
    default = build_beat_schedule({"acme": retailer()})["broker:acme"]["schedule"]
    assert default.run_every.total_seconds() == 900
    off = replace(r, brokering=parse_brokering({"every_seconds": 0}))
    assert off.brokering.every_seconds is None and "broker:acme" not in build_beat_schedule({"acme": off})


@pytest.mark.parametrize(
    ("brokering", "message"),
    [
        (
            {"routings": [{"name": "nd", "rules": [{"name": "stores", "max_distance": -1}]}]},
            "retailer 'acme': brokering routing 'nd': rule 'stores': max_distance: Must be greater than or equal to 0",
        ),
        (
            {"routings": [{"name": "nd", "rules": [{"name": "stores", "action": "move_to_queue"}]}]},
            "retailer 'acme': brokering routing 'nd': rule 'stores': queue: required when action is move_to_queue",
        ),
        (
            {"routings": [{"name": "nd", "rules": [{"name": "stores", "sort": ["nearest"]}]}]},
            "retailer 'acme': brokering routing 'nd': rule 'stores': sort[0]: Must be one of",
        ),
        (
            {"routings": [{"name": "nd", "shipping_method": ["NEXT_DAY"]}]},
            "retailer 'acme': brokering routing 'nd': shipping_method: Unknown field.",
        ),
        (
            {"routings": [{"name": "nd", "sort": ["price"]}]},
            "retailer 'acme': brokering routing 'nd': sort[0]: Must be one of",
        ),
        ({"routings": [{"name": "a"}, {"name": "a"}]}, "retailer 'acme': brokering routing 'a': name: two routings"),
        ({"rules": [{"name": "x", "colour": 1}]}, "retailer 'acme': brokering rule 'x': colour: Unknown field."),
        ({"schedule": "often"}, "retailer 'acme': brokering: schedule: must be a crontab"),
        ({"rules": [], "routings": []}, "retailer 'acme': brokering: rules: set routings, or the older flat rules"),
    ],
)
def test_a_bad_routing_or_rule_stops_start_up_naming_retailer_routing_rule_and_key(brokering, message):
    with pytest.raises(
        ConfigError,
        match="^retailers file: "
        + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        retailer(brokering=brokering)


# Non-merchandise


def test_a_gift_card_sent_from_the_till_is_issued_there_and_never_waits_for_brokering():
    from tests.unit.helpers import sample, to_bytes
    from worker.core.oms import to_order
    from worker.core.routing import BROKERING, followups_for
    from worker.core.tlog import parse_sale

    doc = sample("sendSaleOrdersSample.json")
    for line in doc["orderProductList"]:
        line["productClass"] = "Gift Card"
    order = to_order(parse_sale(to_bytes(doc)), retailer())
    assert {(line.facility_id, line.status_id) for line in order.lines} == {(doc["storeId"], "ITEM_COMPLETED")}
    assert BROKERING not in followups_for(order, retailer())
    assert order.status_id == "ORDER_COMPLETED"
    items = order.payload[0]["dataList"][0]["data"]["order"]["shipGroup"][0]["items"]
    assert {item["productClass"] for item in items} == {"Gift Card"}
    merch = to_order(parse_sale(to_bytes(sample("sendSaleOrdersSample.json"))), retailer())
    assert BROKERING in followups_for(merch, retailer())
    assert all("productClass" not in item for group in merch.payload[0]["dataList"][0]["data"]["order"]["shipGroup"]
               for item in group["items"])  # fmt: skip
