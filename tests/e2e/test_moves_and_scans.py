"""Losing nothing with real workers: moves that fail and are retried with backoff, follow-ups that do not
wait for the move, files a scan cannot take shown to operators, orphaned claims sent at once, and a scan
that finds another running giving up and saying so."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import need, start_worker, vhost_env
from tests.e2e.test_pipeline import cli
from tests.support.scrape import scrape_metrics
from tests.support.waiting import eventually
from worker.adapters.sftp import SftpSource
from worker.core.retailers import load_retailers
from worker.demo.tlogfactory import dumps, make_sale
from worker.services.feeds import orders_feed
from worker.services.scan import scan_feed

pytestmark = pytest.mark.e2e


@contextmanager
def unwritable(*folders: Path) -> Iterator[None]:
    """Folders nobody may write into: chmod a-w, and for root (whom modes do not stop) chattr +i."""
    immutable = os.geteuid() == 0
    if immutable:
        need(shutil.which("chattr") is not None, "chattr (root ignores chmod; the test makes folders immutable)")
    modes = [folder.stat().st_mode for folder in folders]
    try:
        for folder in folders:
            folder.chmod(0o555)
            if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
                pytest.skip("this file system cannot make a folder immutable")
        try:
            (folders[0] / "probe").write_bytes(b"")
        except PermissionError:
            pass
        else:
            pytest.skip("the folder stayed writable")
        yield
    finally:
        for folder, mode in zip(folders, modes, strict=True):
            if immutable:
                subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            folder.chmod(mode)


def scan_now(env: dict[str, str], db, retailer_id: str, timeout: float = 60) -> str:
    """Enqueue a scan with the command line and wait until its run is recorded; its scan id."""
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "scan", retailer_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    scan_id = re.search(r"scan (cli-\S+) enqueued", done.stdout).group(1)
    eventually(
        lambda: db.execute("SELECT 1 FROM scan_runs WHERE id = %s", (scan_id,)).fetchone(),
        what=f"scan {scan_id}",
        timeout=timeout,
    )
    return scan_id


def test_unwritable_archive_and_error_folders_pile_up_no_dead_letters_and_hold_back_no_follow_ups(
    make_retailer, db, pg_dsn, broker_url
):
    r = make_retailer()
    prefix = f"U{uuid.uuid4().hex[:4].upper()}"
    sales = {
        f"{kind.lower()}{i}.json": make_sale(i, kind, order_prefix=prefix)
        for i, kind in enumerate(["SEND_SALE", "IN_STORE", "SEND_SALE", "IN_STORE"])
    }
    for name, sale in sales.items():
        r.put(name, dumps(sale))
    r.put("broken.json", b"{not json")
    rid, names = r.retailer_id, [*sales, "broken.json"]
    # a failed move waits 3 s, then 6 s (then 6 s, the cap): short enough for a test
    with vhost_env("moves", TLOGSYNC_INGEST_RETRY_BASE="3", TLOGSYNC_INGEST_RETRY_CAP="6") as env:
        wp = start_worker(f"moves-{secrets.token_hex(2)}", queues="tlog.scan,tlog.ingest,brokering,inventory", env=env)
        try:
            with unwritable(r.archive, r.error):
                scan_now(env, db, rid)
                eventually(
                    lambda: (
                        db.execute(
                            "SELECT count(*) FROM tlog_files WHERE retailer_id = %s AND status <> 'claimed'"
                            " AND moved_at IS NULL AND move_attempts >= 1",
                            (rid,),
                        ).fetchone()[0]
                        == 5
                    ),
                    what="every file final, its move failed",
                )
                # the committed orders' follow-ups went out at once, not after the 15-minute outbox sweep
                eventually(
                    lambda: (
                        db.execute(
                            "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FROM order_followups"
                            " WHERE retailer_id = %s",
                            (rid,),
                        ).fetchone()
                        == (4, 4)
                    ),
                    what="the follow-ups of the four orders done",
                )
                for _ in range(3):
                    scan_now(env, db, rid)
                time.sleep(1)
                attempts = db.execute(
                    "SELECT max(move_attempts), count(*) FILTER (WHERE moved_at IS NULL) FROM tlog_files"
                    " WHERE retailer_id = %s",
                    (rid,),
                ).fetchone()
                assert attempts[1] == 5 and attempts[0] <= 3, attempts  # one try per backoff, not one per scan
                status = json.loads(cli("status", "--json").stdout)["retailers"][rid]
                assert status["unmoved"]["files"] == 5 and status["unmoved"]["oldest_age_s"] > 0
                assert "Permission denied" in status["unmoved"]["last_error"]
                assert (r.inbound / "broken.json").exists()
            # writable again: the next scan after each file's next-move time finishes every move, once
            eventually(
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM tlog_files WHERE retailer_id = %s AND next_move_at > now()", (rid,)
                    ).fetchone()[0]
                    == 0
                ),
                what="the backoff to pass",
                timeout=30,
            )
            scan_now(env, db, rid)
            eventually(
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM tlog_files WHERE retailer_id = %s AND moved_at IS NOT NULL", (rid,)
                    ).fetchone()[0]
                    == 5
                ),
                what="every file moved",
            )
        finally:
            wp.stop()
    assert db.execute("SELECT count(*) FROM dead_letters WHERE retailer_id = %s", (rid,)).fetchone() == (0,)
    rows = dict(db.execute("SELECT file_name, id FROM tlog_files WHERE retailer_id = %s", (rid,)).fetchall())
    assert sorted(rows) == sorted(names)  # one row per file
    assert r.inbound_names() == []
    assert sorted(p.name for p in r.archive.iterdir()) == sorted(f"{rows[n]}-{n}" for n in sales)
    for name, sale in sales.items():
        assert (r.archive / f"{rows[name]}-{name}").read_bytes() == dumps(sale)
    broken = f"{rows['broken.json']}-broken.json"
    assert sorted(p.name for p in r.error.iterdir()) == [broken, f"{broken}.error.txt"]
    assert db.execute(
        "SELECT count(*), count(DISTINCT external_id) FROM orders WHERE retailer_id = %s", (rid,)
    ).fetchone() == (4, 4)


def test_a_future_dated_file_and_entries_that_are_not_files_show_in_status_and_metrics(celery_worker, make_retailer):
    r = make_retailer()
    r.put("ok.json", dumps(make_sale(1, "SEND_SALE", order_prefix=f"Y{uuid.uuid4().hex[:4].upper()}")))
    r.put("future.json", b"{}", age=-3600)  # the SFTP server's clock is an hour ahead of ours
    (r.root / "elsewhere.json").write_bytes(b"{}")
    (r.inbound / "link.json").symlink_to(r.root / "elsewhere.json")
    os.mkfifo(r.inbound / "pipe.json")
    (r.inbound / "folder.json").mkdir()
    done = cli("scan", r.retailer_id, "--wait", "--timeout", "60", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["files"] == 1

    report = json.loads(cli("status", "--json").stdout)["retailers"][r.retailer_id]
    listing = report["listing"]
    assert (listing["too_young"], listing["ignored"]) == (1, 3)
    assert -3700 < listing["oldest_too_young_s"] < -3500  # negative: dated in the future
    table = cli("status").stdout
    assert "too young 1" in table and "ignored 3" in table

    text = scrape_metrics()
    rid = r.retailer_id
    assert f'tlogsync_files_too_young{{retailer="{rid}"}} 1.0' in text
    assert f'tlogsync_files_ignored{{retailer="{rid}"}} 3.0' in text
    [age] = re.findall(rf'tlogsync_oldest_too_young_seconds{{retailer="{rid}"}} (\S+)', text)
    assert -3700 < float(age) < -3500
    assert f'tlogsync_unmoved_files{{retailer="{rid}"}} 0.0' in text


def test_claims_of_a_scan_that_died_before_publishing_are_sent_by_the_next_scan_not_after_the_timer(
    celery_worker, make_retailer, ledger, db
):
    r = make_retailer()
    prefix = f"K{uuid.uuid4().hex[:4].upper()}"
    for i in range(5):
        r.put(f"k{i}.json", dumps(make_sale(i, "SEND_SALE", order_prefix=prefix)))
    retailer = load_retailers(conftest.RETAILERS_PATH)[r.retailer_id]
    source = SftpSource(retailer.sftp)
    try:  # a scan commits its claims and is killed before it publishes: the claim step, and nothing more
        died = scan_feed(retailer, orders_feed(retailer), source, ledger, 2000, timedelta(minutes=15))
    finally:
        source.close()
    assert len(died.dispatch) == 5
    started = time.monotonic()
    done = cli("scan", r.retailer_id, "--wait", "--timeout", "45", "--json")  # TLOGSYNC_REDISPATCH_AFTER is 900
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"files": 5, "statuses": {"processed": 5}}
    assert time.monotonic() - started < 45
    assert db.execute(
        "SELECT count(*), max(attempts) FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone() == (5, 1)


def test_a_scan_that_finds_another_scan_of_its_retailer_running_gives_up_at_once_and_says_so(
    celery_worker, make_retailer, ledger, db
):
    r = make_retailer()
    r.put("a.json", dumps(make_sale(1, "SEND_SALE", order_prefix=f"L{uuid.uuid4().hex[:4].upper()}")))
    busy = f"another scan of {r.retailer_id} is running"
    with ledger.scan_lock(r.retailer_id) as held:  # as a long scan of this retailer would
        assert held
        started = time.monotonic()
        done = cli("scan", r.retailer_id, "--wait", "--timeout", "60", "--json")
        took = time.monotonic() - started
    assert done.returncode == 1 and json.loads(done.stdout.strip().splitlines()[-1]) == {"busy": busy}
    assert took < 30  # it did not wait for the lock
    assert db.execute("SELECT note, dispatched FROM scan_runs WHERE retailer_id = %s", (r.retailer_id,)).fetchall() == [
        (busy, 0)
    ]
    assert db.execute("SELECT count(*) FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (0,)
    last = json.loads(cli("status", "--json").stdout)["retailers"][r.retailer_id]["last_scan"]
    assert last["note"] == busy
    again = cli("scan", r.retailer_id, "--wait", "--timeout", "60", "--json")  # the lock is free again
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["files"] == 1
