"""Issue 12 against the real PostgreSQL: routings by shipping method, parked orders taken by scheduled runs,
auto-cancel releasing reservations, parallel runs never overselling, the explained trace, the dry run, stock
matched by product id and non-merchandise lines never brokered."""

from __future__ import annotations

import secrets
import threading
import uuid

import pytest

from tests.integration.test_routing import LAKOTA, atp, load, retailer_for, send_sale, store_order
from worker.adapters.postgres.brokering import PgBrokeringViews
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.routing import PgRouting
from worker.cli.orders import print_order
from worker.core.brokering import Rule
from worker.core.inventory import parse_inventory_csv
from worker.core.routing import broker_order
from worker.core.routings import Routing
from worker.demo.tlogfactory import CATALOG
from worker.services.brokering import dry_run
from worker.services.routing import run_brokering

NEXT_DAY = Routing(
    "next day from stores",
    (Rule("stores within 300 km", facility_group="STORES", max_distance_km=300),),
    include={"shipping_methods": frozenset({"NEXT_DAY"})},
)
STANDARD = Routing("standard from the DC", (Rule("dc", facility_group="DC"),))
ROUTINGS = (NEXT_DAY, STANDARD)


@pytest.fixture
def rid():
    return f"brk_{secrets.token_hex(4)}"


@pytest.fixture
def inventory(database):
    return PgInventory(database)


@pytest.fixture
def routing(database):
    return PgRouting(database)


def run(routing, inventory, rid, routings=ROUTINGS, scheduled=False, run_id=None):
    return run_brokering(
        routing,
        lambda ids, q: inventory.brokering_batch(rid, ids, q),
        routings,
        rid,
        run_id or f"run-{uuid.uuid4().hex[:8]}",
        25,
        scheduled=scheduled,
    )


def next_day(seq, **kw):
    doc = send_sale(seq, **kw)
    doc["shippingName"] = "Next Day"
    return doc


def standard(seq, **kw):
    doc = send_sale(seq, **kw)
    doc["shippingName"] = "Standard"
    return doc


def where(db, order_id):
    return db.execute(
        "SELECT facility_id FROM order_items WHERE order_id = %s ORDER BY item_seq", (order_id,)
    ).fetchall()


def test_a_next_day_order_goes_to_a_store_within_distance_while_a_standard_one_goes_to_the_dc(
    ledger, routing, inventory, db, rid
):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 5, ("DC1", LAKOTA.gtin): 5})
    fast = store_order(ledger, r, next_day(1))  # ships to 91911, about 190 km from store 301 (Los Angeles)
    slow = store_order(ledger, r, standard(2))
    result = run(routing, inventory, rid)
    assert (result.orders, result.allocated, result.unfillable) == (2, 2, 0)
    assert where(db, fast) == [("301",)] and where(db, slow) == [("DC1",)]
    rules = dict(
        db.execute(
            "SELECT order_id, rule FROM order_facility_changes WHERE order_id = ANY(%s)", ([fast, slow],)
        ).fetchall()
    )
    assert rules == {fast: "stores within 300 km", slow: "dc"}
    # a store beyond the distance: the NEXT_DAY order waits, parked, rather than go to the DC
    far = store_order(ledger, r, next_day(3, postal="10012"))
    run(routing, inventory, rid)
    assert where(db, far) == [("UNFILLABLE_PARKING",)]


def test_an_order_no_routing_matches_stays_queued_and_says_why(ledger, routing, inventory, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("DC1", LAKOTA.gtin): 5})
    order_id = store_order(ledger, r, standard(1))
    result = run(routing, inventory, rid, routings=(NEXT_DAY,))
    assert result.unrouted == 1
    assert where(db, order_id) == [("_NA_",)]
    (summary,) = db.execute("SELECT summary FROM brokering_decisions WHERE order_id = %s", (order_id,)).fetchone()
    assert summary == ("no routing matches: next day from stores: shipping method STANDARD not in ['NEXT_DAY']")


def test_a_parked_order_is_brokered_by_the_next_scheduled_run_after_stock_arrives(ledger, routing, inventory, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("DC1", LAKOTA.gtin): 0})
    order_id = store_order(ledger, r, standard(1))
    run(routing, inventory, rid)
    assert where(db, order_id) == [("UNFILLABLE_PARKING",)]
    load(inventory, rid, {("DC1", LAKOTA.gtin): 3})
    assert run(routing, inventory, rid).orders == 0  # a run after ingest does not take parked orders
    result = run(routing, inventory, rid, scheduled=True)
    assert (result.requeued, result.orders, result.allocated) == (1, 1, 1)
    assert where(db, order_id) == [("DC1",)]
    assert atp(db, rid, "DC1") == (3, 1)
    moves = db.execute(
        "SELECT from_facility_id, facility_id, reason FROM order_facility_changes WHERE order_id = %s ORDER BY id",
        (order_id,),
    ).fetchall()
    assert moves == [("_NA_", "UNFILLABLE_PARKING", "UNFILLABLE"), ("UNFILLABLE_PARKING", "DC1", "BROKERED")]


