"""The demo's brokering part: a brokering run with two routings (next-day orders from stores within 500 km,
everything else from the distribution center) over a few send-sale orders, then one order's explained decision,
as `tlogsync order show` prints it."""

from __future__ import annotations

import uuid

from rich.console import Console

from worker.adapters.postgres.brokering import PgBrokeringViews
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.ledger import PgFileLedger
from worker.adapters.postgres.pool import open_pool
from worker.adapters.postgres.routing import PgRouting
from worker.cli.orders import print_order
from worker.core.brokering_config import parse_brokering
from worker.core.inventory import parse_facilities_csv, parse_inventory_csv
from worker.core.retailers import parse_retailers
from worker.demo.tlogfactory import CATALOG, dumps, make_sale
from worker.services.ingest import decide
from worker.services.ports import Claim
from worker.services.routing import run_brokering

RETAILER = "dv_routings"

BROKERING = {
    "routings": [
        {
            "name": "next day from stores",
            "shipping_methods": ["NEXT_DAY"],
            "sort": ["order_date"],
            "rules": [
                {"name": "stores within 500 km", "facility_group": "STORES", "max_distance": 500, "safety_stock": 1,
                 "action": "move_to_queue", "queue": "BACKORDER_PARKING"},
            ],
        },
        {
            "name": "standard from the DC",
            "exclude_shipping_methods": ["NEXT_DAY"],
            "rules": [{"name": "distribution center", "facility_group": "DC", "auto_cancel_days": 7}],
        },
    ]
}  # fmt: skip

FACILITIES = """\
facility_id,name,facility_type,postal_code,latitude,longitude,allow_brokering,max_orders_per_day,facility_group,sequence,time_zone
254,DV SOHO STORE,RETAIL_STORE,10012,40.7220,-73.9999,true,40,STORES,2,America/New_York
301,DV LOS ANGELES STORE,RETAIL_STORE,90012,34.0614,-118.2385,true,40,STORES,1,America/Los_Angeles
302,DV SAN DIEGO STORE,RETAIL_STORE,92101,32.7157,-117.1611,true,40,STORES,3,America/Los_Angeles
DC1,DV RENO DC,WAREHOUSE,89502,,,true,,DC,1,America/Los_Angeles
"""


def _retailer():  # type: ignore[no-untyped-def]
    table = {
        "product_store_id": "DV_STORE",
        "currency": "USD",
        "order_master": True,
        "may_split": True,
        "poll_seconds": 3600,
        "brokering": BROKERING,
        "sftp": {
            "host": "127.0.0.1",
            "username": "demo",
            "private_key": "/dev/null",
            "known_hosts": "/dev/null",
            "orders_dir": "/in",
            "archive_dir": "/in/archive",
            "error_dir": "/in/error",
        },
    }
    return parse_retailers({"retailers": {RETAILER: table}}, "the brokering demo")[RETAILER]


def _sale(seq: int, shipping: str, postal: str, gtin: str, quantity: int = 1) -> dict:  # type: ignore[type-arg]
    doc = make_sale(seq, "SEND_SALE", store_id="254", lines=1, order_prefix=f"BRK{uuid.uuid4().hex[:4].upper()}")
    product = next(p for p in CATALOG if p.gtin == gtin)
    line = doc["orderProductList"][0]
    sub = product.price * quantity
    line.update(gtin=gtin, productId=product.product_id, price=product.price, quantity=quantity, subTotal=sub,
                tax=0, productTax={"totalTax": 0}, total=sub, priceAdjustments=[])  # fmt: skip
    doc.update(orderSubTotal=sub, taxSubTotal=0, discount=0, shippingName=shipping)
    doc["totalAmount"] = sub + doc["shippingSubTotal"] + doc["shippingTax"]
    doc["tenders"][0]["amountAuthorized"] = doc["totalAmount"]
    doc["shippingAddress"]["postalCode"] = postal
    return doc


def brokering_demo(dsn: str, console: Console) -> int:
    """Store four send-sale orders, run one brokering run with the two routings, print the outcome and one
    order's explained decision. 0 when every order got the outcome its routing promises."""
    console.rule("brokering: one run, two routings, one decision explained")
    retailer = _retailer()
    parse_brokering(BROKERING)  # the same table a retailers file holds under [retailers.<id>.brokering]
    lakota, other = CATALOG[0], CATALOG[1]
    with open_pool(dsn, max_size=4) as db:  # a run holds its lock on one connection and works on another
        inventory, ledger = PgInventory(db), PgFileLedger(db)
        inventory.load_facilities(RETAILER, parse_facilities_csv(FACILITIES))
        stock = f"301,{lakota.product_id},{lakota.gtin},3\n302,{lakota.product_id},{lakota.gtin},1\n"
        stock += f"DC1,{lakota.product_id},{lakota.gtin},20\nDC1,{other.product_id},,5\n"  # DC1: no GTIN loaded
        inventory.load_inventory(
            RETAILER, parse_inventory_csv("facility_id,product_id,gtin,quantity_on_hand\n" + stock)
        )
        sales = [
            _sale(1, "Next Day", "91911", lakota.gtin),  # Chula Vista: San Diego is nearest, but at safety stock
            _sale(2, "Next Day", "10001", lakota.gtin),  # New York: no store within 500 km: to BACKORDER_PARKING
            _sale(3, "Standard", "91911", other.gtin),  # from the DC, matched by product id
            _sale(4, "Standard", "60601", lakota.gtin, quantity=2),
        ]
        for doc in sales:
            with ledger.scan_transaction(RETAILER, "orders") as tx:
                [row] = tx.claim([Claim(f"{doc['orderId']}.json", "/demo", 1, 1.0)])
            ledger.record(row.id, decide(dumps(doc), retailer))
        result = run_brokering(
            PgRouting(db),
            lambda ids, queues: inventory.brokering_batch(RETAILER, ids, queues),
            retailer.brokering.routings,
            RETAILER,
            f"demo-run-{uuid.uuid4().hex[:8]}",
            5,
        )
        console.print(f"brokering run of {RETAILER}: {result.summary()}")
        views = PgBrokeringViews(db)
        shown = [views.decisions(RETAILER, doc["orderId"]) for doc in sales]
        for found in shown:
            assert found is not None
            console.print(f"  {found['order_id']}: {found['decisions'][0]['summary']}")
        explained = shown[0]
        assert explained is not None
        console.print(f"why order {explained['order_id']} went where it went (tlogsync order show):")
        print_order(explained)
    ok = [f["lines"][0]["facility"] for f in shown if f] == ["301", "BACKORDER_PARKING", "DC1", "DC1"]
    return 0 if ok else 1
