"""Lose nothing, duplicate nothing: one fault per test, injected mid-batch into real workers, RabbitMQ,
PostgreSQL and sshd, then the invariants (tests/faults/harness.py: check_invariants)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.faults.harness import check_invariants, drain, make_batch, wait_until
from worker.demo.tlogfactory import dumps, make_sale

pytestmark = pytest.mark.faults


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


@pytest.fixture
def batch(make_retailer, inventory, fault_env):
    made = []

    def make(**kwargs):
        b = make_batch(make_retailer, inventory, fault_env, **kwargs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def start(batch):
    batch.started = time.monotonic()
    batch.beat()


def test_kill_9_of_a_worker_child_mid_batch(batch, db):
    b = batch()
    wp = b.worker("child-kill")
    start(b)
    wait_until(db, b, len(b.names) // 4)
    victims = children(wp.process.pid)
    assert victims, "no pool children to kill"
    os.kill(victims[0], signal.SIGKILL)
    wait_until(db, b, len(b.names) // 2)
    os.kill(children(wp.process.pid)[-1], signal.SIGKILL)
    check_invariants(db, b, "kill -9 worker child (twice)", drain(db, b))


def test_kill_9_of_the_worker_main_process_then_a_restart(batch, db):
    b = batch()
    wp = b.worker("main-kill")
    start(b)
    wait_until(db, b, len(b.names) // 3)
    os.killpg(wp.process.pid, signal.SIGKILL)  # the whole worker: main process and its children
    wp.process.wait()
    time.sleep(1)
    b.worker("restarted")
    check_invariants(db, b, "kill -9 worker main process, restart", drain(db, b))


def test_rabbitmq_connections_closed_mid_batch(batch, db):
    b = batch()
    b.worker("amqp")
    start(b)
    wait_until(db, b, len(b.names) // 4)
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "tlogsync fault test"], check=True, capture_output=True
    )
    wait_until(db, b, len(b.names) // 2)
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "tlogsync fault test"], check=True, capture_output=True
    )
    check_invariants(db, b, "RabbitMQ connections closed (twice)", drain(db, b))


def test_postgresql_connections_terminated_mid_batch(batch, db, pg_dsn):
    b = batch()
    b.worker("pg")
    start(b)
    killed = 0
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        for fraction in (5, 3, 2):
            wait_until(db, b, len(b.names) // fraction)
            killed += admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'tlogsync-worker-%'"
            ).fetchone()[0]
    assert killed > 0
    check_invariants(db, b, f"PostgreSQL backends terminated ({killed})", drain(db, b))


def test_sshd_stopped_for_a_while_mid_scan(batch, db, sshd):
    b = batch()
    b.worker("sftp")
    start(b)
    wait_until(db, b, len(b.names) // 4)
    sshd.stop()
    time.sleep(4)
    sshd.start()
    check_invariants(db, b, "sshd stopped 4 s mid-batch", drain(db, b))


def test_two_beats_and_two_manual_scans_at_once(batch, db):
    b = batch()
    b.worker("beats")
    b.started = time.monotonic()
    b.beat()
    b.beat()
    scans = [
        subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "scan", b.retailer.retailer_id],
            env=b.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    for proc in scans:
        proc.wait(timeout=60)
    drained = drain(db, b)
    row = check_invariants(db, b, "two beats + two manual scans", drained)
    dispatched = db.execute(
        "SELECT sum(dispatched) FROM scan_runs WHERE retailer_id = %s", (b.retailer.retailer_id,)
    ).fetchone()[0]
    assert dispatched == row["files"]  # each file dispatched once, whoever scanned
    attempts = db.execute(
        "SELECT max(attempts) FROM tlog_files WHERE retailer_id = %s", (b.retailer.retailer_id,)
    ).fetchone()[0]
    assert attempts == 1


def test_a_poison_file_that_crashes_its_worker_every_time_is_failed_and_dead_lettered(batch, db):
    poison = "zz_poison_OrderTLog.json"
    b = batch(count=120, extra={poison: dumps(make_sale(1, "IN_STORE", order_prefix="POISON"))})
    b.worker("poison", extra_env={"TLOGSYNC_FAULT_CRASH_FILES": "*poison*", "TLOGSYNC_MAX_ATTEMPTS": "3"})
    start(b)
    drained = drain(db, b, timeout=300)
    check_invariants(db, b, "poison file kills its worker every time", drained)
    status, error = db.execute(
        "SELECT status, error FROM tlog_files WHERE retailer_id = %s AND file_name = %s",
        (b.retailer.retailer_id, poison),
    ).fetchone()
    assert status == "failed" and error.startswith("gave up after 3 attempts")
    assert len(list(b.retailer.error.glob(f"*-{poison}.error.txt"))) == 1  # <ledger id>-<name>.error.txt
    listed = b.cli("dlq", "list", "tlog.ingest", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert any(poison in d["args"] and "gave up after 3 attempts" in (d["reason"] or "") for d in letters)
