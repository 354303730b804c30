"""Issue 13 in the pure core: one source of truth for in-store decrements, the fulfilment file, tenders,
voids, identifiers, shipping methods, returns' conditions, corrections."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from tests.unit.helpers import retailer, sample, to_bytes
from worker.core.inventory import InputError
from worker.core.lifecycle import (
    ActionRefused,
    StoredItem,
    cancel,
    judge_correction,
    order_status,
    parse_fulfillment_file,
    payload_diff,
    reject,
    ship,
)
from worker.core.oms import id_type, payment_status, to_order
from worker.core.retailers import ConfigError
from worker.core.returns import condition_of, to_return
from worker.core.routing import followups_for
from worker.core.tlog import TLogError, parse_sale
from worker.demo.tlogfactory import make_return

SFTP = {
    "host": "h",
    "username": "u",
    "private_key": "/k",
    "known_hosts": "/kh",
    "orders_dir": "/in",
    "archive_dir": "/in/archive",
    "error_dir": "/in/error",
}
VARIANCE = {"variance_dir": "/v", "variance_archive_dir": "/v/a", "variance_error_dir": "/v/e"}


# ------------------------------------------------------------------ one source of truth


def test_an_order_master_with_a_variance_feed_must_say_who_lowers_stock():
    with pytest.raises(ConfigError) as err:
        retailer(sftp={**SFTP, **VARIANCE})
    message = str(err.value)
    assert "retailer 'acme'" in message and "order_master" in message and "sftp.variance_dir" in message
    assert "in_store_decrements" in message


def test_a_contradictory_in_store_decrements_stops_start_up_naming_the_keys():
    with pytest.raises(ConfigError, match='in_store_decrements = "sales" contradicts order_master = false'):
        retailer(order_master=False, in_store_decrements="sales", sftp={**SFTP, **VARIANCE})
    with pytest.raises(ConfigError, match='in_store_decrements = "variance_feed" needs sftp.variance_dir'):
        retailer(in_store_decrements="variance_feed")


def test_who_lowers_stock_decides_the_inventory_follow_up():
    sale = parse_sale(to_bytes(sample("inStoreOrdersSample.json")))
    by_sales = retailer(in_store_decrements="sales", sftp={**SFTP, **VARIANCE})
    by_feed = retailer(in_store_decrements="variance_feed", sftp={**SFTP, **VARIANCE})
    assert followups_for(to_order(sale, by_sales), by_sales) == ("inventory",)
    assert followups_for(to_order(sale, by_feed), by_feed) == ()
    assert retailer().in_store_decrements == "sales" and retailer(order_master=False).in_store_decrements == (
        "variance_feed"
    )


# ------------------------------------------------------------------ the fulfilment file


def test_a_fulfilment_file_is_csv_or_json_told_apart_by_content():
    csv = (
        b"orderId,itemSeq,facilityId,quantity,status,trackingCode,reason\n"
        b"A1,1,301,1,shipped,1Z,\nA1,x,301,1,SHIPPED,,\n"
    )
    parsed = parse_fulfillment_file(csv)
    assert parsed.format == "csv" and [(r.external_id, r.item_seq, r.status) for r in parsed.records] == [
        ("A1", 1, "SHIPPED")
    ]
    assert [r.reason for r in parsed.rejected] == ["line 3: itemSeq: 'x' is not a whole number"]
    js = b'[{"orderId": "A1", "itemSeq": 2, "facilityId": "DC1", "status": "REJECTED", "reason": "no stock"}]'
    parsed = parse_fulfillment_file(js)
    assert parsed.format == "json" and parsed.records[0].reason == "no stock" and parsed.records[0].quantity is None
    with pytest.raises(InputError, match="missing columns: facilityId, status"):
        parse_fulfillment_file(b"orderId,itemSeq\nA,1\n")
    with pytest.raises(InputError, match="empty"):
        parse_fulfillment_file(b"")


def item(status="ITEM_APPROVED", facility="301", fulfillment="SHIP_TO_HOME", quantity=2):
    return StoredItem(1, fulfillment, status, facility, quantity, "197076109628")


def test_ship_reject_cancel_move_the_right_stock():
    assert ship(item(), "301", None, "w").ship == 2
    rejected = reject(item(), None, "no stock", "w")
    assert (rejected.release, rejected.facility_id, rejected.exclude) == (2, "_NA_", "301")
    assert cancel(item(), "w").release == 2
    assert cancel(item(facility="_NA_"), "w").release == 0  # nothing was reserved in the queue
    with pytest.raises(ActionRefused, match="allocated to 301, not DC1"):
        ship(item(), "DC1", None, "order A line 1")
    with pytest.raises(ActionRefused, match="not allocated to a facility yet"):
        ship(item(facility="_NA_"), None, None, "w")
    with pytest.raises(ActionRefused, match="cancelled already"):
        reject(item(status="ITEM_CANCELLED"), None, None, "w")
    assert order_status(["ITEM_COMPLETED", "ITEM_CANCELLED"]) == "ORDER_COMPLETED"
    assert order_status(["ITEM_CANCELLED"]) == "ORDER_CANCELLED"
    assert order_status(["ITEM_COMPLETED", "ITEM_APPROVED"]) == "ORDER_APPROVED"


# ------------------------------------------------------------------ tenders, voids, identifiers, shipping


def test_payment_status_follows_the_capture_status():
    assert payment_status("APPROVED", "CAPTURED") == "PAYMENT_SETTLED"
    assert payment_status("APPROVED", "AUTHORIZED") == "PAYMENT_AUTHORIZED"
    assert payment_status("APPROVED", "NOT_CAPTURED") == "PAYMENT_AUTHORIZED"
    assert payment_status("DECLINED", None) == "PAYMENT_DECLINED"
    assert payment_status("VOIDED", "CAPTURED") == "PAYMENT_VOIDED"
    assert payment_status(None, None) == "PAYMENT_SETTLED"


def test_a_sale_whose_tenders_do_not_reconcile_fails_naming_the_amounts():
    doc = sample("inStoreOrdersSample.json")
    doc["tenders"][0]["amountAuthorized"] = Decimal("1.00")
    with pytest.raises(TLogError, match="approved tenders add up to 1.00, not totalAmount 424.62"):
        to_order(parse_sale(to_bytes(doc)), retailer())
    doc["tenders"][0].update(amountAuthorized=Decimal("500.00"), changeBackAmount=Decimal("75.38"))
    order = to_order(parse_sale(to_bytes(doc)), retailer())
    assert [(p.amount, p.status_id) for p in order.payments] == [(Decimal("424.62"), "PAYMENT_SETTLED")]


def test_voided_sales_and_lines_are_cancelled():
    doc = sample("inStoreOrdersSample.json")
    doc["orderStatus"] = "CANCELLED"
    order = to_order(parse_sale(to_bytes(doc)), retailer())
    assert order.status_id == "ORDER_CANCELLED" and {x.status_id for x in order.lines} == {"ITEM_CANCELLED"}
    assert followups_for(order, retailer()) == ()
    doc = sample("inStoreOrdersSample.json")
    lines = doc["orderProductList"]
    assert len(lines) >= 2
    voided = lines[-1]
    voided["itemStatus"] = "VOIDED"
    kept_total = doc["totalAmount"] - voided["subTotal"] - (voided.get("productTax") or {}).get("totalTax", 0)
    doc["orderSubTotal"] -= voided["subTotal"]
    doc["taxSubTotal"] -= (voided.get("productTax") or {}).get("totalTax", 0)
    doc["discount"] = sum(
        (abs(a["amount"]) for line in lines[:-1] for a in line.get("priceAdjustments") or []), Decimal(0)
    )
    doc["totalAmount"] = doc["orderSubTotal"] - doc["discount"] + doc["taxSubTotal"]
    doc["tenders"][0]["amountAuthorized"] = doc["totalAmount"]
    assert kept_total is not None
    order = to_order(parse_sale(to_bytes(doc)), retailer())
    assert order.status_id == "ORDER_COMPLETED"
    assert [x.status_id for x in order.lines][-1] == "ITEM_CANCELLED"


def test_id_type_comes_from_the_gtin_length():
    assert [id_type(g) for g in ("197076109628", "4006381333931", "00012345678905", "96385074")] == [
        "UPCA",
        "EAN",
        "GTIN",
        "EAN",
    ]


def test_shipping_methods_go_through_the_retailers_table_and_an_unknown_one_fails():
    doc = sample("sendSaleOrdersSample.json")
    order = to_order(parse_sale(to_bytes(doc)), retailer(shipment_methods={"003": "EXPRESS"}))
    assert order.payload[0]["dataList"][0]["data"]["order"]["shipGroup"][0]["shipmentMethodTypeId"] == "EXPRESS"
    unknown = copy.deepcopy(doc)
    unknown["shippingName"], unknown["shippingMethodId"] = "Drone", "099"
    with pytest.raises(TLogError, match="shippingMethodId '099' / shippingName 'Drone' has no shipment method"):
        to_order(parse_sale(to_bytes(unknown)), retailer())


# ------------------------------------------------------------------ returns and corrections


def test_product_condition_or_reason_decides_restock():
    assert condition_of("Damaged", None) == "DAMAGED" and condition_of("NEW", "DAMAGED") == "SELLABLE"
    assert condition_of(None, "DEFECTIVE") == "DAMAGED" and condition_of(None, "DID_NOT_FIT") == "SELLABLE"
    doc = make_return(1)
    doc["returnProductList"][0]["productCondition"] = "DEFECTIVE"
    ret = to_return(doc, retailer())
    assert ret.lines[0].condition == "DAMAGED" and not ret.lines[0].restock


def test_a_correction_is_judged_by_its_update_date_and_what_it_changes():
    old = [{"a": 1, "b": {"status": "ITEM_COMPLETED"}}]
    new = [{"a": 2, "b": {"status": "ITEM_CANCELLED"}}]
    diff = payload_diff(old, new)
    assert diff == [
        {"field": "[0].a", "stored": 1, "received": 2},
        {"field": "[0].b.status", "stored": "ITEM_COMPLETED", "received": "ITEM_CANCELLED"},
    ]
    assert judge_correction(10, 10, diff, set(), False, set()).outcome == "conflict"
    assert judge_correction(10, None, diff, set(), False, set()).outcome == "conflict"
    assert judge_correction(10, 11, diff, {1}, True, set()).outcome == "cancel"
    assert judge_correction(10, 11, diff, set(), True, set()).outcome == "refuse"
    assert judge_correction(10, 11, diff, set(), False, set()).outcome == "replace"
