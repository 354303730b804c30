"""Validation at the edge: what a TLog must hold, and the clear errors when it does not."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from tests.unit.helpers import SHARED, sample, to_bytes
from worker.core.tlog import IN_STORE, SHIP_TO_HOME, TLogError, decode, parse_sale, validate_sale
from worker.demo.tlogfactory import make_sale, sample_bytes


def reason_of(data: bytes) -> str:
    with pytest.raises(TLogError) as info:
        parse_sale(data)
    return str(info.value)


def test_bundled_samples_are_the_published_ones_unchanged():
    if not SHARED.exists():
        pytest.skip("shared/reference not beside the repository")
    for name in ("inStoreOrdersSample.json", "sendSaleOrdersSample.json", "createSalesOrderAPISample.json"):
        assert sample_bytes(name) == (SHARED / name).read_bytes()


def test_in_store_sample_parses_as_an_in_store_sale():
    sale = parse_sale(sample_bytes("inStoreOrdersSample.json"))
    assert sale.order_id == "PS00000283"
    assert sale.order_type == "IN_STORE"
    assert sale.total_amount == Decimal("424.62")
    assert [line.fulfillment for line in sale.lines] == [IN_STORE] * 3
    assert [line.item_seq for line in sale.lines] == [1, 2, 3]
    assert sale.lines[0].tax == Decimal("11.54")
    assert sale.store_time_zone == "UTC"


def test_send_sale_sample_parses_with_shipping_address():
    sale = parse_sale(sample_bytes("sendSaleOrdersSample.json"))
    assert sale.order_type == "SEND_SALE"
    assert {line.fulfillment for line in sale.lines} == {SHIP_TO_HOME}
    assert sale.shipping_address is not None and sale.shipping_address.postal_code == "91911"
    assert sale.shipping_sub_total == Decimal("30")


def test_money_is_decimal_never_float():
    sale = parse_sale(sample_bytes("sendSaleOrdersSample.json"))
    assert isinstance(sale.total_amount, Decimal)
    assert isinstance(sale.lines[0].tax, Decimal)
    assert str(sale.tax_sub_total) == "34.14"


def test_unknown_fields_are_ignored():
    doc = sample("inStoreOrdersSample.json")
    doc["aFieldFromANewerPosRelease"] = {"anything": [1, 2]}
    doc["orderProductList"][0]["newLineField"] = "x"
    assert parse_sale(to_bytes(doc)).order_id == "PS00000283"


def test_mixed_cart_is_classified_per_line():
    sale = validate_sale(make_sale(1, "MIXED", lines=2))
    assert sale.order_type == "MIXED"
    assert [line.fulfillment for line in sale.lines] == [IN_STORE, SHIP_TO_HOME]


def test_line_without_omni_type_falls_back_to_its_fulfillment_type():
    doc = sample("sendSaleOrdersSample.json")
    for line in doc["orderProductList"]:
        del line["omniFulfillmentType"]
    assert parse_sale(to_bytes(doc)).order_type == "SEND_SALE"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty file (0 bytes)"),
        (b"\xff\xfe{}", "not UTF-8: byte 0xff at offset 0"),
        (b'{"orderId": "A1",', "invalid JSON at line 1 column"),
        (b"[1, 2]", "top level must be a JSON object, found list"),
        (b'{"totalAmount": NaN}', "NaN is not a valid JSON number"),
        (b'{"totalAmount": Infinity}', "Infinity is not a valid JSON number"),
    ],
)
def test_undecodable_files_say_what_is_wrong(data, expected):
    assert expected in reason_of(data)


def test_missing_required_field_names_the_order_and_the_field():
    doc = sample("inStoreOrdersSample.json")
    del doc["orderProductList"][1]["gtin"]
    assert reason_of(to_bytes(doc)) == ("order PS00000283: orderProductList[1].gtin: Missing data for required field.")


def test_wrong_type_names_the_field():
    doc = sample("inStoreOrdersSample.json")
    doc["orderProductList"][0]["quantity"] = "two"
    assert "orderProductList[0].quantity: must be a whole number" in reason_of(to_bytes(doc))


@pytest.mark.parametrize("quantity", [0, -1, Decimal("1.5"), 10**9])
def test_quantity_must_be_a_positive_whole_number(quantity):
    doc = sample("inStoreOrdersSample.json")
    doc["orderProductList"][0]["quantity"] = quantity
    assert "orderProductList[0].quantity" in reason_of(to_bytes(doc))


def test_totals_that_do_not_reconcile_are_rejected():
    doc = sample("sendSaleOrdersSample.json")
    doc["totalAmount"] = Decimal("454.15")
    assert "totalAmount: 454.15 does not reconcile" in reason_of(to_bytes(doc))


def test_order_subtotal_must_equal_the_lines():
    doc = sample("inStoreOrdersSample.json")
    doc["orderProductList"][0]["subTotal"] = Decimal("120")
    assert "orderSubTotal: 390 differs from the sum of line subTotal (380)" in reason_of(to_bytes(doc))


def test_huge_numbers_are_out_of_range_not_a_crash():
    doc = sample("inStoreOrdersSample.json")
    text = to_bytes(doc).replace(b'"totalAmount": 424.62', b'"totalAmount": ' + b"9" * 5000)
    assert "totalAmount" in reason_of(text)


def test_deep_nesting_is_rejected_cleanly():
    deep = b'{"orderId": "X", "junk": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "nested" in reason_of(deep) or "invalid JSON" in reason_of(deep)


def test_ship_to_home_lines_need_a_shipping_address():
    doc = sample("sendSaleOrdersSample.json")
    del doc["shippingAddress"]
    assert "shippingAddress: required for ship-to-home lines" in reason_of(to_bytes(doc))


def test_repeated_line_ids_are_rejected():
    doc = sample("inStoreOrdersSample.json")
    doc["orderProductList"][1]["orderItemId"] = "1"
    assert "orderItemId values repeat" in reason_of(to_bytes(doc))


def test_bad_creation_date_is_named():
    doc = sample("inStoreOrdersSample.json")
    doc["creationDate"] = "12/01/2024"
    assert "creationDate: must be 'YYYY-MM-DD HH:MM:SS'" in reason_of(to_bytes(doc))


def test_order_id_with_path_characters_is_rejected():
    doc = sample("inStoreOrdersSample.json")
    doc["orderId"] = "../../etc/passwd"
    assert "orderId" in reason_of(to_bytes(doc))


def test_byte_order_mark_is_accepted():
    assert parse_sale(b"\xef\xbb\xbf" + sample_bytes("inStoreOrdersSample.json")).order_id == "PS00000283"


def test_decode_keeps_numbers_exact():
    assert decode(b'{"a": 0.1}')["a"] == Decimal("0.1")


def test_validation_does_not_modify_the_document():
    doc = sample("inStoreOrdersSample.json")
    before = copy.deepcopy(doc)
    validate_sale(doc)
    assert doc == before


def test_non_utf8_offset_counts_the_byte_order_mark():
    assert "byte 0xff at offset 5" in reason_of(b"\xef\xbb\xbfab\xff")


def test_line_ids_that_are_the_same_number_are_repeats():
    doc = sample("inStoreOrdersSample.json")
    doc["orderProductList"][1]["orderItemId"] = "01"
    assert "orderItemId values repeat" in reason_of(to_bytes(doc))


@pytest.mark.parametrize("value", ["1e20", "1" * 30, "1705077927000000", "1705077927", "-5"])
def test_an_order_date_that_is_not_milliseconds_in_range_is_named_not_a_crash(value):
    doc = sample("inStoreOrdersSample.json")
    doc["orderDate"] = "PLACEHOLDER"
    text = to_bytes(doc).replace(b'"PLACEHOLDER"', value.encode())
    reason = reason_of(text)
    assert "orderDate" in reason and "PS00000283" in reason


def test_an_order_date_in_milliseconds_is_kept():
    doc = sample("inStoreOrdersSample.json")
    doc["orderDate"] = 1705077927000
    assert parse_sale(to_bytes(doc)).order_date_ms == 1705077927000


@pytest.mark.parametrize(("where", "field"), [("customerProfile", "firstName"), ("line", "productId")])
def test_a_lone_surrogate_in_text_is_refused_with_the_field_named(where, field):
    doc = sample("inStoreOrdersSample.json")
    target = doc["orderProductList"][0] if where == "line" else doc.setdefault("customerProfile", {})
    target[field] = "SURROGATE"
    text = to_bytes(doc).replace(b'"SURROGATE"', b'"\\ud800"')
    reason = reason_of(text)
    assert field in reason and "surrogate" in reason


def test_a_duplicate_key_fails_the_file_naming_the_key_and_the_order():
    text = sample_bytes("inStoreOrdersSample.json").decode()
    doubled = text.replace('"creationDate"', '"creationDate": "2024-01-01 00:00:00", "creationDate"', 1)
    assert reason_of(doubled.encode()) == 'order PS00000283: invalid JSON: duplicate key "creationDate" in an object'
    nested = text.replace('"gtin"', '"gtin": "000", "gtin"', 1)
    assert reason_of(nested.encode()) == 'order PS00000283: invalid JSON: duplicate key "gtin" in an object'


def test_a_duplicate_order_id_names_no_order():
    assert reason_of(b'{"orderId": "A1", "orderId": "A2"}') == 'invalid JSON: duplicate key "orderId" in an object'
