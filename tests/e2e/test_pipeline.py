"""End to end through real Celery workers, RabbitMQ, PostgreSQL and OpenSSH sshd."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from worker.demo.tlogfactory import dumps, make_sale, mix, sample_bytes

pytestmark = pytest.mark.e2e


def wait_final(db, retailer_id: str, expected: int, timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute(
            "SELECT status, count(*) FROM tlog_files WHERE retailer_id = %s AND status <> 'claimed'"
            " AND moved_at IS NOT NULL GROUP BY status",
            (retailer_id,),
        ).fetchall()
        counts = dict(rows)
        if sum(counts.values()) >= expected:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"only {counts} final of {expected} for {retailer_id}")
        time.sleep(0.2)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, timeout=timeout, env=os.environ
    )


def test_a_batch_with_samples_and_bad_files_ends_with_every_file_final(celery_worker, make_retailer, db):
    r = make_retailer()
    r.put("dv_OrderTLog_instore.json", sample_bytes("inStoreOrdersSample.json"))
    r.put("dv_OrderTLog_sendsale.json", sample_bytes("sendSaleOrdersSample.json"))
    r.put("dv_OrderTLog_empty.json", b"")
    r.put("dv_OrderTLog_latin1.json", '{"orderId": "caf\xe9"}'.encode("latin-1"))
    r.put("dv_OrderTLog_truncated.json", sample_bytes("inStoreOrdersSample.json")[:500])
    r.put("dv_OrderTLog_oversize.json", b" " * (5 * 1024 * 1024 + 1))
    bad_total = make_sale(77, "IN_STORE")
    bad_total["totalAmount"] += 1
    r.put("dv_OrderTLog_badtotal.json", dumps(bad_total))
    r.put("dv_OrderTLog_tricky\\..\\name.json", sample_bytes("inStoreOrdersSample.json"))
    r.put("dv_OrderTLog_same_content_again.json", sample_bytes("inStoreOrdersSample.json"))
    r.put("notes.txt", b"not a TLog")  # does not match the pattern: left alone
    r.put("dv_OrderTLog_young.json", sample_bytes("sendSaleOrdersSample.json"), age=-30)  # still being written
    for name, data in mix(20, seed=5, order_prefix=f"B{uuid.uuid4().hex[:4].upper()}"):
        r.put(name, data)

    done = cli("scan", r.retailer_id, "--wait", "--timeout", "90", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    import json

    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["files"] == 29
    assert outcome["statuses"] == {"processed": 22, "failed": 6, "duplicate": 1}

    rows = dict(
        db.execute(
            "SELECT file_name, error FROM tlog_files WHERE retailer_id = %s AND status = 'failed'", (r.retailer_id,)
        ).fetchall()
    )
    assert rows["dv_OrderTLog_empty.json"] == "empty file (0 bytes)"
    assert rows["dv_OrderTLog_latin1.json"].startswith("not UTF-8: byte 0xe9 at offset")
    assert rows["dv_OrderTLog_truncated.json"].startswith("invalid JSON at line")
    assert "over the 5242880-byte limit" in rows["dv_OrderTLog_oversize.json"]
    assert (
        "totalAmount" in rows["dv_OrderTLog_badtotal.json"]
        and "does not reconcile" in rows["dv_OrderTLog_badtotal.json"]
    )
    assert "file name" in rows["dv_OrderTLog_tricky\\..\\name.json"]

    assert r.inbound_names() == ["dv_OrderTLog_young.json", "notes.txt"]
    ids = dict(db.execute("SELECT file_name, id FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchall())
    errors = sorted(p.name for p in r.error.iterdir())
    empty = f"{ids['dv_OrderTLog_empty.json']}-dv_OrderTLog_empty.json"
    assert empty in errors and f"{empty}.error.txt" in errors
    tricky = ids["dv_OrderTLog_tricky\\..\\name.json"]
    assert f"{tricky}-dv_OrderTLog_tricky_.._name.json" in errors
    badtotal = f"{ids['dv_OrderTLog_badtotal.json']}-dv_OrderTLog_badtotal.json"
    assert (r.error / f"{badtotal}.error.txt").read_text().startswith("dv_OrderTLog_badtotal.json: order")
    assert len([p for p in r.archive.iterdir()]) == 23

    orders = db.execute(
        "SELECT external_id, order_type, status_id FROM orders WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchall()
    assert len(orders) == 22
    kinds = {external: (kind, status) for external, kind, status in orders}
    assert kinds["PS00000283"] == ("IN_STORE", "ORDER_COMPLETED")
    assert kinds["PS00000284"] == ("SEND_SALE", "ORDER_APPROVED")


def test_concurrent_scans_dispatch_each_file_once(celery_worker, make_retailer, db):
    from tasks.scan import scan_retailer

    r = make_retailer()
    for name, data in mix(60, seed=9, order_prefix=f"C{uuid.uuid4().hex[:4].upper()}"):
        r.put(name, data)
    for i in range(6):  # two beats and manual scans at the same moment
        scan_retailer.apply_async((r.retailer_id,), {"scan_id": f"{r.retailer_id}-{i}", "requested_by": "test"})
    assert wait_final(db, r.retailer_id, 60) == {"processed": 60}
    dispatched = db.execute(
        "SELECT sum(dispatched), count(*) FROM scan_runs WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone()
    assert dispatched == (60, 6)
    assert db.execute("SELECT count(*) FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0] == 60
    assert (
        db.execute("SELECT max(attempts) FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0] == 1
    )


def test_redelivered_ingest_messages_create_no_duplicates(celery_worker, make_retailer, db):
    from tasks.ingest import ingest_tlog

    r = make_retailer()
    for name, data in mix(10, seed=3, order_prefix=f"R{uuid.uuid4().hex[:4].upper()}"):
        r.put(name, data)
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    rows = db.execute("SELECT id, file_name FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchall()
    for file_id, name in rows:  # the broker delivers everything again
        ingest_tlog.apply_async((r.retailer_id, file_id, name))
        ingest_tlog.apply_async((r.retailer_id, file_id, name))
    time.sleep(3)
    orders = db.execute(
        "SELECT count(*), count(DISTINCT external_id) FROM orders WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone()
    assert orders == (10, 10)
    statuses = db.execute(
        "SELECT status, count(*) FROM tlog_files WHERE retailer_id = %s GROUP BY 1", (r.retailer_id,)
    ).fetchall()
    assert statuses == [("processed", 10)]


def test_a_file_that_reappears_under_a_processed_name_is_archived_as_duplicate(celery_worker, make_retailer, db):
    r = make_retailer()
    data = dumps(make_sale(1, "SEND_SALE", order_prefix=f"D{uuid.uuid4().hex[:4].upper()}"))
    r.put("again.json", data)
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    r.put("again.json", data)
    done = cli("scan", r.retailer_id, "--wait", "--timeout", "60")
    assert done.returncode == 0 and "duplicate" in done.stdout
    rows = db.execute(
        "SELECT status, moved_to FROM tlog_files WHERE retailer_id = %s ORDER BY id", (r.retailer_id,)
    ).fetchall()
    assert [s for s, _ in rows] == ["processed", "duplicate"]
    dup_id = db.execute("SELECT max(id) FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0]
    assert rows[1][1] == str(r.archive / f"{dup_id}-again.json.duplicate")
    assert rows[0][1] != rows[1][1] and all((r.archive / p.rpartition("/")[2]).exists() for _, p in rows)
    assert r.inbound_names() == []
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0] == 1


def test_in_store_sales_are_skipped_for_a_retailer_that_is_not_order_master(celery_worker, make_retailer, db):
    r = make_retailer(order_master=False)
    r.put("instore.json", dumps(make_sale(1, "IN_STORE", order_prefix=f"S{uuid.uuid4().hex[:4].upper()}")))
    r.put("mixed.json", dumps(make_sale(2, "MIXED", lines=2, order_prefix=f"S{uuid.uuid4().hex[:4].upper()}")))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    rows = dict(
        db.execute("SELECT file_name, status FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchall()
    )
    assert rows == {"instore.json": "skipped", "mixed.json": "processed"}


def test_beat_scans_each_retailer_on_its_own_schedule(celery_worker, make_retailer, db, tmp_path):
    fast = make_retailer(poll_seconds=1)
    slow = make_retailer(schedule="0 0 1 1 *")  # once a year: must not run during this test
    fast.put("a.json", dumps(make_sale(1, "IN_STORE", order_prefix=f"F{uuid.uuid4().hex[:4].upper()}")))
    slow.put("b.json", dumps(make_sale(2, "IN_STORE", order_prefix=f"F{uuid.uuid4().hex[:4].upper()}")))
    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed below
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO", "-s", str(tmp_path / "schedule")],
        env=os.environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_final(db, fast.retailer_id, 1, timeout=30) == {"processed": 1}
        fast.put("c.json", dumps(make_sale(3, "IN_STORE", order_prefix=f"F{uuid.uuid4().hex[:4].upper()}")))
        assert wait_final(db, fast.retailer_id, 2, timeout=30) == {"processed": 2}
    except AssertionError:
        print((tmp_path / "beat.log").read_text()[-4000:])
        raise
    finally:
        beat.terminate()
        beat.wait(timeout=20)
        log.close()
    assert slow.inbound_names() == ["b.json"]
    assert (
        db.execute(
            "SELECT count(*) FROM scan_runs WHERE retailer_id = %s AND requested_by = 'beat'", (fast.retailer_id,)
        ).fetchone()[0]
        >= 2
    )


def test_a_bad_retailers_file_stops_the_worker_with_a_clear_message(tmp_path, pg_dsn, broker_url):
    bad = tmp_path / "retailers.toml"
    bad.write_text(
        '[retailers.acme]\nproduct_store_id = "A"\ncurrency = "usd"\norder_master = true\n'
        'poll_seconds = 5\n[retailers.acme.sftp]\nhost = "h"\nusername = "u"\nprivate_key = "/k"\n'
        'known_hosts = "/kh"\norders_dir = "/o"\narchive_dir = "/a"\nerror_dir = "/e"\n'
    )
    env = dict(os.environ, TLOGSYNC_RETAILERS=str(bad))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "-Q",
            "tlog.ingest",
            "--pool",
            "solo",
            "--hostname",
            f"bad-{uuid.uuid4().hex[:6]}@x",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "retailer 'acme': currency: must be ISO 4217" in done.stderr + done.stdout


def test_scan_of_an_unknown_retailer_is_refused(celery_worker):
    done = cli("scan", "nobody")
    assert done.returncode == 1 and "unknown retailer 'nobody'" in done.stderr
