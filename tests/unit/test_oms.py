"""The OMS createSalesOrder mapping, checked field by field against the published sample."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest

from tests.unit.helpers import retailer, sample, to_bytes
from worker.core.oms import json_default, order_parts_total, shipment_method, to_order
from worker.core.tlog import TLogError, parse_sale, validate_sale
from worker.demo.tlogfactory import make_sale, sample_bytes


def roundtrip(payload):
    """What PostgreSQL's jsonb and the OMS API see: JSON text."""
    return json.loads(json.dumps(payload, default=json_default))


def published_expected():
    """createSalesOrderAPISample.json with its known defects corrected (DOMAIN.md)."""
    expected = json.loads(sample_bytes("createSalesOrderAPISample.json"))
    order = expected[0]["dataList"][0]["data"]["order"]
    order["lastName"] = order.pop("LastName")  # defect: capital L
    tlog = json.loads(sample_bytes("sendSaleOrdersSample.json"))
    for item, line in zip(order["shipGroup"][0]["items"], tlog["orderProductList"], strict=True):
        # defect: unitPrice was mapped from quantity and quantity fixed at 1; here both are 1 and 130,
        # so the published values happen to be right and stay as they are.
        assert (item["quantity"], item["unitPrice"]) == (line["quantity"], line["price"])
    return expected


def test_send_sale_sample_converts_to_the_published_oms_json_field_by_field():
    order = to_order(parse_sale(sample_bytes("sendSaleOrdersSample.json")), retailer())
    got, expected = roundtrip(order.payload), published_expected()
    got_order = got[0]["dataList"][0]["data"]["order"]
    exp_order = expected[0]["dataList"][0]["data"]["order"]
    assert set(got_order) == set(exp_order)
    for key in exp_order:
        if key != "shipGroup":
            assert got_order[key] == exp_order[key], key
    got_group, exp_group = got_order["shipGroup"][0], exp_order["shipGroup"][0]
    assert set(got_group) == set(exp_group)
    for key in exp_group:
        assert got_group[key] == exp_group[key], key
    assert got[0]["dataList"][1] == expected[0]["dataList"][1]  # createExcludedOrderFacilityForOrder
    assert got == expected


def test_unit_price_and_quantity_are_not_swapped_as_in_the_published_mapping():
    doc = sample("sendSaleOrdersSample.json")
    line = doc["orderProductList"][0]
    line["quantity"], line["subTotal"] = 3, Decimal("390")
    doc["orderSubTotal"] = Decimal("650")
    doc["totalAmount"] = doc["orderSubTotal"] + doc["taxSubTotal"] + doc["shippingSubTotal"]
    doc["tenders"][0]["amountAuthorized"] = doc["totalAmount"]
    order = to_order(parse_sale(to_bytes(doc)), retailer())
    item = order.payload[0]["dataList"][0]["data"]["order"]["shipGroup"][0]["items"][0]
    assert (item["quantity"], item["unitPrice"]) == (3, Decimal("130"))
    assert order.lines[0].quantity == 3


def test_in_store_sample_is_a_completed_order_at_the_store():
    order = to_order(parse_sale(sample_bytes("inStoreOrdersSample.json")), retailer())
    data = roundtrip(order.payload)[0]["dataList"]
    assert [d["serviceName"] for d in data] == ["createSalesOrder"]  # nothing to exclude: no brokering
    body = data[0]["data"]["order"]
    assert body["statusId"] == "ORDER_COMPLETED"
    assert body["grandTotal"] == 424.62
    group = body["shipGroup"][0]
    assert group["facilityId"] == "254" and group["orderFacilityId"] == "254"
    assert {i["status"] for i in group["items"]} == {"ITEM_COMPLETED"}
    assert body["orderPaymentPref"] == [
        {"statusId": "PAYMENT_SETTLED", "paymentMethodTypeId": "CASH", "maxAmount": 424.62}
    ]
    assert body["orderAdjustments"] == []
    assert order.order_type == "IN_STORE"
    assert [(x.facility_id, x.status_id) for x in order.lines] == [("254", "ITEM_COMPLETED")] * 3


def test_mixed_cart_gets_one_ship_group_per_fulfillment():
    order = to_order(validate_sale(make_sale(5, "MIXED", lines=3)), retailer())
    groups = order.payload[0]["dataList"][0]["data"]["order"]["shipGroup"]
    assert [g["facilityId"] for g in groups] == ["254", "_NA_"]
    assert [len(g["items"]) for g in groups] == [2, 1]
    assert order.status_id == "ORDER_APPROVED" and order.order_type == "MIXED"
    assert order.payload[0]["dataList"][1]["serviceName"] == "createExcludedOrderFacilityForOrder"


