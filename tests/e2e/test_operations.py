"""Operating at peak: several workers share the work with no duplicate processing, metrics for
Prometheus, structured JSON logs and the operator's status screen."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import start_worker, vhost_env
from tests.e2e.test_pipeline import cli, wait_final
from tests.support.scrape import scrape_metrics
from tests.support.waiting import eventually
from worker.demo.tlogfactory import dumps, make_sale, mix

pytestmark = pytest.mark.e2e


def done_lines(log_text: str, retailer_id: str) -> list[str]:
    return [
        line
        for line in log_text.splitlines()
        if "tlogsync.ingest_tlog" in line and retailer_id in line and ": processed in" in line
    ]


def test_two_more_workers_on_other_hostnames_share_a_batch_without_duplicates(celery_worker, make_retailer, db):
    r = make_retailer()
    for name, data in mix(200, seed=21, order_prefix=f"H{uuid.uuid4().hex[:4].upper()}"):
        r.put(name, data)
    extra = [start_worker(f"scale{i}-{secrets.token_hex(2)}", queues="tlog.ingest", concurrency=1) for i in range(2)]
    try:
        assert cli("scan", r.retailer_id, "--wait", "--timeout", "120").returncode == 0
    finally:
        for wp in extra:
            wp.stop()
    assert wait_final(db, r.retailer_id, 200) == {"processed": 200}
    per_worker = {
        wp.name: len(
            [
                line
                for line in wp.log.read_text().splitlines()
                if "tlogsync.ingest_tlog" in line and r.retailer_id in line
            ]
        )
        for wp in extra
    }
    per_worker["main"] = len(
        [
            line
            for line in celery_worker.log.read_text().splitlines()
            if "tlogsync.ingest_tlog" in line and r.retailer_id in line and " in " in line
        ]
    )
    assert sum(1 for n in per_worker.values() if n > 0) >= 2, per_worker  # the work was shared
    assert db.execute(
        "SELECT max(attempts), count(*) FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone() == (1, 200)  # each file started exactly once
    assert db.execute(
        "SELECT count(*), count(DISTINCT external_id) FROM orders WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone() == (200, 200)


def test_prometheus_metrics_per_retailer(celery_worker, make_retailer, db):
    r = make_retailer()
    r.put("ok.json", dumps(make_sale(1, "SEND_SALE", order_prefix=f"M{uuid.uuid4().hex[:4].upper()}")))
    r.put("bad.json", b"{")
    r.put("unstocked.json", dumps(make_sale(2, "IN_STORE", lines=1, order_prefix=f"M{uuid.uuid4().hex[:4].upper()}")))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    deadline = time.monotonic() + 30
    while db.execute(
        "SELECT count(*) FROM order_followups WHERE retailer_id = %s AND status = 'pending'", (r.retailer_id,)
    ).fetchone()[0]:
        assert time.monotonic() < deadline, "follow-ups not done"
        time.sleep(0.2)
    text = scrape_metrics()
    rid = r.retailer_id
    assert f'tlogsync_files{{feed="orders",retailer="{rid}",status="processed"}} 2.0' in text
    assert f'tlogsync_files{{feed="orders",retailer="{rid}",status="failed"}} 1.0' in text
    assert f'tlogsync_orders{{order_type="SEND_SALE",retailer="{rid}"}} 1.0' in text
    # the in-store sale of a product the store had no stock row for: negative stock, surfaced
    assert f'tlogsync_negative_stock_rows{{retailer="{rid}"}} 1.0' in text
    assert f'tlogsync_oldest_unprocessed_file_age_seconds{{retailer="{rid}"}} 0.0' in text
    assert f'tlogsync_last_scan_age_seconds{{retailer="{rid}"}}' in text
    assert 'tlogsync_dead_letters{queue="tlog.ingest"}' in text
    assert 'tlogsync_queue_messages{queue="tlog.ingest"}' in text
    assert "tlogsync_workers " in text and "tlogsync_workers 0.0" not in text


def test_json_logs_carry_retailer_file_task_outcome_and_duration(make_retailer, db, pg_dsn, broker_url):
    r = make_retailer()
    r.put("json.json", dumps(make_sale(1, "IN_STORE", order_prefix=f"J{uuid.uuid4().hex[:4].upper()}")))
    with vhost_env("json", TLOGSYNC_LOG_FORMAT="json") as env:
        wp = start_worker(f"json-{secrets.token_hex(2)}", queues="tlog.scan,tlog.ingest", concurrency=1, env=env)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "worker.cli", "scan", r.retailer_id, "--wait"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout
        finally:
            wp.stop()
    events = []
    for line in wp.log.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    done = [e for e in events if e.get("task") == "tlogsync.ingest_tlog" and e.get("retailer") == r.retailer_id]
    assert done, "no JSON event for the ingest task"
    event = done[-1]
    assert event["file"] == "json.json" and event["outcome"] == "processed" and event["task_id"]
    assert event["duration_ms"] > 0 and event["level"] == "INFO" and "ts" in event
    assert "private_key" not in wp.log.read_text() and "BEGIN OPENSSH" not in wp.log.read_text()


def test_status_is_the_operators_one_screen(celery_worker, make_retailer):
    r = make_retailer()
    r.put("bad.json", b"not json")
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    done = cli("status", "--json")
    report = json.loads(done.stdout)
    mine = report["retailers"][r.retailer_id]
    assert mine["files"] == {"orders:failed": 1} and mine["last_scan"]["dispatched"] == 1
    assert any(f["file"] == "bad.json" and "invalid JSON" in f["reason"] for f in report["recent_failures"])
    assert set(report["dead_letters"]) >= {"tlog.ingest", "brokering"}
    table = cli("status")
    assert table.returncode == 0 and r.retailer_id in table.stdout and "recent failures" in table.stdout


def test_the_audit_task_runs_on_a_worker_and_stores_its_report(celery_worker, make_retailer, db, tmp_path):
    from worker.celery import app

    r = make_retailer()
    r.put("day.json", dumps(make_sale(1, "IN_STORE", order_prefix=f"A{uuid.uuid4().hex[:4].upper()}")))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    app.send_task("tlogsync.ops.audit_retailer", (r.retailer_id,), {"business_date": "2024-01-12"})
    eventually(
        lambda: (
            db.execute(
                "SELECT consistent FROM audit_reports WHERE retailer_id = %s AND business_date = '2024-01-12'",
                (r.retailer_id,),
            ).fetchone()
            == (True,)
        ),
        "the audit report",
    )
    # due_only before the retailer's audit time (none set: 00:00, so yesterday is due and not yet reported)
    app.send_task("tlogsync.ops.audit_retailer", (r.retailer_id,), {"due_only": True})
    eventually(
        lambda: (
            db.execute("SELECT count(*) FROM audit_reports WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0] == 2
        ),
        "the due audit",
    )


def test_every_warning_and_error_of_a_real_worker_names_retailer_file_or_order_task_and_queue(
    make_retailer, sshd, db, tmp_path
):
    """A JSON-logging worker of its own meets a bad file (a warning with the reason), an SFTP host that refuses
    connections (retry warnings) and an ingest message naming a ledger row that does not exist (a dead letter):
    each of those lines carries the retailer, the file, the task id and the queue."""
    from tests.conftest import render_retailers
    from worker.demo.sshd import free_port

    good = make_retailer()
    good.put("broken.json", b'{"orderId": ')
    unreachable = f"down_{secrets.token_hex(3)}"
    retailers = tmp_path / "retailers.toml"
    retailers.write_text(
        render_retailers(sshd, [good])
        + f"""
