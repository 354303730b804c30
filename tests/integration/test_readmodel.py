"""The read model (status screen, scan --wait, metrics, demo summary) against the real PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.integration.test_routing import (
    LAKOTA,
    NEARBY,
    load,
    retailer_for,
    run_brokering,
    send_sale,
    store_order,
)
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.readmodel import (
    FacilityCount,
    FailedFile,
    FeedCount,
    FileCount,
    FollowupCount,
    OrderTypeCount,
    PgReadModel,
    ReasonCount,
    RetailerCount,
    ScanRun,
    StatusProgress,
)
from worker.services.ingest import decide_variance
from worker.services.ports import Claim, Outcome
from worker.services.scan import ScanResult


@pytest.fixture
def reads(database):
    return PgReadModel(database)


@pytest.fixture
def rid():
    return f"read_{secrets.token_hex(4)}"


def claim(ledger, rid, name, mtime, feed="orders"):
    with ledger.scan_transaction(rid, feed) as tx:
        [row] = tx.claim([Claim(name, f"/{rid}/{name}", 10, mtime)])
    return row


def mine(rows, rid):
    return [row for row in rows if row.retailer_id == rid]


def test_files_pending_files_and_failures_per_retailer(ledger, reads, rid):
    a, b, c = (claim(ledger, rid, f"{n}.json", m) for n, m in (("a", 100.0), ("b", 200.0), ("c", 300.0)))
    d = claim(ledger, rid, "d.json", 400.0)
    claim(ledger, rid, "v.json", 500.0, feed="variance")
    ledger.record(a.id, Outcome("failed", error="fixed later"))
    ledger.record(b.id, Outcome("processed"))
    ledger.record(d.id, Outcome("failed", error="invalid JSON at line 1 column 1"))
    for row in (a, b, d):
        ledger.mark_moved(row.id, f"/done/{row.file_name}")
    with ledger.replay_transaction(rid, "orders") as tx:  # a fixed file back in the inbound folder
        again = tx.claim_again(tx.latest("a.json"), a.remote_path)

    assert mine(reads.files_by_status(), rid) == [
        FileCount(rid, "orders", "claimed", 2),
        FileCount(rid, "orders", "failed", 1),
        FileCount(rid, "orders", "processed", 1),
        FileCount(rid, "variance", "claimed", 1),
    ]
    assert sorted(mine(reads.files_discovered(), rid), key=lambda f: f.feed) == [
        FeedCount(rid, "orders", 5),
        FeedCount(rid, "variance", 1),
    ]  # replayed rows too
    [pending] = mine(reads.pending_files(), rid)
    assert pending.files == 3  # the replayed a, c and v; the failed and processed files were moved
    assert pending.oldest == datetime.fromtimestamp(100.0, UTC) and pending.oldest_age_seconds > 0
    failures = mine(reads.recent_failures(1000), rid)
    assert [(f.file_name, f.error) for f in failures] == [("d.json", "invalid JSON at line 1 column 1")]
    assert isinstance(failures[0], FailedFile) and failures[0].finished_at is not None
    progress = reads.files_progress([again.id, b.id, c.id, d.id])
    assert sorted(progress, key=lambda p: p.status) == [
        StatusProgress("claimed", 0, 2),
        StatusProgress("failed", 1, 1),
        StatusProgress("processed", 1, 1),
    ]
    assert reads.now().tzinfo is not None


def test_scan_runs_the_last_one_per_retailer_and_what_scan_wait_reads(ledger, reads, rid):
    started = ledger.now()
    first, second = f"scan-{secrets.token_hex(3)}", f"scan-{secrets.token_hex(3)}"
    ledger.record_scan(first, rid, "beat", started, ScanResult(rid, "orders", listed=4, dispatch=[(7, "x.json")]))
    ledger.record_scan(second, rid, "cli", started, error="SftpError: host down", will_retry=True)
    [last] = mine(reads.last_scans(), rid)
    assert (last.requested_by, last.listed, last.dispatched, last.deferred, last.error) == (
        "cli",
        0,
        0,
        0,
        "SftpError: host down",
    )
    assert last.age_seconds >= 0 and last.finished_at.tzinfo is not None
    assert reads.scan_run(first) == ScanRun([7], None, False)
    assert reads.scan_run(second) == ScanRun([], "SftpError: host down", True)
    assert reads.scan_run("no-such-scan") is None


def test_the_metrics_figures_orders_followups_brokering_variances_and_negative_stock(ledger, database, reads, rid):
    inventory = PgInventory(database)
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 1})
    placed = store_order(ledger, r, send_sale(1, quantity=1))
    parked = store_order(ledger, r, send_sale(2, quantity=5))
    store_order(ledger, r, send_sale(3, quantity=1))  # not brokered yet: its follow-up is pending
    run_brokering(inventory, rid, placed, NEARBY)
    run_brokering(inventory, rid, parked, NEARBY)
    data = (
        b"facilityId,idType,idValue,availableDelta,locationSeqId,varianceReasonId,comments\n"
        b"301,UPCA,197076109628,-3,,VAR_DAMAGED,\n"
    )
    row = claim(ledger, rid, "inv.json", 1.0, feed="variance")
    assert ledger.record(row.id, decide_variance(data)).records_applied == 1

    assert mine(reads.orders_by_type(), rid) == [OrderTypeCount(rid, "SEND_SALE", 3)]
    assert mine(reads.allocations(), rid) == [FacilityCount(rid, "301", 1)]
    assert mine(reads.unfillable_lines(), rid) == [RetailerCount(rid, 1)]
    assert mine(reads.variances_by_reason(), rid) == [ReasonCount(rid, "VAR_DAMAGED", 1)]
    assert mine(reads.negative_stock_rows(), rid) == [RetailerCount(rid, 1)]  # 1 on hand, 1 reserved, 3 damaged
    assert mine(reads.followups(), rid) == [
        FollowupCount(rid, "brokering", "done", 2),
        FollowupCount(rid, "brokering", "pending", 1),
    ]


def test_the_demo_summary_and_progress(ledger, database, db, reads, rid):
    inventory = PgInventory(database)
    r = retailer_for(rid)
    load(inventory, rid, {("301", LAKOTA.gtin): 2, ("DC1", LAKOTA.gtin): 4})
    order_id = store_order(ledger, r, send_sale(1, quantity=1))
    run_brokering(inventory, rid, order_id, NEARBY)
    bad = claim(ledger, rid, "bad.json", 1.0)
    ledger.record(bad.id, Outcome("failed", error="empty file (0 bytes)"))
    variance = claim(ledger, rid, f"{rid}.json", 1.0, feed="variance")
    ledger.record(
        variance.id,
        decide_variance(
            b"facilityId,idType,idValue,availableDelta,locationSeqId,"
            b"varianceReasonId,comments\n999,UPCA,1,1,,VAR_FOUND,\n"
        ),
    )

    summary = reads.demo_summary(stock_of=rid)
    assert [(f.status, f.files) for f in mine(summary.files, rid)] == [("failed", 2), ("processed", 1)]
    [stored] = mine(summary.orders, rid)
    assert (stored.order_type, stored.status_id, stored.orders) == ("SEND_SALE", "ORDER_APPROVED", 1)
    assert isinstance(stored.grand_total, Decimal)
    rank = ["failed", "duplicate", "skipped"]
    shown = [rank.index(n.status) for n in summary.not_imported]
    assert 0 < len(shown) <= 12 and shown == sorted(shown)  # failed first, then duplicates, then skipped
    assert [(b.rule, b.facility_id, b.lines, b.units) for b in mine(summary.brokered, rid)] == [
        ("nearby stores", "301", 1, 1)
    ]
    assert summary.facilities == ["254", "301", "302", "DC1"]
    assert {(c.facility_id, c.quantity_on_hand, c.reserved) for c in summary.stock} == {("301", 2, 1), ("DC1", 4, 0)}
    [mine_file] = [v for v in summary.variance_files if v.file_name == f"{rid}.json"]
    assert (mine_file.records_applied, mine_file.records_rejected) == (0, 1)
    assert mine_file.error is not None and "unknown facility '999'" in mine_file.error
    assert {(v.source, v.reason_id) for v in mine(summary.variances, rid)} == set()  # nothing was applied
    progress = reads.progress()
    files, final, pending = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE status <> 'claimed' AND moved_at IS NOT NULL),"
        " (SELECT count(*) FROM order_followups WHERE status = 'pending') FROM tlog_files"
    ).fetchone()
    assert (progress.files, progress.final, progress.pending_followups) == (files, final, pending)