def test_discounts_are_kept_as_negative_adjustments_and_the_order_adds_up():
    doc = sample("inStoreOrdersSample.json")
    doc["orderProductList"][0]["priceAdjustments"] = [{"priceAdjustmentType": "PROMOTION", "amount": 10}]
    doc["discount"] = Decimal("15")  # 10 on the line, 5 on the order
    doc["totalAmount"] = Decimal("409.62")
    doc["tenders"][0]["amountAuthorized"] = Decimal("409.62")
    order = to_order(parse_sale(to_bytes(doc)), retailer())
    body = order.payload[0]["dataList"][0]["data"]["order"]
    first_item = body["shipGroup"][0]["items"][0]
    assert {"type": "PROMOTION_ADJUSTMENT", "amount": Decimal("-10")} in first_item["itemAdjustments"]
    assert {"type": "DISCOUNT_ADJUSTMENT", "amount": Decimal("-5")} in body["orderAdjustments"]
    assert order_parts_total(order.payload) == Decimal("409.62")
    assert order.lines[0].line_total == Decimal("130") - 10 + Decimal("11.54")
    assert [a.adjustment_type for a in order.adjustments].count("PROMOTION_ADJUSTMENT") == 1


def test_unmapped_payment_method_is_a_clear_error():
    doc = sample("inStoreOrdersSample.json")
    doc["tenders"][0]["paymentMethod"] = "Seashells"
    with pytest.raises(TLogError, match=r"tenders\[0\].paymentMethod: 'Seashells' has no payment method mapping"):
        to_order(parse_sale(to_bytes(doc)), retailer())


def test_retailer_payment_map_extends_the_defaults():
    doc = sample("inStoreOrdersSample.json")
    doc["tenders"][0]["paymentMethod"] = "Seashells"
    order = to_order(parse_sale(to_bytes(doc)), retailer(payment_methods={"Seashells": "EXT_SHELLS"}))
    assert order.payments[0].payment_method_type_id == "EXT_SHELLS"


def test_declined_tenders_are_kept_but_not_counted():
    doc = sample("inStoreOrdersSample.json")
    declined = dict(doc["tenders"][0], paymentStatus="DECLINED")
    doc["tenders"] = [declined] + doc["tenders"]
    order = to_order(parse_sale(to_bytes(doc)), retailer())
    counted = [p for p in order.payments if p.status_id in ("PAYMENT_SETTLED", "PAYMENT_AUTHORIZED")]
    assert len(counted) == 1 and counted[0].amount == Decimal("424.62")
    assert [p.status_id for p in order.payments] == ["PAYMENT_DECLINED", "PAYMENT_SETTLED"]


def test_guest_customer_is_na():
    doc = sample("inStoreOrdersSample.json")
    doc["customerProfile"] = {"customerId": "NA"}
    body = to_order(parse_sale(to_bytes(doc)), retailer()).payload[0]["dataList"][0]["data"]["order"]
    assert body["customerExternalId"] == "NA"
    doc.pop("customerProfile")
    body = to_order(parse_sale(to_bytes(doc)), retailer()).payload[0]["dataList"][0]["data"]["order"]
    assert body["customerExternalId"] == "NA"


def test_shipment_method_comes_from_the_retailer_map_or_the_name():
    assert shipment_method(retailer(), "Next Day") == "NEXT_DAY"
    assert shipment_method(retailer(shipment_methods={"Next Day": "EXPRESS"}), "Next Day") == "EXPRESS"
    assert shipment_method(retailer(), None) == "STANDARD"


def test_may_split_follows_the_retailer():
    order = to_order(parse_sale(sample_bytes("sendSaleOrdersSample.json")), retailer(may_split=False))
    assert order.payload[0]["dataList"][0]["data"]["order"]["shipGroup"][0]["maySplit"] == "N"


def test_json_default_keeps_cents_exact():
    assert (
        json.dumps([Decimal("454.14"), Decimal("130"), Decimal("0.10")], default=json_default) == "[454.14, 130, 0.1]"
    )


def test_every_generated_order_adds_up_to_its_grand_total():
    for seq in range(200):
        kind = ("IN_STORE", "SEND_SALE", "MIXED")[seq % 3]
        order = to_order(validate_sale(make_sale(seq, kind)), retailer())
        assert order_parts_total(order.payload) == order.grand_total


def test_conversion_does_not_modify_the_sale():
    sale = parse_sale(sample_bytes("sendSaleOrdersSample.json"))
    before = copy.deepcopy(sale)
    to_order(sale, retailer())
    assert sale == before