[retailers.{unreachable}]
product_store_id = "DOWN"
currency = "USD"
order_master = true
poll_seconds = 3600
[retailers.{unreachable}.sftp]
host = "127.0.0.1"
port = {free_port()}
username = "nobody"
private_key = "{sshd.private_key}"
known_hosts = "{sshd.known_hosts}"
orders_dir = "/in"
archive_dir = "/in/archive"
error_dir = "/in/error"
"""
    )
    overrides = {
        "TLOGSYNC_LOG_FORMAT": "json",
        "TLOGSYNC_RETAILERS": str(retailers),
        "TLOGSYNC_SCAN_MAX_RETRIES": "1",
        "TLOGSYNC_SCAN_RETRY_BASE": "1",
        "TLOGSYNC_SCAN_RETRY_CAP": "1",
    }
    with vhost_env("logctx", **overrides) as env:
        wp = start_worker(f"logctx-{secrets.token_hex(2)}", queues="tlog.scan,tlog.ingest", concurrency=1, env=env)
        try:

            def run(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True, timeout=120
                )

            assert run("scan", good.retailer_id, "--wait", "--timeout", "60").returncode == 0
            assert run("scan", unreachable).returncode == 0  # enqueued; the worker retries, then gives up
            ghost = 2_000_000_000 + secrets.randbelow(1_000_000)
            sent = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from worker.celery import app; "
                    "app.send_task('tlogsync.ingest_tlog', (sys.argv[1], int(sys.argv[2]), 'ghost.json'))",
                    good.retailer_id,
                    str(ghost),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sent.returncode == 0, sent.stderr

            def events() -> list[dict]:
                return [json.loads(line) for line in wp.log.read_text().splitlines() if line.startswith("{")]

            def seen(predicate) -> bool:  # type: ignore[no-untyped-def]
                return any(predicate(e) for e in events())

            eventually(
                lambda: seen(lambda e: e.get("outcome") == "retry" and e.get("retailer") == unreachable), "retry"
            )
            eventually(lambda: seen(lambda e: e.get("file_id") == ghost and e["level"] == "ERROR"), "dead letter")
        finally:
            wp.stop()
    lines = [e for e in events() if e["logger"].startswith("tlogsync") and e["level"] in ("WARNING", "ERROR")]
    failed = [e for e in lines if e.get("file") == "broken.json"]
    assert failed and failed[0]["level"] == "WARNING" and failed[0]["outcome"] == "failed"
    assert "broken.json" in failed[0]["message"] and failed[0]["error"] in failed[0]["message"]
    retries = [e for e in lines if e.get("outcome") == "retry"]
    assert retries and all(e["retailer"] == unreachable and e["queue"] == "tlog.scan" for e in retries)
    dead = [e for e in lines if e.get("file_id") == ghost]
    assert dead and all(e["retailer"] == good.retailer_id and e["queue"] == "tlog.ingest" for e in dead)
    assert any(e.get("outcome") == "dead-lettered" and e["file"] == "ghost.json" for e in dead)
    for line in lines:
        assert line.get("task_id") and line.get("task") and line.get("queue"), line
        assert line.get("retailer"), line
        if line["task"] != "tlogsync.scan_retailer":  # a scan is about a retailer, not one file or order
            assert line.get("file") or line.get("file_id") or line.get("order_id"), line
