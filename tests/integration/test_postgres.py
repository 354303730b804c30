"""The ledger and order store against the real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tests.unit.fakes import FakeSource
from tests.unit.helpers import retailer
from worker.adapters.postgres.migrate import migrate
from worker.demo.tlogfactory import dumps, make_sale, sample_bytes
from worker.services.feeds import Feed
from worker.services.ingest import decide
from worker.services.ports import CLAIMED, DUPLICATE, PROCESSED, Claim, Outcome
from worker.services.scan import scan_feeds


def feed(tag: str) -> Feed:
    return Feed("orders", f"/{tag}", f"/{tag}/archive", f"/{tag}/error", "*.json", 0)


def unique_retailer(tag: str):
    r = retailer()
    return type(r)(**{**r.__dict__, "retailer_id": tag})


def claim_one(ledger, retailer_id: str, name: str):
    with ledger.scan_transaction(retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(name, f"/{retailer_id}/{name}", 10, 1.0)])
    return row


def test_migrations_are_idempotent(pg_dsn):
    assert migrate(pg_dsn) == []


def test_documented_columns_exist(db):
    expected = {
        "tlog_files": {
            "id",
            "retailer_id",
            "file_name",
            "remote_path",
            "size",
            "sha256",
            "status",
            "error",
            "attempts",
            "claimed_at",
            "finished_at",
        },
        "orders": {
            "id",
            "retailer_id",
            "external_id",
            "order_type",
            "status_id",
            "store_id",
            "order_date",
            "currency",
            "grand_total",
            "oms_payload",
            "tlog_file_id",
            "created_at",
        },
        "order_items": {
            "order_id",
            "item_seq",
            "product_id",
            "gtin",
            "quantity",
            "unit_price",
            "tax",
            "line_total",
            "fulfillment",
            "status_id",
            "facility_id",
        },
    }
    for table, columns in expected.items():
        rows = db.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
        assert columns <= {name for name, _ in rows}, table
        assert not any(kind in ("real", "double precision") for _, kind in rows), f"{table} stores money as float"


def test_concurrent_scans_claim_each_file_once(ledger):
    tag = "conc"
    files = {f"/{tag}/{i:04d}.json": b"{}" for i in range(300)}
    source = FakeSource(files, mtime=0)
    results, barrier = [], threading.Barrier(6)

    def run():
        barrier.wait()
        results.append(
            scan_feeds(
                unique_retailer(tag),
                [feed(tag)],
                source,
                ledger,
                10_000,
                timedelta(minutes=15),
                lambda _, files: [file_id for file_id, _ in files],
            )
        )

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dispatched = [name for r in results for _, name in r.dispatch]
    assert sorted(dispatched) == sorted(p.rpartition("/")[2] for p in files)


def test_redelivered_ingest_creates_no_second_order(ledger, db):
    row = claim_one(ledger, "redeliver", "a.json")
    outcome = decide(sample_bytes("sendSaleOrdersSample.json"), unique_retailer("redeliver"))
    first = ledger.record(row.id, outcome)
    second = ledger.record(row.id, outcome)
    assert first.order_id is not None and second.order_id is None
    assert second.row.status == PROCESSED
    count = db.execute("SELECT count(*) FROM orders WHERE retailer_id = 'redeliver'").fetchone()[0]
    assert count == 1


def test_concurrent_deliveries_of_one_file_store_one_order(ledger, db):
    row = claim_one(ledger, "race", "a.json")
    outcome = decide(sample_bytes("inStoreOrdersSample.json"), unique_retailer("race"))
    barrier, results = threading.Barrier(4), []

    def run():
        barrier.wait()
        results.append(ledger.record(row.id, outcome))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r.order_id) == 1
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = 'race'").fetchone()[0] == 1
    assert db.execute("SELECT status FROM tlog_files WHERE id = %s", (row.id,)).fetchone()[0] == "processed"


def test_same_content_under_another_name_is_a_duplicate(ledger):
    data = sample_bytes("inStoreOrdersSample.json")
    r = unique_retailer("samecontent")
    a, b = claim_one(ledger, r.retailer_id, "a.json"), claim_one(ledger, r.retailer_id, "b.json")
    assert ledger.record(a.id, decide(data, r)).row.status == PROCESSED
    recorded = ledger.record(b.id, decide(data, r))
    assert recorded.row.status == DUPLICATE and f"same content as ledger row {a.id}" in recorded.row.error


def test_same_order_with_other_bytes_is_a_duplicate(ledger):
    r = unique_retailer("sameorder")
    a, b = claim_one(ledger, r.retailer_id, "a.json"), claim_one(ledger, r.retailer_id, "b.json")
    ledger.record(a.id, decide(sample_bytes("inStoreOrdersSample.json"), r))
    recorded = ledger.record(b.id, decide(sample_bytes("inStoreOrdersSample.json") + b" ", r))
    assert recorded.row.status == DUPLICATE and "order PS00000283 already stored" in recorded.row.error


def test_order_lines_payments_and_adjustments_are_stored_exactly(ledger, db):
    r = unique_retailer("stored")
    row = claim_one(ledger, r.retailer_id, "a.json")
    recorded = ledger.record(row.id, decide(sample_bytes("sendSaleOrdersSample.json"), r))
    order = db.execute(
        "SELECT external_id, order_type, status_id, store_id, order_date::text, currency,"
        " grand_total::text, oms_payload, tlog_file_id, ordered_at IS NOT NULL FROM orders"
        " WHERE id = %s",
        (recorded.order_id,),
    ).fetchone()
    assert order[:7] == ("PS00000284", "SEND_SALE", "ORDER_APPROVED", "254", "2024-01-12 16:47:01", "USD", "454.14")
    assert order[7][0]["dataList"][0]["data"]["order"]["grandTotal"] == 454.14
    assert order[8] == row.id and order[9]
    items = db.execute(
        "SELECT item_seq, gtin, quantity, unit_price::text, tax::text, fulfillment, status_id,"
        " facility_id FROM order_items WHERE order_id = %s ORDER BY item_seq",
        (recorded.order_id,),
    ).fetchall()
    assert items[0] == (1, "197076109628", 1, "130.0000", "11.3800", "SHIP_TO_HOME", "ITEM_APPROVED", "_NA_")
    assert [i[0] for i in items] == [1, 2, 3]
    pays = db.execute(
        "SELECT payment_method_type_id, amount::text FROM order_payments WHERE order_id = %s", (recorded.order_id,)
    ).fetchall()
    assert pays == [("EXT_MISC", "454.14")]
    adj = db.execute(
        "SELECT item_seq, adjustment_type, amount FROM order_adjustments WHERE order_id = %s ORDER BY seq",
        (recorded.order_id,),
    ).fetchall()
    assert [(a[0], a[1]) for a in adj] == [
        (1, "SALES_TAX"),
        (2, "SALES_TAX"),
        (3, "SALES_TAX"),
        (None, "SHIPPING_CHARGES"),
        (None, "SHIPPING_SALES_TAX"),
    ]
    parts = db.execute(
        "SELECT (SELECT sum(unit_price * quantity) FROM order_items WHERE order_id = %(o)s)"
        " + (SELECT sum(amount) FROM order_adjustments WHERE order_id = %(o)s)",
        {"o": recorded.order_id},
    ).fetchone()
    assert parts[0] == recorded_total(db, recorded.order_id)


def recorded_total(db, order_id):
    return db.execute("SELECT grand_total FROM orders WHERE id = %s", (order_id,)).fetchone()[0]


def test_failed_outcome_keeps_the_reason(ledger):
    row = claim_one(ledger, "failing", "a.json")
    recorded = ledger.record(row.id, Outcome("failed", error="invalid JSON at line 1 column 2: x"))
    assert recorded.row.status == "failed" and recorded.row.error.startswith("invalid JSON")
    assert recorded.row.finished_at is not None


def test_a_name_can_be_claimed_once_while_live(ledger):
    claim_one(ledger, "once", "a.json")
    with ledger.scan_transaction("once", "orders") as tx:
        assert tx.claim([Claim("a.json", "/once/a.json", 1, 1.0)]) == []
        dup = tx.claim([Claim("a.json", "/once/a.json", 1, 1.0, DUPLICATE, "again")])
    assert dup[0].status == DUPLICATE


def test_in_flight_counts_only_claimed_rows(ledger):
    for i in range(3):
        claim_one(ledger, "flight", f"{i}.json")
    with ledger.scan_transaction("flight", "orders") as tx:
        assert tx.in_flight() == 3
    row = claim_one(ledger, "flight", "x.json")
    ledger.record(row.id, Outcome("failed", error="x"))
    with ledger.scan_transaction("flight", "orders") as tx:
        assert tx.in_flight() == 3


@pytest.mark.parametrize("kind", ["IN_STORE", "SEND_SALE", "MIXED"])
def test_generated_orders_round_trip_their_totals(ledger, db, kind):
    r = unique_retailer(f"gen{kind}")
    row = claim_one(ledger, r.retailer_id, "a.json")
    recorded = ledger.record(row.id, decide(dumps(make_sale(3, kind, lines=3)), r))
    assert recorded.row.status == PROCESSED
    assert db.execute("SELECT order_type FROM orders WHERE id = %s", (recorded.order_id,)).fetchone()[0] == kind
    assert row.status == CLAIMED