def test_auto_cancel_cancels_an_order_unbrokered_past_its_days_and_releases_its_reservations(
    ledger, routing, inventory, db, rid
):
    r = retailer_for(rid, may_split=True)
    other = CATALOG[1]
    load(inventory, rid, {("DC1", LAKOTA.gtin): 5, ("DC1", other.gtin): 0})
    doc = standard(1)
    second = dict(doc["orderProductList"][0], orderItemId="2", gtin=other.gtin, productId=other.product_id)
    second.update(price=0, subTotal=0, total=0, tax=0, productTax={"totalTax": 0})
    doc["orderProductList"].append(second)
    order_id = store_order(ledger, r, doc)
    routings = (Routing("split, cancel in 2 days", (Rule("dc", allow_split=True, auto_cancel_days=2),)),)
    run(routing, inventory, rid, routings)
    assert where(db, order_id) == [("DC1",), ("UNFILLABLE_PARKING",)]
    assert atp(db, rid, "DC1") == (5, 1)
    (days,) = db.execute(
        "SELECT extract(day FROM auto_cancel_at - now())::int FROM orders WHERE id = %s", (order_id,)
    ).fetchone()
    assert days in (1, 2)
    assert run(routing, inventory, rid, routings).cancelled == []  # not due yet
    db.execute("UPDATE orders SET auto_cancel_at = now() - interval '1 minute' WHERE id = %s", (order_id,))
    result = run(routing, inventory, rid, routings)
    assert result.cancelled == [doc["orderId"]]
    assert atp(db, rid, "DC1") == (5, 0)
    assert db.execute("SELECT status_id, auto_cancel_at FROM orders WHERE id = %s", (order_id,)).fetchone() == (
        "ORDER_CANCELLED",
        None,
    )
    statuses = db.execute("SELECT status_id FROM order_items WHERE order_id = %s", (order_id,)).fetchall()
    assert statuses == [("ITEM_CANCELLED",), ("ITEM_CANCELLED",)]
    notes = db.execute(
        "SELECT item_seq, note FROM order_facility_changes WHERE order_id = %s AND reason = 'AUTO_CANCELLED'"
        " ORDER BY item_seq",
        (order_id,),
    ).fetchall()
    assert len(notes) == 2 and "reservation at DC1 released" in notes[0][1]
    assert notes[1][1].startswith("auto-cancelled: not brokered by its auto-cancel date")
    # and a scheduled run does not take a cancelled order again
    assert run(routing, inventory, rid, routings, scheduled=True).requeued == 0


def test_two_workers_brokering_one_retailer_never_oversell_nor_allocate_a_line_twice(
    ledger, routing, inventory, db, rid
):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 4, ("DC1", LAKOTA.gtin): 5})
    orders = [store_order(ledger, r, standard(n, store="255")) for n in range(20)]
    routings = (Routing("all", (Rule("anywhere", sort=("sequence",)),)),)
    errors: list[BaseException] = []

    def runs():
        try:
            for _ in range(5):
                run(routing, inventory, rid, routings, scheduled=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def singles():
        try:
            for order_id in orders:
                with inventory.brokering_unit(rid, order_id, parked=True) as unit:
                    broker_order(unit, routings, f"single-{uuid.uuid4().hex[:6]}")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=t) for t in (runs, runs, singles, singles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reserved = dict(db.execute("SELECT facility_id, reserved FROM inventory WHERE retailer_id = %s", (rid,)).fetchall())
    assert reserved == {"301": 4, "DC1": 5}
    twice = db.execute(
        "SELECT order_id, item_seq, count(*) FROM order_facility_changes WHERE order_id = ANY(%s)"
        " AND reason = 'BROKERED' GROUP BY 1, 2 HAVING count(*) > 1",
        (orders,),
    ).fetchall()
    assert twice == []
    placed = db.execute(
        "SELECT facility_id, count(*) FROM order_items WHERE order_id = ANY(%s) GROUP BY 1 ORDER BY 1", (orders,)
    ).fetchall()
    assert placed == [("301", 4), ("DC1", 5), ("UNFILLABLE_PARKING", 11)]


def test_the_trace_names_the_reason_for_each_facility_not_chosen(ledger, routing, inventory, db, database, rid, capsys):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 9, ("301", LAKOTA.gtin): 1, ("DC1", LAKOTA.gtin): 9})
    doc = next_day(1, quantity=2)
    order_id = store_order(ledger, r, doc)
    db.execute(
        "INSERT INTO order_item_exclusions (order_id, item_seq, facility_id, reason) VALUES (%s, 1, 'DC1', 'damaged')",
        (order_id,),
    )
    run(
        routing,
        inventory,
        rid,
        routings=(Routing("all", (Rule("stores near", facility_group="STORES", max_distance_km=300), Rule("any"))),),
    )
    found = PgBrokeringViews(database).decisions(rid, doc["orderId"])
    (decision,) = found["decisions"]
    (line,) = decision["lines"]
    assert line["result"] == "parked" and line["queue"] == "UNFILLABLE_PARKING"
    first, second = line["rules"]
    assert first["rule"] == "stores near" and first["facilities"] == {
        "254": "excluded: the selling store",
        "301": "short by 1",
        "302": "does not allow brokering",
        "DC1": "excluded: rejected by the store (damaged)",
    }
    assert second["facilities"]["DC1"] == "excluded: rejected by the store (damaged)"
    print_order(found)
    shown = capsys.readouterr().out
    assert "short by 1" in shown and "excluded: the selling store" in shown


