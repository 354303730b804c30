"""`tlogsync scan --wait` and `replay-file --wait` as an operator's script uses them: progress on stderr, stdout
pure JSON with --json, the files the in-flight cap held back reported (exit 1) or waited for (--drain), exit 1
when a replayed file fails again, and one line with exit 3 when the SFTP host cannot be reached."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid

import pytest

from tests.conftest import start_worker, vhost_env
from worker.demo.sshd import free_port
from worker.demo.tlogfactory import dumps, make_sale

pytestmark = pytest.mark.e2e


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_the_files_held_back_by_the_in_flight_cap_are_reported_then_drained(make_retailer, db):
    r = make_retailer()
    prefix = f"W{uuid.uuid4().hex[:4].upper()}"
    for i in range(5):
        r.put(f"w{i}.json", dumps(make_sale(i, "SEND_SALE", order_prefix=prefix)))
    with vhost_env("cap", TLOGSYNC_MAX_IN_FLIGHT="3") as env:
        wp = start_worker(f"cap-{secrets.token_hex(2)}", queues="tlog.scan,tlog.ingest", concurrency=1, env=env)
        try:
            first = run(env, "scan", r.retailer_id, "--wait", "--timeout", "90", "--json")
            drained = run(env, "scan", r.retailer_id, "--wait", "--drain", "--timeout", "90", "--json")
        finally:
            wp.stop()
    assert first.returncode == 1, first.stderr
    assert json.loads(first.stdout) == {"files": 3, "statuses": {"processed": 3}, "deferred": 2}  # stdout: JSON only
    assert "2 new file(s) of" in first.stderr and "held back by the in-flight cap" in first.stderr
    assert "TLOGSYNC_MAX_IN_FLIGHT=3" in first.stderr
    assert "3/3 final, 3 dispatched, 2 deferred (in-flight cap)" in first.stderr  # the progress line
    assert "dispatched 3, deferred 2 (in-flight cap reached)" in first.stderr
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout) == {"files": 2, "statuses": {"processed": 2}}
    assert "2/2 final" in drained.stderr
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (5,)


def test_replay_file_wait_exits_1_when_the_file_fails_again(celery_worker, make_retailer, db):
    r = make_retailer()
    sale = make_sale(1, "SEND_SALE", order_prefix=f"RW{uuid.uuid4().hex[:4].upper()}")
    r.put("still-broken.json", dumps(dict(sale, totalAmount=sale["totalAmount"] + 1)))
    scanned = run(dict(os.environ), "scan", r.retailer_id, "--wait", "--timeout", "60", "--json")
    assert scanned.returncode == 0 and json.loads(scanned.stdout)["statuses"] == {"failed": 1}
    assert "1 file(s) failed" in scanned.stderr
    [failed_id] = db.execute("SELECT id FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchone()
    done = run(dict(os.environ), "replay-file", r.retailer_id, f"{failed_id}-still-broken.json", "--wait", "--json")
    assert done.returncode == 1, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "failed" and outcome["files"] == 1 and "total" in outcome["error"].lower()
    assert "failed again" in done.stderr and "1/1 final" in done.stderr
    assert "Traceback" not in done.stderr


def test_replay_file_with_the_sftp_host_unreachable_is_one_line_and_exit_3(sshd, db, tmp_path):
    gone = f"gone_{secrets.token_hex(3)}"
    db.execute(
        "INSERT INTO tlog_files (retailer_id, file_name, remote_path, status, error, finished_at, moved_to, moved_at)"
        " VALUES (%s, 'x.json', '/in/x.json', 'failed', 'bad total', now(), '/in/error/x.json', now())",
        (gone,),
    )
    retailers = tmp_path / "retailers.toml"
    retailers.write_text(
        f"""
[retailers.{gone}]
product_store_id = "GONE"
currency = "USD"
order_master = true
poll_seconds = 3600
[retailers.{gone}.sftp]
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
    env = dict(os.environ, TLOGSYNC_RETAILERS=str(retailers), TLOGSYNC_SFTP_TIMEOUT="3")
    done = run(env, "replay-file", gone, "x.json", "--wait", "--json")  # the name it arrived under
    assert done.returncode == 3, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "sftp 127.0.0.1" in done.stderr
