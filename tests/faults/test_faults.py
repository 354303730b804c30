"""Lose nothing, duplicate nothing: one fault per test, injected mid-batch into real workers, RabbitMQ,
PostgreSQL and sshd, then the invariants (tests/faults/harness.py: check_invariants)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.faults.harness import check_invariants, drain, make_batch, progress, wait_until
from worker.demo.tlogfactory import dumps, make_sale

pytestmark = pytest.mark.faults


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


@pytest.fixture
def batch(make_retailer, inventory, fault_env):
    made = []

    def make(env=None, stock=None, **kwargs):
        # env, stock: the workers' environment and the inventory store, for a batch on services of its own
        b = make_batch(make_retailer, stock or inventory, env or fault_env, **kwargs)
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


# ----------------------------------------------- services restarted, a worker frozen, folders read-only


class Reconnecting:
    """The suite's own connection to a server that a test restarts: it reconnects, so polling goes on."""

    def __init__(self, dsn: str):
        self.dsn, self.conn = dsn, None

    def execute(self, query, params=None):
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                return self.conn.execute(query, params)
            except psycopg.OperationalError:
                self.conn = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def close(self):
        if self.conn is not None:
            self.conn.close()


def test_rabbitmq_restarted_mid_batch(batch, db, own_rabbitmq, fault_env):
    b = batch(count=150, env=dict(fault_env, TLOGSYNC_BROKER_URL=own_rabbitmq.url))
    b.worker("rmq-restart")
    start(b)
    wait_until(db, b, len(b.names) // 3)
    own_rabbitmq.restart()  # every connection dropped; durable queues and persistent messages carry the work
    check_invariants(db, b, "RabbitMQ node stopped and started again", drain(db, b, timeout=180))


def test_postgresql_restarted_mid_batch(batch, own_postgres, fault_env):
    from worker.adapters.postgres.inventory import PgInventory
    from worker.adapters.postgres.pool import open_pool

    dsn = own_postgres.database_url
    with open_pool(dsn, max_size=2, check=True) as stock:
        b = batch(count=150, env=dict(fault_env, TLOGSYNC_DATABASE_URL=dsn), stock=PgInventory(stock))
    db = Reconnecting(dsn)
    try:
        b.worker("pg-restart")
        start(b)
        for fraction in (4, 2):
            wait_until(db, b, len(b.names) // fraction)
            own_postgres.restart()
        check_invariants(db, b, "PostgreSQL restarted mid-batch (twice)", drain(db, b, timeout=180))
    finally:
        db.close()


def test_a_worker_frozen_longer_than_the_redispatch_delay_while_another_runs(batch, db):
    b = batch(count=120)
    # scans send a claimed, unfinished file again after 4 s; a scan frozen with the lock loses it after 3 s
    quick = {"TLOGSYNC_REDISPATCH_AFTER": "4", "TLOGSYNC_SCAN_LEASE": "3"}
    frozen = b.worker("frozen", extra_env=quick)
    b.worker("awake", extra_env=quick)
    start(b)
    wait_until(db, b, len(b.names) // 3)
    os.killpg(frozen.process.pid, signal.SIGSTOP)  # the main process and its children, messages in hand
    try:
        before = progress(db, b)
        time.sleep(10)
        during = progress(db, b) - before
    finally:
        os.killpg(frozen.process.pid, signal.SIGCONT)
    assert during > 0, "the other worker did not go on while one was frozen"
    check_invariants(db, b, "a worker frozen 10 s (redispatch after 4 s)", drain(db, b))
    dispatched = db.execute(
        "SELECT sum(dispatched) FROM scan_runs WHERE retailer_id = %s", (b.retailer.retailer_id,)
    ).fetchone()[0]
    assert dispatched > len(b.names)  # what the frozen worker held was sent again meanwhile


@contextmanager
def unwritable(*folders):
    """Folders nobody may write to, root included: mode 0555, and the immutable flag where we are root (root
    ignores the mode bits, and the suite's sshd serves SFTP as the user running the tests)."""
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    for folder in folders:
        folder.chmod(0o555)
        if immutable:
            subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        for folder in folders:
            if immutable:
                subprocess.run(["chattr", "-i", str(folder)], check=True)
            folder.chmod(0o755)


def test_archive_and_error_folders_unwritable_for_30_s(batch, db):
    b = batch(count=120)
    b.worker("readonly")
    start(b)
    wait_until(db, b, len(b.names) // 5)
    with unwritable(b.retailer.archive, b.retailer.error):
        probe = b.retailer.archive / "probe"
        with pytest.raises(OSError):
            probe.write_bytes(b"")  # the fault is real
        time.sleep(30)
    check_invariants(db, b, "archive and error folders read-only 30 s", drain(db, b, timeout=120))


# ------------------------------------------------------------------ hostile files


def sale_bytes(seq: int, prefix: str, **changes) -> bytes:
    return dumps(dict(make_sale(seq, "IN_STORE", order_prefix=prefix), **changes))


def colliding_names(prefix: str) -> dict[str, bytes]:
    """Names that become the same safe name in the error folder: accents and a ';' become '_'."""
    return {
        "café.json": sale_bytes(901, prefix),
        "cafè.json": sale_bytes(902, prefix),
        "x;y.json": sale_bytes(903, prefix),
        "x_y.json": b'{"orderId": "' + prefix.encode() + b'X_Y", "totalAmount": ',  # invalid JSON: failed too
    }


def hostile_files(prefix: str) -> dict[str, bytes]:
    """Files that must each be failed with a reason, never lost, never stop the batch."""
    surrogate = json.loads(sale_bytes(904, prefix))
    surrogate["orderProductList"][0]["name"] = "\ud800"  # written as the JSON escape \ud800: a lone surrogate
    huge = json.loads(sale_bytes(905, prefix))
    huge["totalAmount"] = 123456789012345678901234567890  # 30 digits
    return {
        **colliding_names(prefix),
        "zz_invalid.json": b'{"orderId": ',
        "zz_order_date.json": sale_bytes(906, prefix, orderDate=1e20),
        "zz_surrogate.json": json.dumps(surrogate).encode(),
        "zz_30_digits.json": json.dumps(huge).encode(),
        "zz_empty.json": b"",
    }


def test_a_burst_of_hostile_files_in_a_normal_batch(batch, db):
    prefix = f"HX{secrets.token_hex(2).upper()}"
    b = batch(count=150, extra=hostile_files(prefix))
    r = b.retailer
    # the same key twice: whichever reading tlogsync takes (refused, or the last one as JSON parsers do), the
    # file ends final and its order, if any, is stored once
    twice = json.loads(sale_bytes(907, prefix))
    dup_keys = b'{"orderId": "' + prefix.encode() + b'FIRST", ' + json.dumps(twice).encode()[1:]
    r.put("zz_duplicate_keys.json", dup_keys)
    b.names.append("zz_duplicate_keys.json")
    # not regular files, matching the pattern: never read (a FIFO would block its reader), never imported
    outside = r.root / "outside"
    outside.mkdir()
    target = outside / "target.json"
    target.write_bytes(sale_bytes(908, prefix))
    (r.inbound / "zz_link.json").symlink_to(target)
    os.mkfifo(r.inbound / "zz_fifo.json")
    b.worker("hostile")
    start(b)
    drained = drain(db, b)
    status, error = db.execute(
        "SELECT status, error FROM tlog_files WHERE retailer_id = %s AND file_name = 'zz_duplicate_keys.json'",
        (r.retailer_id,),
    ).fetchone()
    assert status == "failed" and "duplicate key" in error  # refused, the key named: never last-one-wins
    b.bad.add("zz_duplicate_keys.json")
    check_invariants(db, b, "hostile files mixed into a batch", drained)
    assert target.read_bytes() == sale_bytes(908, prefix)  # the link's target untouched and not imported
    assert not db.execute(
        "SELECT 1 FROM orders WHERE retailer_id = %s AND external_id = %s",
        (r.retailer_id, json.loads(target.read_bytes())["orderId"]),
    ).fetchone()
    reasons = dict(
        db.execute(
            "SELECT file_name, error FROM tlog_files WHERE retailer_id = %s AND status = 'failed'", (r.retailer_id,)
        ).fetchall()
    )
    assert all(reasons[name] for name in hostile_files(prefix)), "every failed file has its reason"


def test_failed_files_with_colliding_names_do_not_overwrite_each_other_in_the_error_folder(batch, db):
    prefix = f"CN{secrets.token_hex(2).upper()}"
    names = colliding_names(prefix)
    b = batch(count=20, bad_every=0, extra=names)
    b.worker("collide")
    start(b)
    drain(db, b)
    moved = dict(
        db.execute(
            "SELECT file_name, moved_to FROM tlog_files WHERE retailer_id = %s AND file_name = ANY(%s)",
            (b.retailer.retailer_id, list(names)),
        ).fetchall()
    )
    assert len(set(moved.values())) == len(names), moved  # each in a place of its own
    for name, data in names.items():
        assert Path(moved[name]).read_bytes() == data, f"{name}: overwritten in {moved[name]}"
