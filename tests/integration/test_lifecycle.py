"""Issue 13 on the real PostgreSQL: each bug of the issue shown fixed (the sale that used to be wrong, now right),
reservations released by ship / reject / cancel, the fulfilment feed, voids and corrections, returns that
reconcile, and inventory loads."""

from __future__ import annotations

import copy
import secrets
import uuid
from decimal import Decimal

import pytest

from tests.integration.test_routing import (
    LAKOTA,
    NEARBY,
    atp,
    load,
    retailer_for,
    run_brokering,
    send_sale,
)
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.lifecycle import PgOrderActions, check_invariant
from worker.core.lifecycle import ActionRefused
from worker.demo.tlogfactory import dumps, make_return, make_sale
from worker.services.ingest import decide, decide_fulfillment, decide_variance
from worker.services.ports import Claim


@pytest.fixture
def inventory(database):
    return PgInventory(database)


@pytest.fixture
def actions(database):
    return PgOrderActions(database)


@pytest.fixture
def rid():
    return f"life_{secrets.token_hex(4)}"


def record(ledger, r, data: bytes, feed="orders", decider=None):
    with ledger.scan_transaction(r.retailer_id, feed) as tx:
        [row] = tx.claim([Claim(f"{uuid.uuid4().hex}.json", "/x", 1, 1.0)])
    return ledger.record(row.id, (decider or (lambda d: decide(d, r)))(data))


def in_store(seq, quantity=1, prefix=None):
    doc = make_sale(seq, "IN_STORE", store_id="254", lines=1, order_prefix=prefix or f"I{secrets.token_hex(3).upper()}")
    line = doc["orderProductList"][0]
    sub = LAKOTA.price * quantity
    line.update(gtin=LAKOTA.gtin, productId=LAKOTA.product_id, quantity=quantity, price=LAKOTA.price, subTotal=sub)
    line.update(tax=Decimal(0), productTax={"totalTax": Decimal(0)}, total=sub, priceAdjustments=[])
    doc.update(orderSubTotal=sub, taxSubTotal=Decimal(0), discount=Decimal(0), totalAmount=sub)
    doc["tenders"][0]["amountAuthorized"] = sub
    return doc


def brokered(inventory, ledger, r, rid, db, quantity=1):
    """A send-sale allocated to 301 (stock 301: 3, DC1: 9)."""
    load(inventory, rid, {("301", LAKOTA.gtin): 3, ("DC1", LAKOTA.gtin): 9})
    doc = send_sale(1, store="254", quantity=quantity)
    recorded = record(ledger, r, dumps(doc))
    run_brokering(inventory, rid, recorded.order_id, NEARBY)
    assert db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (recorded.order_id,)).fetchone() == (
        "301",
    )
    return doc, recorded.order_id


def status_of(db, order_id):
    return db.execute("SELECT status_id FROM orders WHERE id = %s", (order_id,)).fetchone()[0]


# ------------------------------------------------------------------ reservations end (bug 1)


