"""The retailers file edited under running workers: a pool child recycled while the file is invalid uses the
last valid configuration (not the parent's start-up copy), and the invalid file shows in the status screen
and the metrics until it is fixed."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import SESSION_DIR, render_retailers, start_worker, vhost_env
from tests.support.waiting import eventually
from worker.demo.sshd import free_port, port_open
from worker.demo.tlogfactory import dumps, make_sale

pytestmark = pytest.mark.e2e


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def scan(env: dict[str, str], retailer_id: str) -> None:
    """Send a scan the way beat does: a message straight to the broker, no retailers file read on this side."""
    done = run(
        env,
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "call",
        "tlogsync.scan_retailer",
        "--args",
        json.dumps([retailer_id]),
        "--kwargs",
        json.dumps({"scan_id": f"reload-{uuid.uuid4()}", "requested_by": "test"}),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def outcome(db, retailer_id: str, name: str) -> str | None:
    """The file's final status once moved; 'dead-lettered: ...' when a message about its retailer gave up."""
    row = db.execute(
        "SELECT status FROM tlog_files WHERE retailer_id = %s AND file_name = %s AND moved_at IS NOT NULL",
        (retailer_id, name),
    ).fetchone()
    if row and row[0] != "claimed":
        return str(row[0])
    dead = db.execute(
        "SELECT reason FROM dead_letters WHERE retailer_id = %s ORDER BY created_at DESC LIMIT 1", (retailer_id,)
    ).fetchone()
    return f"dead-lettered: {dead[0]}" if dead else None


def metric(port: int, path: Path) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:  # noqa: S310
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(f'tlogsync_retailers_file_valid{{file="{path}"}}'):
            return line.rsplit(" ", 1)[1]
    return None


def test_a_recycled_pool_child_uses_the_last_valid_retailers_file_and_the_invalid_file_is_reported(
    make_retailer, sshd, db, pg_dsn, broker_url
):
    first, added = make_retailer(), make_retailer()
    path = SESSION_DIR / f"retailers-reload-{secrets.token_hex(3)}.toml"
    write(path, render_retailers(sshd, [first]))
    # every task in a fresh child forked from the parent, which read the file once, at start-up
    with vhost_env("reload", TLOGSYNC_RETAILERS=str(path), TLOGSYNC_MAX_TASKS_PER_CHILD="1") as env:
        wp = start_worker(f"reload-{secrets.token_hex(2)}", queues="tlog.scan,tlog.ingest", concurrency=1, env=env)
        port = free_port()
        metrics = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "metrics", "--port", str(port), "--address", "127.0.0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # a retailer added and order_master turned off for the first one, while the worker runs
            first.options["order_master"] = False
            write(path, render_retailers(sshd, [first, added]))
            first.put("before.json", dumps(make_sale(1, "IN_STORE", order_prefix=f"RL{uuid.uuid4().hex[:4]}")))
            scan(env, first.retailer_id)
            eventually(lambda: outcome(db, first.retailer_id, "before.json") == "skipped", "the new file used")
            # then the file is broken; the next child is forked from the parent's start-up copy
            write(path, render_retailers(sshd, [first, added]) + "\n[retailers.broken\n")
            added.put("added.json", dumps(make_sale(2, "SEND_SALE", order_prefix=f"RL{uuid.uuid4().hex[:4]}")))
            first.put("after.json", dumps(make_sale(3, "IN_STORE", order_prefix=f"RL{uuid.uuid4().hex[:4]}")))
            scan(env, added.retailer_id)
            scan(env, first.retailer_id)
            eventually(lambda: outcome(db, added.retailer_id, "added.json") is not None, "the added retailer's file")
            assert outcome(db, added.retailer_id, "added.json") == "processed"
            eventually(lambda: outcome(db, first.retailer_id, "after.json") is not None, "the first retailer's file")
            assert outcome(db, first.retailer_id, "after.json") == "skipped"  # order_master stayed off
            assert (
                db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (added.retailer_id,)).fetchone()[0]
                == 1
            )

            # reported: the worker's log, `tlogsync status` (both forms), the metric
            log = wp.log.read_text()
            assert "not valid TOML" in log and "using the last valid configuration" in log
            status = run(env, sys.executable, "-m", "worker.cli", "status", "--json")
            assert status.returncode == 0, status.stdout + status.stderr
            (mine,) = [f for f in json.loads(status.stdout)["retailers_files"] if f["file"] == str(path)]
            assert mine["valid"] is False and "not valid TOML" in mine["error"] and mine["invalid_since"]
            assert mine["in_use_sha256"] and mine["in_use_loaded_at"]
            text = run(env, sys.executable, "-m", "worker.cli", "status")
            assert f"retailers file {path}: INVALID" in " ".join(text.stdout.split())
            listed = run(env, sys.executable, "-m", "worker.cli", "retailers")
            assert listed.returncode == 0 and added.retailer_id in listed.stdout
            assert "not valid TOML" in listed.stderr
            deadline = time.monotonic() + 30
            while not port_open("127.0.0.1", port):
                assert metrics.poll() is None and time.monotonic() < deadline, "metrics endpoint did not start"
                time.sleep(0.1)
            assert metric(port, path) == "0.0"

            # fixed: valid again everywhere
            write(path, render_retailers(sshd, [first, added]))
            # the exporter refreshes its figures in the background (TLOGSYNC_METRICS_REFRESH): by the next refresh
            eventually(lambda: metric(port, path) == "1.0", "the metric valid again", timeout=30)
            status = run(env, sys.executable, "-m", "worker.cli", "status", "--json")
            (mine,) = [f for f in json.loads(status.stdout)["retailers_files"] if f["file"] == str(path)]
            assert mine["valid"] is True and mine["error"] is None
        finally:
            metrics.terminate()
            metrics.wait(timeout=10)
            wp.stop()
    os.unlink(path)
