"""Inventory, variances and brokering against the real PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import threading
import uuid

import pytest

from tests.unit.helpers import retailer as make_retailer_config
from worker.adapters.postgres.inventory import PgInventory
from worker.core.brokering import Rule
from worker.core.inventory import parse_facilities_csv, parse_inventory_csv
from worker.core.routing import broker_order
from worker.demo.tlogfactory import CATALOG, dumps, make_sale
from worker.services.ingest import decide, decide_variance
from worker.services.ports import Claim

FACILITIES = """\
facility_id,name,facility_type,postal_code,latitude,longitude,allow_brokering,max_orders_per_day,facility_group,sequence
254,SOHO,RETAIL_STORE,10012,40.7220,-73.9999,true,,STORES,2
301,LOS ANGELES,RETAIL_STORE,90012,34.0614,-118.2385,true,,STORES,1
302,SAN DIEGO,RETAIL_STORE,92101,32.7157,-117.1611,false,,STORES,3
DC1,RENO DC,WAREHOUSE,89502,,,true,,DC,1
"""
LAKOTA = CATALOG[0]  # gtin 197076109628


@pytest.fixture
def inventory(database):
    return PgInventory(database)


@pytest.fixture
def rid():
    return f"route_{secrets.token_hex(4)}"


def retailer_for(rid, **changes):
    r = make_retailer_config(**changes)
    return dataclasses.replace(r, retailer_id=rid)


def load(inventory, rid, stock: dict[tuple[str, str], int], facilities: str = FACILITIES):
    inventory.load_facilities(rid, parse_facilities_csv(facilities))
    if not stock:
        return
    rows = ["facility_id,product_id,gtin,quantity_on_hand"]
    by_gtin = {p.gtin: p for p in CATALOG}
    rows += [f"{f},{by_gtin[g].product_id},{g},{q}" for (f, g), q in stock.items()]
    inventory.load_inventory(rid, parse_inventory_csv("\n".join(rows) + "\n"))


def store_order(ledger, r, doc, name=None):
    """Claim and record a TLog the way ingest does; returns the order id."""
    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(name or f"{uuid.uuid4().hex}.json", "/x", 1, 1.0)])
    recorded = ledger.record(row.id, decide(dumps(doc), r))
    assert recorded.order_id is not None, recorded.row.error
    return recorded.order_id


def send_sale(seq, store="254", gtin=LAKOTA.gtin, quantity=1, postal="91911"):
    doc = make_sale(seq, "SEND_SALE", store_id=store, lines=1, order_prefix=f"S{secrets.token_hex(3).upper()}")
    line = doc["orderProductList"][0]
    product = next(p for p in CATALOG if p.gtin == gtin)
    sub = product.price * quantity
    tax = line["tax"] * 0
    line.update(
        gtin=gtin,
        productId=product.product_id,
        price=product.price,
        quantity=quantity,
        subTotal=sub,
        tax=tax,
        productTax={"totalTax": tax},
        total=sub,
    )
    doc["orderSubTotal"], doc["taxSubTotal"] = sub, tax
    doc["totalAmount"] = sub + doc["shippingSubTotal"]
    doc["tenders"][0]["amountAuthorized"] = doc["totalAmount"]
    doc["shippingAddress"]["postalCode"] = postal
    return doc


def atp(db, rid, facility, gtin=LAKOTA.gtin):
    return db.execute(
        "SELECT quantity_on_hand, reserved FROM inventory WHERE retailer_id = %s AND facility_id = %s AND gtin = %s",
        (rid, facility, gtin),
    ).fetchone()


def run_brokering(inventory, rid, order_id, rules, parked=False):
    with inventory.brokering_unit(rid, order_id, parked) as unit:
        return broker_order(unit, rules, f"test-{uuid.uuid4().hex[:8]}")


NEARBY = (
    Rule("nearby stores", facility_group="STORES", max_distance_km=1500, allow_split=False),
    Rule("distribution centers", facility_group="DC", allow_split=True),
)


def test_send_sale_is_allocated_to_the_nearest_store_with_stock_reserved(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5, ("301", LAKOTA.gtin): 2, ("DC1", LAKOTA.gtin): 9})
    order_id = store_order(ledger, r, send_sale(1, store="254", quantity=2))
    plan = run_brokering(inventory, rid, order_id, NEARBY)
    assert [(a.facility_id, a.rule) for a in plan.allocations] == [("301", "nearby stores")]
    assert atp(db, rid, "301") == (2, 2)
    change = db.execute(
        "SELECT from_facility_id, facility_id, quantity, reason, rule, run_id IS NOT NULL, note"
        " FROM order_facility_changes WHERE order_id = %s",
        (order_id,),
    ).fetchone()
    assert change[:6] == ("_NA_", "301", 2, "BROKERED", "nearby stores", True)
    assert "km" in change[6]
    assert db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone() == ("301",)
    follow = db.execute(
        "SELECT status FROM order_followups WHERE order_id = %s AND kind = 'brokering'", (order_id,)
    ).fetchone()
    assert follow == ("done",)


def test_brokering_twice_allocates_once(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 3})
    order_id = store_order(ledger, r, send_sale(2, quantity=1))
    assert run_brokering(inventory, rid, order_id, NEARBY) is not None
    assert run_brokering(inventory, rid, order_id, NEARBY) is None
    assert atp(db, rid, "301") == (3, 1)
    assert db.execute("SELECT count(*) FROM order_facility_changes WHERE order_id = %s", (order_id,)).fetchone() == (1,)


def test_the_selling_store_and_stores_that_do_not_broker_are_never_chosen(inventory, ledger, db, rid):
    r = retailer_for(rid)
    # the nearest store with stock is 302 (no brokering), then the selling store 301: the DC gets it
    load(inventory, rid, {("301", LAKOTA.gtin): 5, ("302", LAKOTA.gtin): 5, ("DC1", LAKOTA.gtin): 5})
    order_id = store_order(ledger, r, send_sale(3, store="301", postal="92101"))
    plan = run_brokering(inventory, rid, order_id, NEARBY)
    assert [(a.facility_id, a.rule) for a in plan.allocations] == [("DC1", "distribution centers")]
    assert "distance unknown" not in (plan.allocations[0].note or "")  # DC1's ZIP code gives its location


def test_what_no_rule_can_place_is_parked_with_the_reason_and_rebrokered_later(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 1})
    order_id = store_order(ledger, r, send_sale(4, quantity=2))
    plan = run_brokering(inventory, rid, order_id, NEARBY)
    assert plan.allocations == () and len(plan.unfillable) == 1
    row = db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone()
    assert row == ("UNFILLABLE_PARKING",)
    note = db.execute("SELECT reason, note FROM order_facility_changes WHERE order_id = %s", (order_id,)).fetchone()
    assert note[0] == "UNFILLABLE" and "197076109628" in note[1]
    assert inventory.orders_waiting(rid, parked=False) == []
    assert inventory.orders_waiting(rid, parked=True) == [order_id]
    load(inventory, rid, {("DC1", LAKOTA.gtin): 4})  # stock arrives
    plan = run_brokering(inventory, rid, order_id, NEARBY, parked=True)
    assert [(a.facility_id, a.quantity) for a in plan.allocations] == [("DC1", 2)]
    assert atp(db, rid, "DC1") == (4, 2)
    frm = db.execute(
        "SELECT from_facility_id FROM order_facility_changes WHERE order_id = %s AND reason = 'BROKERED'", (order_id,)
    ).fetchone()
    assert frm == ("UNFILLABLE_PARKING",)


def test_daily_order_limit_is_respected(inventory, ledger, db, rid):
    r = retailer_for(rid)
    limited = FACILITIES.replace(
        "301,LOS ANGELES,RETAIL_STORE,90012,34.0614,-118.2385,true,,STORES,1",
        "301,LOS ANGELES,RETAIL_STORE,90012,34.0614,-118.2385,true,2,STORES,1",
    )
    load(inventory, rid, {("301", LAKOTA.gtin): 10, ("DC1", LAKOTA.gtin): 10}, limited)
    placed = []
    for seq in range(4):
        order_id = store_order(ledger, r, send_sale(10 + seq))
        placed.append(run_brokering(inventory, rid, order_id, NEARBY).allocations[0].facility_id)
    assert placed == ["301", "301", "DC1", "DC1"]


def test_concurrent_brokering_never_allocates_more_than_available(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 3, ("DC1", LAKOTA.gtin): 4})
    orders = [store_order(ledger, r, send_sale(100 + i)) for i in range(16)]
    barrier, errors = threading.Barrier(8), []

    def run(chunk):
        barrier.wait()
        for order_id in chunk:
            try:
                run_brokering(inventory, rid, order_id, NEARBY)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(orders[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert atp(db, rid, "301") == (3, 3) and atp(db, rid, "DC1") == (4, 4)
    placed = db.execute(
        "SELECT facility_id, count(*) FROM order_items WHERE order_id = ANY(%s) GROUP BY 1", (orders,)
    ).fetchall()
    assert dict(placed) == {"301": 3, "DC1": 4, "UNFILLABLE_PARKING": 9}


def test_in_store_sale_lowers_store_inventory_exactly_once(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    doc = make_sale(1, "IN_STORE", store_id="254", lines=1, order_prefix=f"I{secrets.token_hex(3).upper()}")
    doc["orderProductList"][0].update(gtin=LAKOTA.gtin, productId=LAKOTA.product_id)
    quantity = doc["orderProductList"][0]["quantity"]
    order_id = store_order(ledger, r, doc)
    assert inventory.apply_sale(rid, order_id)[0] == 1
    assert inventory.apply_sale(rid, order_id)[0] == 0  # delivered twice
    assert atp(db, rid, "254") == (5 - quantity, 0)
    variance = db.execute(
        "SELECT reason_id, available_delta, id_type FROM inventory_variances WHERE retailer_id = %s", (rid,)
    ).fetchall()
    assert variance == [("POS_SALE", -quantity, "UPCA")]


def test_in_store_sale_of_an_unstocked_product_creates_negative_stock(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {})
    doc = make_sale(2, "IN_STORE", store_id="254", lines=1, order_prefix=f"I{secrets.token_hex(3).upper()}")
    order_id = store_order(ledger, r, doc)
    applied, notes = inventory.apply_sale(rid, order_id)
    gtin, quantity = doc["orderProductList"][0]["gtin"], doc["orderProductList"][0]["quantity"]
    assert applied == 1 and "had no inventory row" in notes[0]
    assert atp(db, rid, "254", gtin) == (-quantity, 0)


def test_variance_file_applies_good_records_and_reports_the_rest(inventory, ledger, db, rid):
    load(inventory, rid, {("254", LAKOTA.gtin): 5, ("301", CATALOG[6].gtin): 2})
    data = (
        b"facilityId,idType,idValue,availableDelta,locationSeqId,varianceReasonId,comments\n"
        b"254,UPCA,197076109628,-1,TLTLTLLL01,VAR_INTEGR,POS in-store sale\n"
        b"301,SKU,VSOCK0000001,3,,VAR_FOUND,\n"
        b"999,UPCA,197076109628,-1,,VAR_LOST,unknown store\n"
        b"254,UPCA,000000000000,-1,,VAR_LOST,unknown product\n"
        b"254,UPCA,197076109628,abc,,VAR_LOST,bad number\n"
    )
    with ledger.scan_transaction(rid, "variance") as tx:
        [row] = tx.claim([Claim("inv.json", "/v/inv.json", len(data), 1.0)])
    recorded = ledger.record(row.id, decide_variance(data))
    assert recorded.row.status == "processed"
    assert (recorded.records_applied, recorded.records_rejected) == (2, 3)
    assert (
        "3 of 5 records rejected" in recorded.row.error
        and "line 4: facilityId: unknown facility '999'" in recorded.row.error
    )
    assert atp(db, rid, "254") == (4, 0) and atp(db, rid, "301", CATALOG[6].gtin) == (5, 0)
    lines = [
        line
        for (line,) in db.execute("SELECT line FROM variance_rejections WHERE tlog_file_id = %s ORDER BY 1", (row.id,))
    ]
    assert lines == [4, 5, 6]
    again = ledger.record(row.id, decide_variance(data))  # a second delivery changes nothing
    assert again.row.status == "processed" and atp(db, rid, "254") == (4, 0)


def test_variance_file_with_every_record_rejected_fails(inventory, ledger, db, rid):
    load(inventory, rid, {})
    data = (
        b'[{"facilityId": "nope", "idType": "UPCA", "idValue": "1", "availableDelta": 1,'
        b' "varianceReasonId": "VAR_FOUND"}]'
    )
    with ledger.scan_transaction(rid, "variance") as tx:
        [row] = tx.claim([Claim("inv.json", "/v/inv.json", len(data), 1.0)])
    recorded = ledger.record(row.id, decide_variance(data))
    assert recorded.row.status == "failed" and "record 1: facilityId: unknown facility 'nope'" in recorded.row.error


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, timeout=60, env=os.environ
    )


def test_loads_from_the_command_line_are_all_or_nothing(make_retailer, db, tmp_path):
    r = make_retailer()
    good = tmp_path / "facilities.csv"
    good.write_text(FACILITIES)
    assert cli("facilities", "load", r.retailer_id, str(good)).returncode == 0
    stock = tmp_path / "inventory.csv"
    stock.write_text("facility_id,product_id,gtin,quantity_on_hand\n254,VLAKOTA0001050,197076109628,7\n")
    assert cli("inventory", "load", r.retailer_id, str(stock)).returncode == 0
    db.execute("UPDATE inventory SET reserved = 2 WHERE retailer_id = %s", (r.retailer_id,))
    stock.write_text("facility_id,product_id,gtin,quantity_on_hand\n254,VLAKOTA0001050,197076109628,9\n255,VX,12,x\n")
    bad = cli("inventory", "load", r.retailer_id, str(stock))
    assert bad.returncode == 1 and "line 3" in bad.stderr and "nothing loaded" in bad.stderr  # errors: stderr
    assert atp(db, r.retailer_id, "254") == (7, 2)
    stock.write_text("facility_id,product_id,gtin,quantity_on_hand\n254,VLAKOTA0001050,197076109628,9\n")
    assert cli("inventory", "load", r.retailer_id, str(stock)).returncode == 0
    # a load sets on-hand to the count (reserved units included) and reserved to the open reservations: the 2
    # set by hand above belong to no order line, so they go (issue 13: a load kept reservations that never ended)
    assert atp(db, r.retailer_id, "254") == (9, 0)
    count = db.execute("SELECT count(*) FROM facilities WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0]
    assert count == 4