def test_a_dry_run_changes_nothing_and_reports_fill_split_distance_and_changes(
    ledger, routing, inventory, db, database, rid
):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 5, ("DC1", LAKOTA.gtin): 5})
    ids = [store_order(ledger, r, next_day(n)) for n in range(3)]
    run(routing, inventory, rid)

    def everything():
        return [
            db.execute(sql, (rid,)).fetchall()
            for sql in (
                "SELECT facility_id, quantity_on_hand, reserved, updated_at FROM inventory WHERE retailer_id = %s"
                " ORDER BY 1, 2",
                "SELECT i.order_id, i.item_seq, i.facility_id, i.status_id FROM order_items i JOIN orders o"
                " ON o.id = i.order_id WHERE o.retailer_id = %s ORDER BY 1, 2",
                "SELECT count(*) FROM order_facility_changes WHERE retailer_id = %s",
                "SELECT count(*) FROM brokering_decisions WHERE retailer_id = %s",
                "SELECT order_id, status, attempts, result FROM order_followups WHERE retailer_id = %s ORDER BY 1",
                "SELECT id, status_id, auto_cancel_at FROM orders WHERE retailer_id = %s ORDER BY 1",
            )
        ]

    before = everything()
    views = PgBrokeringViews(database)
    candidate = (Routing("dc only", (Rule("dc", facility_group="DC"),)),)
    report = dry_run(lambda s: views.history(rid, s), lambda o: views.replay(rid, o), ROUTINGS, candidate, None)
    assert everything() == before
    assert report.orders == 3
    assert report.current.fill_rate == 1.0 and report.candidate.fill_rate == 1.0
    assert report.current.split_rate == 0.0
    assert report.current.average_distance_km < report.candidate.average_distance_km
    assert sorted(order for order, _, _ in report.changed) == sorted(
        db.execute("SELECT external_id FROM orders WHERE id = ANY(%s)", (ids,)).fetchall()[i][0] for i in range(3)
    )
    assert all(b == {1: "301"} and a == {1: "DC1"} for _, b, a in report.changed)
    # against what happened, the current rules change nothing
    same = dry_run(lambda s: views.history(rid, s), lambda o: views.replay(rid, o), ROUTINGS, None, None)
    assert same.changed == []


def test_stock_loaded_without_a_gtin_matches_by_product_id(ledger, routing, inventory, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {})
    inventory.load_inventory(
        rid, parse_inventory_csv(f"facility_id,product_id,gtin,quantity_on_hand\nDC1,{LAKOTA.product_id},,2\n")
    )
    order_id = store_order(ledger, r, standard(1))
    run(routing, inventory, rid)
    assert where(db, order_id) == [("DC1",)]
    assert db.execute(
        "SELECT reserved FROM inventory WHERE retailer_id = %s AND product_id = %s", (rid, LAKOTA.product_id)
    ).fetchone() == (1,)


def test_non_merchandise_lines_are_never_brokered_and_never_touch_inventory(ledger, routing, inventory, db, rid):
    r = retailer_for(rid, order_master=True)
    load(inventory, rid, {("DC1", LAKOTA.gtin): 5, ("254", LAKOTA.gtin): 5})
    doc = standard(1)
    doc["orderProductList"][0]["productClass"] = "Gift Card"
    order_id = store_order(ledger, r, doc)
    assert db.execute("SELECT facility_id, status_id FROM order_items WHERE order_id = %s", (order_id,)).fetchall() == [
        ("254", "ITEM_COMPLETED")
    ]
    assert db.execute(
        "SELECT count(*) FROM order_followups WHERE order_id = %s AND kind = 'brokering'", (order_id,)
    ).fetchone() == (0,)
    # an in-store gift card sale moves no stock
    from tests.integration.test_routing_runs import in_store_sale
    from worker.services.routing import run_inventory

    sale = in_store_sale(1)
    sale["orderProductList"][0]["productClass"] = "Service"
    store_order(ledger, r, sale)
    result = run_inventory(routing, rid, 25)
    assert result.orders == 1 and result.variances == 0
    assert atp(db, rid, "254") == (5, 0)


