"""A malformed-input corpus: mutated TLogs either become a consistent order or fail with a clear reason,
never an unhandled error."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.helpers import retailer
from worker.core.oms import order_parts_total
from worker.demo.tlogfactory import dumps, load_sample, make_sale
from worker.services.ingest import decide
from worker.services.ports import FAILED, PROCESSED

RETAILER = retailer()
TEMPLATES = [
    load_sample("inStoreOrdersSample.json"),
    load_sample("sendSaleOrdersSample.json"),
    make_sale(1, "MIXED", lines=3),
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    # decimals a JSON number written through a float keeps exactly (the factory's dumps refuses the others)
    st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12).filter(
        lambda d: d == d.to_integral_value() or Decimal(repr(float(d))) == d
    ),
    st.text(max_size=50),
    st.just(""),
    st.just("\u0000"),
    st.just("\ud7ff\ue000\U0010ffff"),
    st.just("é" * 3),
    st.just("🛍️"),
    st.just("-1"),
    st.just("1e309"),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)

FIELDS = [
    "orderId",
    "creationDate",
    "orderDate",
    "fulfillmentType",
    "storeId",
    "totalAmount",
    "orderSubTotal",
    "discount",
    "taxSubTotal",
    "shippingSubTotal",
    "shippingTax",
    "shippingName",
    "customerProfile",
    "billingAddress",
    "shippingAddress",
    "tenders",
    "orderProductList",
    "store",
]
LINE_FIELDS = [
    "orderItemId",
    "productId",
    "gtin",
    "name",
    "price",
    "quantity",
    "subTotal",
    "tax",
    "total",
    "productTax",
    "fulfillmentType",
    "omniFulfillmentType",
    "priceAdjustments",
]


def check(data: bytes) -> None:
    outcome = decide(data, RETAILER)
    assert outcome.status in (PROCESSED, FAILED, "skipped")
    if outcome.status == FAILED:
        assert outcome.error and len(outcome.error) < 20_000
        return
    order = outcome.order
    assert order is not None
    assert order_parts_total(order.payload).quantize(Decimal("0.01")) == order.grand_total.quantize(Decimal("0.01"))
    assert all(line.quantity > 0 for line in order.lines)
    json.dumps(order.payload, default=lambda v: str(v))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(TEMPLATES), field=st.sampled_from(FIELDS), value=json_values, delete=st.booleans())
def test_a_mutated_header_field_is_accepted_consistently_or_rejected_clearly(template, field, value, delete):
    doc = copy.deepcopy(template)
    if delete:
        doc.pop(field, None)
    else:
        doc[field] = value
    check(dumps(doc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    template=st.sampled_from(TEMPLATES),
    field=st.sampled_from(LINE_FIELDS),
    value=json_values,
    delete=st.booleans(),
    index=st.integers(0, 2),
)
def test_a_mutated_line_field_is_accepted_consistently_or_rejected_clearly(template, field, value, delete, index):
    doc = copy.deepcopy(template)
    lines = doc["orderProductList"]
    line = lines[index % len(lines)]
    if delete:
        line.pop(field, None)
    else:
        line[field] = value
    check(dumps(doc))


@settings(max_examples=100, deadline=None)
@given(quantity=st.integers(-5, 5), price=st.decimals(-10, 10**7, places=2, allow_nan=False))
def test_negative_or_zero_quantities_and_odd_prices_never_slip_through(quantity, price):
    doc = copy.deepcopy(TEMPLATES[0])
    doc["orderProductList"][0].update(quantity=quantity, price=price)
    outcome = decide(dumps(doc), RETAILER)
    if quantity <= 0 or price < 0:
        assert outcome.status == FAILED and "orderProductList[0]" in (outcome.error or "")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    check(data)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 2000))
def test_truncated_files_fail_with_a_reason(cut):
    data = dumps(TEMPLATES[1])
    if cut < len(data):
        outcome = decide(data[:cut], RETAILER)
        assert outcome.status == FAILED and outcome.error


def test_special_numbers_are_refused():
    base = dumps(TEMPLATES[0]).decode()
    for token in ("NaN", "Infinity", "-Infinity"):
        outcome = decide(base.replace('"discount": 0', f'"discount": {token}').encode(), RETAILER)
        assert outcome.status == FAILED and token in (outcome.error or "")


def test_deep_nesting_is_refused():
    doc: dict[str, Any] = copy.deepcopy(TEMPLATES[0])
    nested: Any = "x"
    for _ in range(200):
        nested = [nested]
    doc["somethingNew"] = nested
    outcome = decide(dumps(doc), RETAILER)
    assert outcome.status == FAILED and "nested" in (outcome.error or "")


def test_a_ten_megabyte_string_is_handled():
    doc = copy.deepcopy(TEMPLATES[0])
    doc["orderProductList"][0]["name"] = "x" * (10 * 1024 * 1024)
    outcome = decide(dumps(doc), RETAILER)
    assert outcome.status == FAILED and "orderProductList[0].name" in (outcome.error or "")
    doc = copy.deepcopy(TEMPLATES[0])
    doc["unusedVendorField"] = "y" * (10 * 1024 * 1024)  # unknown fields are ignored, whatever their size
    assert decide(dumps(doc), RETAILER).status == PROCESSED


def test_unicode_edge_cases_in_names_are_kept():
    doc = copy.deepcopy(TEMPLATES[1])
    doc["shippingAddress"]["firstName"] = "Zoë 🛍️ Ω\u200d"
    outcome = decide(dumps(doc), RETAILER)
    assert outcome.status == PROCESSED
    assert (
        "Zoë 🛍️"
        in outcome.order.payload[0]["dataList"][0]["data"]["order"]["shipGroup"][0]["shipTo"]["postalAddress"]["name"]
    )