def test_a_shipped_item_lowers_on_hand_and_ends_its_reservation_and_completes_the_order(
    inventory, ledger, actions, db, rid
):
    r = retailer_for(rid)
    doc, order_id = brokered(inventory, ledger, r, rid, db, quantity=2)
    assert atp(db, rid, "301") == (3, 2)  # before: reserved only ever went up
    result = actions.act(rid, "SHIPPED", doc["orderId"], 1)
    assert result.changed == (1,) and result.order_status == "ORDER_COMPLETED"
    assert atp(db, rid, "301") == (1, 0)
    assert actions.act(rid, "SHIPPED", doc["orderId"], 1).already == (1,)  # twice: once
    assert atp(db, rid, "301") == (1, 0)
    item = db.execute("SELECT status_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone()
    assert item == ("ITEM_COMPLETED",)
    moves = db.execute(
        "SELECT reason, on_hand_delta, reserved_delta, source FROM inventory_movements WHERE order_id = %s",
        (order_id,),
    ).fetchall()
    assert moves == [("SHIPPED", -2, -2, f"ship:{order_id}:1")]
    # the payload stays true (bug 9): current_payload names the facility and the status
    current = db.execute("SELECT current_payload FROM orders WHERE id = %s", (order_id,)).fetchone()[0]
    order = current[0]["dataList"][0]["data"]["order"]
    assert order["statusId"] == "ORDER_COMPLETED"
    assert [(g["facilityId"], [i["status"] for i in g["items"]]) for g in order["shipGroup"]] == [
        ("301", ["ITEM_COMPLETED"])
    ]
    assert check_invariant(db, rid) == []


def test_a_rejected_item_is_released_excluded_and_brokered_elsewhere(inventory, ledger, actions, db, rid):
    r = retailer_for(rid)
    doc, order_id = brokered(inventory, ledger, r, rid, db)
    result = actions.act(rid, "REJECTED", doc["orderId"], 1, reason="damaged on the shelf")
    assert result.changed == (1,) and result.order_status == "ORDER_APPROVED"
    assert atp(db, rid, "301") == (3, 0)
    assert db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone() == ("_NA_",)
    excluded = db.execute("SELECT facility_id, reason FROM order_item_exclusions WHERE order_id = %s", (order_id,))
    assert [(f, "damaged on the shelf" in why) for f, why in excluded] == [("301", True)]
    assert db.execute(
        "SELECT status FROM order_followups WHERE order_id = %s AND kind = 'brokering'", (order_id,)
    ).fetchone() == ("pending",)
    run_brokering(inventory, rid, order_id, NEARBY)
    assert db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone() == ("DC1",)
    assert atp(db, rid, "DC1") == (9, 1) and atp(db, rid, "301") == (3, 0)
    current = db.execute("SELECT current_payload FROM orders WHERE id = %s", (order_id,)).fetchone()[0]
    groups = current[0]["dataList"][0]["data"]["order"]["shipGroup"]
    assert [(g["facilityId"], [i["status"] for i in g["items"]]) for g in groups] == [("DC1", ["ITEM_APPROVED"])]
    received = db.execute("SELECT oms_payload FROM orders WHERE id = %s", (order_id,)).fetchone()[0]
    assert received[0]["dataList"][0]["data"]["order"]["shipGroup"][0]["facilityId"] == "_NA_"  # as received
    assert check_invariant(db, rid) == []


def test_cancelling_releases_what_was_reserved_once(inventory, ledger, actions, db, rid):
    r = retailer_for(rid)
    doc, order_id = brokered(inventory, ledger, r, rid, db)
    assert actions.act(rid, "CANCELLED", doc["orderId"]).order_status == "ORDER_CANCELLED"
    assert atp(db, rid, "301") == (3, 0)
    assert actions.act(rid, "CANCELLED", doc["orderId"]).already == (1,)
    assert atp(db, rid, "301") == (3, 0)
    with pytest.raises(ActionRefused, match="cancelled already"):
        actions.act(rid, "SHIPPED", doc["orderId"], 1)
    assert run_brokering(inventory, rid, order_id, NEARBY) is None  # a cancelled line is never brokered again


def test_an_inventory_load_sets_the_physical_count_and_recomputes_reservations(inventory, ledger, db, rid):
    r = retailer_for(rid)
    brokered(inventory, ledger, r, rid, db)
    db.execute("UPDATE inventory SET reserved = 7 WHERE retailer_id = %s AND facility_id = '301'", (rid,))  # drift
    load(inventory, rid, {("301", LAKOTA.gtin): 5})
    assert atp(db, rid, "301") == (5, 1)  # on hand = the count (reserved units included), reserved = open lines
    load_moves = db.execute(
        "SELECT on_hand_delta FROM inventory_movements WHERE retailer_id = %s AND reason = 'LOAD'"
        " AND facility_id = '301' ORDER BY id",
        (rid,),
    ).fetchall()
    assert load_moves == [(3,), (2,)]


# ------------------------------------------------------------------ the fulfilment feed


def test_a_fulfilment_file_in_csv_or_json_ships_and_rejects_and_reports_bad_records(inventory, ledger, db, rid):
    r = retailer_for(rid)
    doc, order_id = brokered(inventory, ledger, r, rid, db)
    csv = (
        "orderId,itemSeq,facilityId,quantity,status,trackingCode,reason\n"
        f"{doc['orderId']},1,301,1,REJECTED,,out of stock\n"
        "NOPE,1,301,1,SHIPPED,1Z,\n"
        f"{doc['orderId']},1,301,1,LOST,,\n"
    ).encode()
    done = record(ledger, r, csv, "fulfillment", decide_fulfillment)
    assert done.row.status == "processed" and done.records_applied == 1 and done.records_rejected == 2
    assert "order NOPE of retailer" in done.row.error and "'LOST' is not one of SHIPPED, REJECTED" in done.row.error
    assert done.triggered == ("brokering",)  # the rejected line is owed a brokering run
    run_brokering(inventory, rid, order_id, NEARBY)
    as_json = f'[{{"orderId": "{doc["orderId"]}", "itemSeq": 1, "facilityId": "DC1", "status": "SHIPPED",'
    as_json += ' "trackingCode": "1Z999"}]'
    shipped = record(ledger, r, as_json.encode(), "fulfillment", decide_fulfillment)
    assert shipped.row.status == "processed" and shipped.records_applied == 1
    assert status_of(db, order_id) == "ORDER_COMPLETED"
    assert atp(db, rid, "DC1") == (8, 0) and atp(db, rid, "301") == (3, 0)
    bad = record(ledger, r, b"orderId,itemSeq\n", "fulfillment", decide_fulfillment)
    assert bad.row.status == "failed" and "missing columns" in bad.row.error
    assert check_invariant(db, rid) == []


# ------------------------------------------------------------------ one source of truth (bug 2)


def test_pos_sale_records_of_the_variance_feed_are_ignored_when_sales_lower_stock(inventory, ledger, db, rid):
    r = retailer_for(rid)
    assert r.sales_lower_stock
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    csv = (
        b"facilityId,idType,idValue,availableDelta,locationSeqId,varianceReasonId,comments\n"
        b"254,UPCA,197076109628,-1,,POS_SALE,POS in-store sale\n"
    )
    done = record(ledger, r, csv, "variance", lambda d: decide_variance(d, r))
    assert done.row.status == "processed" and "1 POS_SALE record(s) ignored" in done.row.error
    assert atp(db, rid, "254") == (5, 0)  # before: lowered here and by the sale


# ------------------------------------------------------------------ voids and corrections (bugs 3, 4)


def test_a_voided_tlog_is_a_cancelled_order_that_moves_no_stock(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    doc = in_store(1)
    doc["orderStatus"] = doc["status"] = "CANCELLED"
    recorded = record(ledger, r, dumps(doc))
    assert recorded.row.status == "processed"
    assert status_of(db, recorded.order_id) == "ORDER_CANCELLED"  # before: ORDER_COMPLETED, stock lowered
    items = db.execute("SELECT status_id FROM order_items WHERE order_id = %s", (recorded.order_id,)).fetchall()
    assert items == [("ITEM_CANCELLED",)]
    assert db.execute("SELECT count(*) FROM order_followups WHERE order_id = %s", (recorded.order_id,)).fetchone() == (
        0,
    )


def test_a_void_of_a_stored_sale_cancels_it_and_gives_the_stock_back_once(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    doc = in_store(2, quantity=2)
    first = record(ledger, r, dumps(doc))
    inventory.apply_sale(rid, first.order_id)
    assert atp(db, rid, "254") == (3, 0)
    void = copy.deepcopy(doc)
    void["orderStatus"] = void["status"] = "VOIDED"
    void["updateDate"] = doc["updateDate"] + 60_000
    voided = record(ledger, r, dumps(void))
    assert voided.row.status == "processed", voided.row.error
    assert status_of(db, first.order_id) == "ORDER_CANCELLED"
    assert atp(db, rid, "254") == (5, 0)
    void["updateDate"] += 1  # the same void again, a little later
    again = record(ledger, r, dumps(void))
    assert again.row.status in ("processed", "duplicate")
    assert atp(db, rid, "254") == (5, 0)


def test_an_older_or_equal_version_of_a_stored_order_is_a_conflict_with_its_diff(inventory, ledger, actions, db, rid):
    r = retailer_for(rid)
    doc = in_store(3)
    first = record(ledger, r, dumps(doc))
    changed = copy.deepcopy(doc)
    changed["customerProfile"]["email"] = "someone.else@example.com"
    conflict = record(ledger, r, dumps(changed))
    assert conflict.row.status == "conflict"  # before: silently archived as a duplicate
    assert "email" in conflict.row.error and "someone.else@example.com" in conflict.row.error
    diff = db.execute("SELECT diff FROM tlog_files WHERE id = %s", (conflict.row.id,)).fetchone()[0]
    assert any(d["field"].endswith("email") and d["received"] == "someone.else@example.com" for d in diff)
    versions = actions.diff(rid, doc["orderId"])
    assert [v["outcome"] for v in versions] == ["conflict"]
    assert first.order_id is not None


def test_a_newer_version_before_any_stock_moved_replaces_the_order(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    doc = in_store(4, quantity=1)
    first = record(ledger, r, dumps(doc))
    newer = in_store(4, quantity=2, prefix=doc["orderId"][:-8])
    newer["updateDate"] = doc["updateDate"] + 1000
    applied = record(ledger, r, dumps(newer))
    assert applied.row.status == "processed", applied.row.error
    row = db.execute("SELECT quantity FROM order_items WHERE order_id = %s", (first.order_id,)).fetchone()
    assert row == (2,)
    assert db.execute("SELECT grand_total FROM orders WHERE id = %s", (first.order_id,)).fetchone() == (
        LAKOTA.price * 2,
    )
    assert applied.triggered == ("inventory",)
    inventory.apply_sale(rid, first.order_id)  # the inventory follow-up lowers stock by the new quantity, once
    assert atp(db, rid, "254") == (3, 0)
    assert check_invariant(db, rid) == []


def test_a_newer_version_after_stock_moved_fails_with_the_diff(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    doc = in_store(5, quantity=1)
    first = record(ledger, r, dumps(doc))
    inventory.apply_sale(rid, first.order_id)
    newer = in_store(5, quantity=2, prefix=doc["orderId"][:-8])
    newer["updateDate"] = doc["updateDate"] + 1000
    refused = record(ledger, r, dumps(newer))
    assert refused.row.status == "failed"
    assert "cannot be undone" in refused.row.error and "quantity: 1 -> 2" in refused.row.error


# ------------------------------------------------------------------ payments (bug 5), rounding, ids (bugs 6, 7)


def test_tenders_must_add_up_to_the_total(ledger, db, rid):
    r = retailer_for(rid)
    doc = in_store(6)
    doc["tenders"][0]["amountAuthorized"] = Decimal("1.00")
    short = record(ledger, r, dumps(doc))
    assert short.row.status == "failed"  # before: 1.00 cash on a 130.00 sale was accepted
    assert "approved tenders add up to 1.00, not totalAmount 130.00" in short.row.error
    declined = in_store(7)
    declined["tenders"][0]["paymentStatus"] = "DECLINED"
    only = record(ledger, r, dumps(declined))
    assert only.row.status == "failed" and "1 declined or voided tender(s) not counted" in only.row.error
    cash = in_store(8)
    cash["tenders"][0].update(amountAuthorized=Decimal("150.00"), changeBackAmount=Decimal("20.00"))
    card = dict(cash["tenders"][0], paymentMethod="Credit Card", paymentStatus="DECLINED", changeBackAmount=0)
    auth = dict(cash["tenders"][0], paymentMethod="Gift Card", captureStatus="AUTHORIZED", changeBackAmount=0)
    auth["amountAuthorized"] = Decimal(0)
    cash["tenders"] = [cash["tenders"][0], card, auth]
    ok = record(ledger, r, dumps(cash))
    assert ok.row.status == "processed", ok.row.error
    pays = db.execute(
        "SELECT payment_method_type_id, amount, status_id FROM order_payments WHERE order_id = %s ORDER BY seq",
        (ok.order_id,),
    ).fetchall()
    assert pays == [
        ("CASH", Decimal("130.00"), "PAYMENT_SETTLED"),
        ("CREDIT_CARD", Decimal("150.00"), "PAYMENT_DECLINED"),
        ("GIFT_CARD", Decimal("0.00"), "PAYMENT_AUTHORIZED"),
    ]


def test_totals_are_checked_half_up_like_the_till_prints_them(ledger, db, rid):
    r = retailer_for(rid)
    doc = in_store(9)
    line = doc["orderProductList"][0]
    line.update(price=Decimal("10.00"), subTotal=Decimal("10.00"), tax=Decimal("0.125"), total=Decimal("10.125"))
    line["productTax"] = {"totalTax": Decimal("0.125")}
    doc.update(orderSubTotal=Decimal("10.00"), taxSubTotal=Decimal("0.125"), totalAmount=Decimal("10.13"))
    doc["tenders"][0]["amountAuthorized"] = Decimal("10.13")
    assert record(ledger, r, dumps(doc)).row.status == "processed"  # before: refused (half to even: 10.12)
    doc2 = copy.deepcopy(doc)
    doc2["orderId"] += "B"
    doc2["totalAmount"] = doc2["tenders"][0]["amountAuthorized"] = Decimal("10.12")
    assert record(ledger, r, dumps(doc2)).row.status == "failed"  # before: accepted


def test_id_type_follows_the_gtin_length_and_shipping_goes_through_the_table(ledger, db, rid):
    r = retailer_for(rid, shipment_methods={"003": "EXPRESS_OVERNIGHT"})
    doc = send_sale(2)
    doc["orderProductList"][0]["gtin"] = "4006381333931"  # EAN-13
    stored = record(ledger, r, dumps(doc))
    assert stored.row.status == "processed", stored.row.error
    payload = db.execute("SELECT oms_payload FROM orders WHERE id = %s", (stored.order_id,)).fetchone()[0]
    group = payload[0]["dataList"][0]["data"]["order"]["shipGroup"][0]
    assert group["items"][0]["idType"] == "EAN"  # before: UPCA
    assert group["shipmentMethodTypeId"] == "EXPRESS_OVERNIGHT"  # the TLog's shippingMethodId 003, mapped
    unknown = send_sale(3)
    unknown.pop("shippingMethodId", None)
    unknown["shippingName"] = "Carrier Pigeon"
    failed = record(ledger, r, dumps(unknown))
    assert failed.row.status == "failed"  # before: CARRIER_PIGEON was invented
    assert "shippingName 'Carrier Pigeon' has no shipment method mapping" in failed.row.error


# ------------------------------------------------------------------ returns (bug 8)


def test_returns_reconcile_with_their_sale(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    sale = in_store(10, quantity=1)
    sold = record(ledger, r, dumps(sale))
    first = make_return(1, sale, order_prefix=f"R{secrets.token_hex(3).upper()}")
    ok = record(ledger, r, dumps(first))
    assert ok.row.status == "processed", ok.row.error
    assert atp(db, rid, "254") == (6, 0)  # sellable: back on the shelf
    second = make_return(2, sale, order_prefix=f"R{secrets.token_hex(3).upper()}")
    refused = record(ledger, r, dumps(second))
    assert refused.row.status == "failed"  # before: the same line was refunded twice
    assert f"refunded already by return {first['orderId']}" in refused.row.error
    big = in_store(11, quantity=1)
    record(ledger, r, dumps(big))
    too_many = make_return(3, big, order_prefix=f"R{secrets.token_hex(3).upper()}")
    line = too_many["returnProductList"][0]
    line.update(quantity=2, subTotal=line["subTotal"] * 2, total=line["subTotal"] * 2)
    too_many.update(orderSubTotal=line["subTotal"], totalAmount=line["subTotal"] + too_many["taxSubTotal"])
    too_many["refundPaymentDetails"][0]["amount"] = too_many["totalAmount"]
    over = record(ledger, r, dumps(too_many))
    assert over.row.status == "failed" and "quantity 2 is more than sale" in over.row.error
    assert sold.order_id is not None


def test_damaged_returns_are_counted_non_sellable_and_an_exchange_links_to_its_sale(inventory, ledger, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 5})
    sale = in_store(12)
    record(ledger, r, dumps(sale))
    new_sale = in_store(13)
    exchange = record(ledger, r, dumps(new_sale))
    ret = make_return(4, sale, order_prefix=f"R{secrets.token_hex(3).upper()}")
    ret["returnProductList"][0]["productCondition"] = "DAMAGED"
    ret["exchangeOrderId"] = new_sale["orderId"]
    stored = record(ledger, r, dumps(ret))
    assert stored.row.status == "processed", stored.row.error
    row = db.execute(
        "SELECT quantity_on_hand, reserved, non_sellable FROM inventory WHERE retailer_id = %s AND facility_id = '254'",
        (rid,),
    ).fetchone()
    assert row == (5, 0, 1)  # before: back in sellable stock whatever productCondition said
    link = db.execute(
        "SELECT exchange_order_id, ri.condition, ri.original_item_seq FROM returns r JOIN return_items ri"
        " ON ri.return_id = r.id WHERE r.retailer_id = %s AND r.external_id = %s",
        (rid, ret["orderId"]),
    ).fetchone()
    assert link == (exchange.order_id, "DAMAGED", 1)
