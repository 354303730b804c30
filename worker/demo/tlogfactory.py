"""Realistic TLog files for the demo, the tests and the benchmark, built on the published samples.

Generated sales reconcile exactly (lines, tax, shipping, tenders), so anything that fails
validation does so because a test broke it on purpose.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

from worker.core.money import cents, loads_decimal
from worker.core.oms import json_default


def load_sample(name: str) -> dict[str, Any]:
    """A published sample (inStoreOrdersSample.json, sendSaleOrdersSample.json, createSalesOrderAPISample.json)."""
    text = resources.files("worker.demo.data").joinpath(name).read_text(encoding="utf-8")
    return loads_decimal(text)  # type: ignore[no-any-return]


def sample_bytes(name: str) -> bytes:
    return resources.files("worker.demo.data").joinpath(name).read_bytes()


@dataclass(frozen=True)
class Product:
    product_id: str
    gtin: str
    name: str
    price: Decimal


CATALOG = (
    Product("VLAKOTA0001050", "197076109628", "LAKOTA HEELS BLACK LEATHER 5", Decimal("130")),
    Product("VLAKOTA0001055", "197076109635", "LAKOTA HEELS BLACK LEATHER 5.5", Decimal("130")),
    Product("VLAKOTA0001060", "197076109642", "LAKOTA HEELS BLACK LEATHER 6", Decimal("130")),
    Product("VPAILY0001070", "197076200011", "PAILY SANDAL TAN 7", Decimal("89.95")),
    Product("VPAILY0001080", "197076200028", "PAILY SANDAL TAN 8", Decimal("89.95")),
    Product("VDASA0001090", "197076300017", "DASA BOOT ONYX 9", Decimal("189.99")),
    Product("VSOCK0000001", "197076400014", "CREW SOCK 3-PACK", Decimal("14.50")),
)

STORES = ("254", "255", "301")

# Three stores and a distribution center with coordinates, every one allowed to broker, no daily limit:
# the network of the benchmark and the fault suite, where the arithmetic must be exact.
NETWORK_FACILITIES_CSV = """\
facility_id,name,facility_type,postal_code,latitude,longitude,allow_brokering,max_orders_per_day,facility_group,sequence
254,SOHO,RETAIL_STORE,10012,40.7220,-73.9999,true,,STORES,2
255,BROOKLYN,RETAIL_STORE,11201,40.6943,-73.9903,true,,STORES,3
301,LOS ANGELES,RETAIL_STORE,90012,34.0614,-118.2385,true,,STORES,1
DC1,RENO DC,WAREHOUSE,89502,39.5296,-119.8138,true,,DC,1
"""
TAX_RATE = Decimal("0.08875")


def make_sale(
    seq: int,
    kind: str = "IN_STORE",
    store_id: str = "254",
    rng: random.Random | None = None,
    order_prefix: str = "GEN",
    created: datetime | None = None,
    lines: int | None = None,
    products: tuple[Product, ...] = CATALOG,
    register_txn: int | None = None,
    register_id: str = "ANY",
) -> dict[str, Any]:
    """A TLog document; kind is IN_STORE, SEND_SALE or MIXED. Its register transaction number is seq unless
    register_txn says otherwise; its tax is one jurisdiction's (header taxRates), as much as the lines'."""
    rng = rng or random.Random(seq)
    template = load_sample("sendSaleOrdersSample.json" if kind != "IN_STORE" else "inStoreOrdersSample.json")
    doc = copy.deepcopy(template)
    order_id = f"{order_prefix}{seq:08d}"
    created = created or datetime(2024, 1, 12, 16, 0, tzinfo=UTC) + timedelta(seconds=seq * 7)
    count = lines or rng.randint(1, 3)
    chosen = rng.sample(products, k=min(count, len(products)))
    line_template = template["orderProductList"][0]
    product_lines = []
    for index, product in enumerate(chosen, 1):
        quantity = rng.choice((1, 1, 1, 2))
        sub_total = cents(product.price * quantity)
        tax = cents(sub_total * TAX_RATE)
        ship = kind == "SEND_SALE" or (kind == "MIXED" and index % 2 == 0)
        line = copy.deepcopy(line_template)
        line.update(
            {
                "orderItemId": str(index),
                "productId": product.product_id,
                "gtin": product.gtin,
                "name": product.name,
                "price": product.price,
                "quantity": quantity,
                "subTotal": sub_total,
                "tax": tax,
                "total": sub_total + tax,
                "productTax": {"totalTax": tax, "taxRates": []},
                "fulfillmentType": "ONLINE" if ship else "IN_STORE",
                "omniFulfillmentType": "SHIP_TO_HOME" if ship else "IN_STORE",
            }
        )
        product_lines.append(line)
    sub_total = sum((line["subTotal"] for line in product_lines), Decimal(0))
    tax_total = sum((line["tax"] for line in product_lines), Decimal(0))
    shipping = Decimal("30") if kind != "IN_STORE" else Decimal(0)
    total = sub_total + tax_total + shipping
    doc.update(
        {
            "orderId": order_id,
            "storeId": store_id,
            "creationDate": created.strftime("%Y-%m-%d %H:%M:%S"),
            "orderDate": int(created.timestamp() * 1000),
            "updateDate": int(created.timestamp() * 1000),
            "orderSubTotal": sub_total,
            "taxSubTotal": tax_total,
            "discount": Decimal(0),
            "totalAmount": total,
            "orderProductList": product_lines,
            "productList": copy.deepcopy(product_lines),
            "fulfillmentType": "IN_STORE" if kind == "IN_STORE" else "ONLINE",
            "isSplitCart": kind == "MIXED",
        }
    )
    doc["store"] = dict(doc["store"], storeId=store_id)
    if kind != "IN_STORE":
        doc["shippingSubTotal"], doc["shippingTax"] = shipping, Decimal(0)
    tender = dict(doc["tenders"][0], orderId=order_id, amountAuthorized=total)
    doc["tenders"] = [tender]
    doc["orderAttribution"] = {"storeRegisterId": register_id, "registerTransactionId": str(register_txn or seq)}
    doc["taxRates"] = [
        {"taxType": "STATE", "chargeType": "TAX", "taxRate": TAX_RATE, "taxAmount": tax_total, "taxName": "STATE TAX"}
    ]
    doc.pop("orderActivityLog", None)
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, default=json_default, indent=1).encode()


def mix(count: int, seed: int = 7, bad_every: int = 0, order_prefix: str = "GEN") -> list[tuple[str, bytes]]:
    """(file name, bytes) for count files: mostly in-store, a share of send-sale and mixed carts,
    and every bad_every-th file broken (0: none). Each store's register POS1 numbers its sales without a gap."""
    rng = random.Random(seed)
    files = []
    rung: dict[str, int] = {}  # each store's register numbers its transactions 1, 2, 3, ...
    for seq in range(1, count + 1):
        roll = rng.random()
        kind = "IN_STORE" if roll < 0.6 else "SEND_SALE" if roll < 0.9 else "MIXED"
        store = rng.choice(STORES)
        rung[store] = rung.get(store, 0) + 1
        doc = make_sale(seq, kind, store, rng, order_prefix=order_prefix, register_txn=rung[store], register_id="POS1")
        data = dumps(doc)
        if bad_every and seq % bad_every == 0:
            data = BAD_VARIANTS[(seq // bad_every) % len(BAD_VARIANTS)](doc)
        stamp = (datetime(2024, 1, 12, tzinfo=UTC) + timedelta(milliseconds=seq)).strftime("%Y-%m-%d-%H_%M_%S_%f")
        files.append((f"{order_prefix.lower()}_OrderTLog_{stamp}_{seq:06d}.json", data))
    return files


def _without_gtin(doc: dict[str, Any]) -> bytes:
    doc = copy.deepcopy(doc)
    del doc["orderProductList"][0]["gtin"]
    return dumps(doc)


def _bad_total(doc: dict[str, Any]) -> bytes:
    return dumps(dict(doc, totalAmount=doc["totalAmount"] + Decimal("1.00")))


BAD_VARIANTS = (
    lambda doc: dumps(doc)[:-40],  # truncated: invalid JSON
    _without_gtin,
    _bad_total,
)


def make_return(
    seq: int,
    original: dict[str, Any] | None = None,
    store_id: str = "254",
    order_prefix: str = "RET",
    created: datetime | None = None,
    product_class: str = "Merchandise",
    register_txn: int | None = None,
) -> dict[str, Any]:
    """A return TLog: the first line of `original` (or of a fresh sale) comes back, refunded in cash. Its register
    transaction number is seq unless register_txn says otherwise."""
    source = original or make_sale(seq, "IN_STORE", store_id=store_id, lines=1, order_prefix=f"{order_prefix}S")
    line = copy.deepcopy(source["orderProductList"][0])
    line.update(orderItemId="1", productClass=product_class, reasons=[{"reasonCode": "DID_NOT_FIT"}])
    if original is not None:
        line["originalOrderId"] = original["orderId"]
    sub_total, tax = line["subTotal"], line["tax"]
    created = created or datetime(2024, 1, 12, 18, 0, tzinfo=UTC) + timedelta(seconds=seq)
    doc = copy.deepcopy(load_sample("inStoreOrdersSample.json"))
    doc.update(
        {
            "orderId": f"{order_prefix}{seq:08d}",
            "storeId": store_id,
            "creationDate": created.strftime("%Y-%m-%d %H:%M:%S"),
            "orderDate": int(created.timestamp() * 1000),
            "orderProductList": [],
            "productList": [],
            "returnProductList": [line],
            "orderSubTotal": sub_total,
            "taxSubTotal": tax,
            "discount": Decimal(0),
            "totalAmount": sub_total + tax,
            "tenders": [],
            "refundPaymentDetails": [{"paymentMethod": "Cash", "amount": sub_total + tax, "paymentStatus": "APPROVED"}],
        }
    )
    if original is not None:
        doc["originalOrderId"] = original["orderId"]
    doc["orderAttribution"] = {"storeRegisterId": "ANY", "registerTransactionId": str(register_txn or seq)}
    doc["taxRates"] = [
        {"taxType": "STATE", "chargeType": "TAX", "taxRate": TAX_RATE, "taxAmount": tax, "taxName": "STATE TAX"}
    ]
    doc.pop("orderActivityLog", None)
    return doc