def test_the_daily_order_limit_counts_the_facilitys_own_day_not_utcs(ledger, routing, inventory, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 5, ("DC1", LAKOTA.gtin): 5})
    # UTC+14: whatever the hour, one of the two checks below counts differently in the store's day and in UTC's
    zone = "Pacific/Kiritimati"
    db.execute(
        "UPDATE facilities SET max_orders_per_day = 1, time_zone = %s WHERE retailer_id = %s AND facility_id = '301'",
        (zone, rid),
    )
    earlier = store_order(ledger, r, standard(1))  # stands for an order brokered to 301 before
    db.execute("UPDATE order_items SET facility_id = '301' WHERE order_id = %s", (earlier,))
    db.execute("UPDATE order_followups SET status = 'done' WHERE order_id = %s", (earlier,))
    routings = (Routing("stores first", (Rule("by sequence", sort=("sequence",)),)),)

    def brokered_to_301_at(offset_minutes):
        db.execute("DELETE FROM order_facility_changes WHERE order_id = %s", (earlier,))
        db.execute(
            "INSERT INTO order_facility_changes (retailer_id, order_id, item_seq, from_facility_id, facility_id,"
            " quantity, reason, rule, run_id, changed_at) VALUES (%s, %s, 1, '_NA_', '301', 1, 'BROKERED', 'r',"
            " 'x', (date_trunc('day', now() AT TIME ZONE %s) AT TIME ZONE %s) + make_interval(mins => %s))",
            (rid, earlier, zone, zone, offset_minutes),
        )

    brokered_to_301_at(-1)  # the store's yesterday: does not count today
    first = store_order(ledger, r, standard(2))
    run(routing, inventory, rid, routings)
    assert where(db, first) == [("301",)]
    brokered_to_301_at(+1)  # the store's today, with `first` that makes two: the limit of one is reached
    second = store_order(ledger, r, standard(3))
    run(routing, inventory, rid, routings)
    assert where(db, second) == [("DC1",)]
    (line,) = db.execute("SELECT lines FROM brokering_decisions WHERE order_id = %s", (second,)).fetchone()[0]
    assert line["rules"][0]["facilities"]["301"] == "capacity: 2 of 1 orders today"


def test_an_order_a_rule_moved_to_a_queue_is_taken_by_a_routing_of_that_queue_in_a_scheduled_run(
    ledger, routing, inventory, db, rid
):
    r = retailer_for(rid)
    load(inventory, rid, {("DC1", LAKOTA.gtin): 0})
    routings = (
        Routing(
            "backorders",
            (Rule("dc", facility_group="DC"),),
            include={"queues": frozenset({"BACKORDER_PARKING"})},
        ),
        Routing("new orders", (Rule("dc or backorder", facility_group="DC", action="move_to_queue",
                                     queue="BACKORDER_PARKING"),)),
    )  # fmt: skip
    order_id = store_order(ledger, r, standard(1))
    run(routing, inventory, rid, routings)
    assert where(db, order_id) == [("BACKORDER_PARKING",)]
    assert db.execute("SELECT reason FROM order_facility_changes WHERE order_id = %s", (order_id,)).fetchone() == (
        "QUEUED",
    )
    load(inventory, rid, {("DC1", LAKOTA.gtin): 2})
    result = run(routing, inventory, rid, routings, scheduled=True)
    assert (result.requeued, result.allocated) == (1, 1)
    assert where(db, order_id) == [("DC1",)]
    (routed,) = db.execute(
        "SELECT routing FROM brokering_decisions WHERE order_id = %s ORDER BY id DESC LIMIT 1", (order_id,)
    ).fetchone()
    assert routed == "backorders"


def test_an_in_store_sale_lowers_a_stock_row_loaded_without_a_gtin(ledger, routing, inventory, db, rid):
    from tests.integration.test_routing_runs import in_store_sale
    from worker.services.routing import run_inventory

    r = retailer_for(rid, order_master=True)
    load(inventory, rid, {})
    sale = in_store_sale(1)
    line = sale["orderProductList"][0]
    inventory.load_inventory(
        rid, parse_inventory_csv(f"facility_id,product_id,gtin,quantity_on_hand\n254,{line['productId']},,5\n")
    )
    store_order(ledger, r, sale)
    result = run_inventory(routing, rid, 25)
    assert (result.variances, result.notes) == (1, [])
    assert db.execute(
        "SELECT quantity_on_hand, gtin FROM inventory WHERE retailer_id = %s AND facility_id = '254'", (rid,)
    ).fetchall() == [(5 - line["quantity"], None)]
