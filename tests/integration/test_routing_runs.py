"""Routing runs against the real PostgreSQL: one trigger per burst, batches from the outbox, once each."""

from __future__ import annotations

import secrets
import threading
import uuid

import pytest

from tests.integration.test_routing import LAKOTA, NEARBY, atp, load, retailer_for, send_sale
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.routing import PgRouting
from worker.core.routing import BROKERING, INVENTORY
from worker.demo.tlogfactory import dumps, make_sale
from worker.services.ingest import decide
from worker.services.ports import Claim, Recorded
from worker.services.routing import run_brokering, run_inventory


@pytest.fixture
def rid():
    return f"runs_{secrets.token_hex(4)}"


@pytest.fixture
def inventory(database):
    return PgInventory(database)


@pytest.fixture
def routing(database):
    return PgRouting(database)


def store(ledger, r, doc) -> Recorded:
    """Claim and record a TLog the way ingest does."""
    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(f"{uuid.uuid4().hex}.json", "/x", 1, 1.0)])
    return ledger.record(row.id, decide(dumps(doc), r))


def in_store_sale(seq):
    return make_sale(seq, "IN_STORE", store_id="254", lines=1, order_prefix=f"I{secrets.token_hex(3).upper()}")


def test_a_burst_of_orders_asks_for_one_run_per_kind_until_a_run_starts(ledger, routing, inventory, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("254", LAKOTA.gtin): 50, ("DC1", LAKOTA.gtin): 50})
    first = store(ledger, r, send_sale(1))
    rest = [store(ledger, r, send_sale(n)) for n in range(2, 6)]
    assert first.triggered == (BROKERING,)
    assert [x.triggered for x in rest] == [()] * 4
    routing.start_pass(rid, BROKERING)  # a run begins: the next order asks again
    assert store(ledger, r, send_sale(6)).triggered == (BROKERING,)


def test_a_brokering_run_takes_every_waiting_order_once(ledger, routing, inventory, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 3, ("DC1", LAKOTA.gtin): 3})
    orders = [store(ledger, r, send_sale(n, quantity=1)).order_id for n in range(1, 6)]
    result = run_brokering(
        routing, lambda ids, q: inventory.brokering_batch(rid, ids, q), NEARBY, rid, "run-1", 25, batch=2
    )
    assert (result.orders, result.allocated, result.unfillable, result.passes) == (5, 5, 0, 3)
    again = run_brokering(routing, lambda ids, q: inventory.brokering_batch(rid, ids, q), NEARBY, rid, "run-2", 25)
    assert (again.orders, again.allocated) == (0, 0)
    reserved = sum(atp(db, rid, f)[1] for f in ("301", "DC1"))
    assert reserved == 5
    states = db.execute(
        "SELECT status, count(*) FROM order_followups WHERE order_id = ANY(%s) AND kind = 'brokering' GROUP BY 1",
        (orders,),
    ).fetchall()
    assert states == [("done", 5)]
    runs = db.execute(
        "SELECT count(DISTINCT run_id) FROM order_facility_changes WHERE order_id = ANY(%s)", (orders,)
    ).fetchone()
    assert runs == (1,)


def test_an_inventory_run_applies_every_pending_sale_once_in_one_batch(ledger, routing, inventory, db, rid):
    r = retailer_for(rid, order_master=True)
    load(inventory, rid, {("254", LAKOTA.gtin): 100})
    stored = [store(ledger, r, in_store_sale(n)) for n in range(1, 8)]
    assert all(x.order_id for x in stored)
    result = run_inventory(routing, rid, 25)
    lines = db.execute(
        "SELECT count(*) FROM order_items WHERE order_id = ANY(%s) AND fulfillment = 'IN_STORE'",
        ([x.order_id for x in stored],),
    ).fetchone()[0]
    assert (result.orders, result.variances, result.passes) == (7, lines, 1)
    assert run_inventory(routing, rid, 25).variances == 0
    applied = db.execute(
        "SELECT count(*) FROM inventory_variances WHERE retailer_id = %s AND reason_id = 'POS_SALE'", (rid,)
    ).fetchone()
    assert applied == (lines,)


def test_a_second_run_of_the_same_retailer_is_busy_while_one_holds_the_lock(routing, database, rid):
    inside, release = threading.Event(), threading.Event()

    def hold():
        with database.bound(), routing.run_lock(rid, INVENTORY) as got:
            assert got
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    try:
        with database.bound():
            assert run_inventory(routing, rid, 25).busy
            with routing.run_lock(f"{rid}_other", INVENTORY) as other:
                assert other  # another retailer's runs are not held back
    finally:
        release.set()
        holder.join()


def test_a_follow_up_started_too_often_is_given_up_and_the_rest_go_on(ledger, routing, inventory, db, rid):
    r = retailer_for(rid, order_master=True)
    load(inventory, rid, {("254", LAKOTA.gtin): 100})
    poison, good = (store(ledger, r, in_store_sale(n)).order_id for n in (1, 2))
    db.execute("UPDATE order_followups SET attempts = 25 WHERE order_id = %s", (poison,))
    result = run_inventory(routing, rid, 25)
    assert result.given_up == [poison] and result.orders == 1
    states = dict(
        db.execute("SELECT order_id, status FROM order_followups WHERE order_id = ANY(%s)", ([poison, good],))
    )
    assert states == {poison: "failed", good: "done"}


def test_the_scan_sweep_asks_again_for_a_run_whose_message_was_lost(ledger, routing, inventory, db, rid):
    r = retailer_for(rid)
    load(inventory, rid, {("DC1", LAKOTA.gtin): 5})
    store(ledger, r, send_sale(1))
    assert routing.stale_runs(rid, 60) == []  # young: the run asked for is on its way
    db.execute("UPDATE order_followups SET created_at = now() - interval '5 minutes' WHERE retailer_id = %s", (rid,))
    db.execute("UPDATE routing_triggers SET requested_at = now() - interval '5 minutes' WHERE retailer_id = %s", (rid,))
    assert routing.stale_runs(rid, 60) == [BROKERING]
    assert routing.stale_runs(rid, 60) == []  # asked for just now: not again
