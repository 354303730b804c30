"""Hostile messages through real workers: ids of another retailer, forged huge arguments, a task past its soft
time limit. Each is refused, bounded or retried; nothing of the retailer's own work is lost."""

from __future__ import annotations

import dataclasses
import time
import uuid

import psycopg
import pytest

from tests.support.waiting import eventually
from tests.unit.helpers import retailer as retailer_config
from worker.demo.tlogfactory import dumps, make_sale
from worker.services.ingest import decide
from worker.services.ports import Claim

pytestmark = pytest.mark.e2e


def dead_letter(db, task_id: str, timeout: float = 30):
    found: list[tuple[str, int]] = []

    def recorded() -> bool:
        row = db.execute(
            "SELECT reason, pg_column_size(d.*) FROM dead_letters d WHERE task_id = %s", (task_id,)
        ).fetchone()
        if row:
            found.append(row)
        return bool(row)

    eventually(recorded, f"the dead letter of {task_id}", timeout)
    return found[0]


def claim(ledger, r, name: str):
    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(name, f"{r.inbound}/{name}", 10, 1.0)])
    return row


def file_row(db, file_id):
    return db.execute("SELECT status, attempts, moved_at FROM tlog_files WHERE id = %s", (file_id,)).fetchone()


def in_store_sale(seq: int) -> bytes:
    return dumps(make_sale(seq, "IN_STORE", order_prefix=f"H{uuid.uuid4().hex[:5].upper()}"))


def test_an_ingest_message_naming_another_retailers_row_is_dead_lettered_and_the_owner_still_gets_the_sale(
    celery_worker, make_retailer, db, ledger
):
    from tasks.ingest import ingest_tlog

    a = make_retailer()  # the order master: its in-store sales move its inventory
    b = make_retailer(order_master=False)  # under b's rules a's sale would be skipped and archived in b's folder
    a.put("instore.json", in_store_sale(1))
    row = claim(ledger, a, "instore.json")

    forged = ingest_tlog.apply_async((b.retailer_id, row.id, "instore.json"))
    reason, _ = dead_letter(db, forged.id)
    assert reason == f"WrongRetailer: ledger row {row.id} belongs to retailer {a.retailer_id}, not {b.retailer_id}"
    assert file_row(db, row.id) == ("claimed", 0, None)
    assert a.inbound_names() == ["instore.json"] and list(b.archive.iterdir()) == []

    ingest_tlog.apply_async((a.retailer_id, row.id, "instore.json"))
    eventually(lambda: file_row(db, row.id)[0] == "processed" and file_row(db, row.id)[2], "a's own ingest")
    assert len(list(a.archive.glob("*-instore.json"))) == 1  # archived as <ledger id>-<name>
    assert db.execute("SELECT order_type FROM orders WHERE tlog_file_id = %s", (row.id,)).fetchone() == ("IN_STORE",)


def test_a_follow_up_naming_another_retailers_order_is_dead_lettered_without_counting_an_attempt(
    celery_worker, make_retailer, db, ledger
):
    from tasks.routing import apply_sale_to_inventory, broker_order

    a, b = make_retailer(), make_retailer()
    row = claim(ledger, a, "mixed.json")
    recorded = ledger.record(
        row.id,
        decide(
            dumps(make_sale(2, "MIXED", lines=2, order_prefix=f"H{uuid.uuid4().hex[:5].upper()}")),
            dataclasses.replace(retailer_config(), retailer_id=a.retailer_id),
        ),
    )
    order_id = recorded.order_id
    assert order_id is not None
    expected = f"WrongRetailer: order {order_id} belongs to retailer {a.retailer_id}, not {b.retailer_id}"
    for task in (apply_sale_to_inventory, broker_order):
        reason, _ = dead_letter(db, task.apply_async((b.retailer_id, order_id)).id)
        assert reason == expected
    assert db.execute(
        "SELECT kind, status, attempts FROM order_followups WHERE order_id = %s ORDER BY kind", (order_id,)
    ).fetchall() == [("brokering", "pending", 0), ("inventory", "pending", 0)]

    apply_sale_to_inventory.apply_async((a.retailer_id, order_id))
    eventually(
        lambda: (
            db.execute(
                "SELECT status FROM order_followups WHERE order_id = %s AND kind = 'inventory'", (order_id,)
            ).fetchone()[0]
            == "done"
        ),
        "a's own inventory follow-up",
    )


@pytest.mark.parametrize("forged", ["retailer", "file_id"])
def test_a_forged_2mb_argument_leaves_a_small_dead_letter_and_a_small_log(celery_worker, make_retailer, db, forged):
    from tasks.ingest import ingest_tlog

    r = make_retailer()
    huge = "9" * 2_000_000
    args = (huge, 1, "x.json") if forged == "retailer" else (r.retailer_id, huge, "x.json")
    before = celery_worker.log.stat().st_size
    sent = ingest_tlog.apply_async(args)
    reason, size = dead_letter(db, sent.id)
    time.sleep(1)  # the worker's last log lines of the task
    grown = celery_worker.log.stat().st_size - before
    assert size < 8192, size
    assert len(reason) < 4096, len(reason)
    assert grown < 100_000, grown
    if forged == "file_id":
        # the database's message quotes the value: the reason names the kind of error instead
        assert reason.startswith("unexpected database error: numeric_value_out_of_range"), reason[:300]
        assert "999999" not in reason


def test_a_task_past_its_soft_time_limit_is_retried_not_dead_lettered(celery_worker, make_retailer, db, ledger, pg_dsn):
    from tasks.ingest import ingest_tlog

    r = make_retailer()
    r.put("slow.json", in_store_sale(3))
    row = claim(ledger, r, "slow.json")
    with psycopg.connect(pg_dsn) as locker:  # a stuck database lock holds the task past its soft limit
        locker.execute("SELECT 1 FROM tlog_files WHERE id = %s FOR UPDATE", (row.id,))
        sent = ingest_tlog.apply_async((r.retailer_id, row.id, "slow.json"), soft_time_limit=1, time_limit=60)

        def reason():
            return db.execute("SELECT reason FROM dead_letters WHERE task_id = %s", (sent.id,)).fetchone()

        eventually(
            lambda: "soft time limit exceeded" in celery_worker.log.read_text(errors="replace") or reason(),
            "the task to be stopped at its soft time limit",
            30,
        )
        assert reason() is None
        time.sleep(1)
        locker.rollback()
    eventually(lambda: file_row(db, row.id)[0] == "processed" and file_row(db, row.id)[2], "the retried ingest", 90)
    assert reason() is None
    assert len(list(r.archive.glob("*-slow.json"))) == 1
