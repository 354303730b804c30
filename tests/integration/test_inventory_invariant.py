"""The inventory invariant of issue 13, property-tested on the real PostgreSQL: over random sequences of in-store
sales, send-sales and brokering, ships, rejects, cancels, voids, returns, variance files and loads, for every
facility and product

- reserved is never negative and equals the open reservations (approved ship-to-home lines allocated there), so
  ATP = on hand - open reservations;
- on hand is exactly what its source rows add up to: the inventory variances (sales, returns, the variance feed,
  voids) and the inventory movements (ships, loads), each applied once per source.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_routing import FACILITIES, NEARBY, retailer_for, run_brokering, send_sale
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.lifecycle import PgOrderActions, check_invariant
from worker.core.errors import NotFound
from worker.core.inventory import parse_facilities_csv, parse_inventory_csv
from worker.core.lifecycle import ActionRefused
from worker.demo.tlogfactory import CATALOG, dumps, make_return, make_sale
from worker.services.ingest import decide, decide_variance
from worker.services.ports import Claim

PRODUCTS = CATALOG[:2]
STORES = ("254", "301", "DC1")

SALE = st.tuples(st.just("sale"), st.sampled_from(range(len(PRODUCTS))), st.integers(1, 3))
SEND = st.tuples(st.just("send"), st.sampled_from(range(len(PRODUCTS))), st.integers(1, 3))
BROKER = st.tuples(st.just("broker"), st.just(0), st.just(0))
ACT = st.tuples(st.sampled_from(["ship", "reject", "cancel", "ship", "reject"]), st.integers(0, 20), st.just(0))
OPS = st.one_of(
    SALE,
    SEND,
    SEND,
    BROKER,
    ACT,
    ACT,
    ACT,
    st.tuples(st.just("void"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("return"), st.integers(0, 20), st.sampled_from([0, 1])),
    st.tuples(st.just("variance"), st.sampled_from(range(len(PRODUCTS))), st.integers(-3, 3)),
    st.tuples(st.just("load"), st.sampled_from(range(len(PRODUCTS))), st.integers(0, 6)),
)


def allocated(db, rid):
    """The external ids of orders with a line reserved at a facility."""
    return {
        row[0]
        for row in db.execute(
            "SELECT o.external_id FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.retailer_id = %s"
            " AND i.status_id = 'ITEM_APPROVED' AND i.facility_id NOT IN ('_NA_', 'UNFILLABLE_PARKING')",
            (rid,),
        )
    }


def traced(db, rid):
    """Facilities and products whose on hand is not what its variances and movements add up to."""
    return db.execute(
        "SELECT i.facility_id, i.product_id, i.quantity_on_hand,"
        " coalesce((SELECT sum(v.available_delta) FROM inventory_variances v WHERE v.retailer_id = i.retailer_id"
        "   AND v.facility_id = i.facility_id AND v.id_value = i.gtin), 0)"
        " + coalesce((SELECT sum(m.on_hand_delta) FROM inventory_movements m WHERE m.retailer_id = i.retailer_id"
        "   AND m.facility_id = i.facility_id AND m.product_id = i.product_id), 0) AS traced"
        " FROM inventory i WHERE i.retailer_id = %s",
        (rid,),
    ).fetchall()


@pytest.mark.timeout(600)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=4, max_size=20))
def test_atp_is_on_hand_less_open_reservations_and_every_change_is_traced(database, ledger, db, ops):
    rid = f"prop_{secrets.token_hex(4)}"
    r = retailer_for(rid)
    inventory, actions = PgInventory(database), PgOrderActions(database)
    inventory.load_facilities(rid, parse_facilities_csv(FACILITIES))
    rows = ["facility_id,product_id,gtin,quantity_on_hand"]
    rows += [f"{f},{p.product_id},{p.gtin},3" for f in STORES for p in PRODUCTS]
    inventory.load_inventory(rid, parse_inventory_csv("\n".join(rows) + "\n"))
    sales: list[dict] = []  # in-store sales stored
    orders: list[tuple[str, int]] = []  # (external id, order id) of every stored sale

    def store(doc):
        with ledger.scan_transaction(rid, "orders") as tx:
            [row] = tx.claim([Claim(f"{uuid.uuid4().hex}.json", "/x", 1, 1.0)])
        return ledger.record(row.id, decide(dumps(doc), r))

    for step, (op, a, b) in enumerate(ops):
        if op == "sale":
            product = PRODUCTS[a]
            doc = make_sale(step, "IN_STORE", lines=1, order_prefix=f"P{secrets.token_hex(3).upper()}")
            line = doc["orderProductList"][0]
            sub = product.price * b
            line.update(gtin=product.gtin, productId=product.product_id, quantity=b, price=product.price)
            line.update(subTotal=sub, tax=Decimal(0), productTax={"totalTax": Decimal(0)}, total=sub)
            line["priceAdjustments"] = []
            doc.update(orderSubTotal=sub, taxSubTotal=Decimal(0), discount=Decimal(0), totalAmount=sub)
            doc["tenders"][0]["amountAuthorized"] = sub
            recorded = store(doc)
            if recorded.order_id:
                inventory.apply_sale(rid, recorded.order_id)
                sales.append(doc)
                orders.append((doc["orderId"], recorded.order_id))
        elif op == "send":
            doc = send_sale(step, gtin=PRODUCTS[a].gtin, quantity=b)
            recorded = store(doc)
            if recorded.order_id:
                orders.append((doc["orderId"], recorded.order_id))
        elif op == "broker":
            for order_id in inventory.orders_waiting(rid, parked=True):
                run_brokering(inventory, rid, order_id, NEARBY, parked=True)
        elif op in ("ship", "reject", "cancel") and orders:
            action = {"ship": "SHIPPED", "reject": "REJECTED", "cancel": "CANCELLED"}[op]
            # mostly the lines allocated to a facility (what a store ships or rejects), sometimes any line
            placed = [x for x, _ in orders if x in allocated(db, rid)] if a % 5 else []
            chosen = placed or [x for x, _ in orders]
            with contextlib.suppress(ActionRefused, NotFound):  # refused: a line already done, or not placed
                actions.act(rid, action, chosen[a % len(chosen)], 1)
        elif op == "void" and sales:
            void = copy.deepcopy(sales[a % len(sales)])
            void["orderStatus"] = "VOIDED"
            void["updateDate"] = void["updateDate"] + 1000 * (step + 1)
            store(void)
        elif op == "return" and sales:
            sale = sales[a % len(sales)]
            ret = make_return(step, sale, order_prefix=f"R{secrets.token_hex(3).upper()}")
            if b:
                ret["returnProductList"][0]["productCondition"] = "DAMAGED"
            store(ret)
        elif op == "variance" and b:
            product = PRODUCTS[a]
            csv = (
                "facilityId,idType,idValue,availableDelta,locationSeqId,varianceReasonId,comments\n"
                f"{STORES[step % 3]},UPCA,{product.gtin},{b},,VAR_FOUND,counted\n"
            ).encode()
            with ledger.scan_transaction(rid, "variance") as tx:
                [row] = tx.claim([Claim(f"{uuid.uuid4().hex}.csv", "/x", 1, 1.0)])
            ledger.record(row.id, decide_variance(csv, r))
        elif op == "load":
            product = PRODUCTS[a]
            text = f"facility_id,product_id,gtin,quantity_on_hand\n{STORES[step % 3]},{product.product_id},"
            inventory.load_inventory(rid, parse_inventory_csv(text + f"{product.gtin},{b}\n"))
        assert check_invariant(db, rid) == [], (step, op)
        untraced = [row for row in traced(db, rid) if row[2] != row[3]]
        assert untraced == [], (step, op, untraced)
        negative = db.execute(
            "SELECT count(*) FROM inventory WHERE retailer_id = %s AND (reserved < 0 OR non_sellable < 0)", (rid,)
        ).fetchone()
        assert negative == (0,)
