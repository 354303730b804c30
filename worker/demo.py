"""`tlogsync demo`: the whole pipeline on local services, end to end, with nothing to set up.

An embedded SFTP server (asyncssh) serves a local folder seeded with the published samples and
generated TLog files (a few of them broken on purpose); a Celery worker and beat run against the
local RabbitMQ and a dedicated PostgreSQL database; the demo waits until every file is final and
prints what happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from worker.adapters.migrate import migrate
from worker.queues import WORK_QUEUES
from worker.sftpserver import EmbeddedSftpServer, SftpEndpoint
from worker.tlogfactory import dumps, make_sale, mix, sample_bytes

console = Console(width=140)

RETAILERS = (
    # (id, order master, product store)
    ("dolcevita", True, "DV_STORE"),
    ("northwind", False, "NW_STORE"),
)


def _retailers_toml(endpoint: SftpEndpoint) -> str:
    out = []
    for retailer_id, master, store in RETAILERS:
        base = f"/{retailer_id}/POS/PS_to_HC/SalesOrder"
        out.append(f"""
[retailers.{retailer_id}]
product_store_id = "{store}"
currency = "USD"
order_master = {str(master).lower()}
may_split = true
poll_seconds = 2

[retailers.{retailer_id}.sftp]
host = "{endpoint.host}"
port = {endpoint.port}
username = "{endpoint.username}"
private_key = "{endpoint.private_key}"
known_hosts = "{endpoint.known_hosts}"
orders_dir = "{base}"
archive_dir = "{base}/archive"
error_dir = "{base}/error"
pattern = "*.json"
min_age_seconds = 1
""")
    return "".join(out)


def _seed(root: Path, generated: int) -> dict[str, int]:
    """Write the inbound files; returns how many each retailer got."""
    counts = {}
    old = time.time() - 60  # written a minute ago: old enough for min_age_seconds
    for retailer_id, _, _ in RETAILERS:
        base = root / retailer_id / "POS/PS_to_HC/SalesOrder"
        for sub in ("archive", "error"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        files: list[tuple[str, bytes]] = []
        if retailer_id == "dolcevita":
            files += [("dolcevita_OrderTLog_2024-01-12-16_45_27_000.json", sample_bytes("inStoreOrdersSample.json")),
                      ("dolcevita_OrderTLog_2024-01-12-16_47_01_000.json", sample_bytes("sendSaleOrdersSample.json")),
                      ("dolcevita_OrderTLog_2024-01-12-17_00_00_000.json", b""),
                      ("dolcevita_OrderTLog_2024-01-12-17_00_01_000.json", b"\xff\xfe not utf-8"),
                      # the same sale again under another name: stored once, recorded as duplicate
                      ("dolcevita_OrderTLog_2024-01-12-17_00_02_000.json", sample_bytes("inStoreOrdersSample.json"))]
            files += mix(generated, seed=11, bad_every=25, order_prefix="DV")
        else:
            files += mix(max(6, generated // 4), seed=12, order_prefix="NW")
            files.append(("nw_OrderTLog_mixed.json", dumps(make_sale(900, "MIXED", "301", order_prefix="NWM"))))
        for name, data in files:
            path = base / name
            path.write_bytes(data)
            os.utime(path, (old, old))
        counts[retailer_id] = len(files)
    return counts


def _fresh_database(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    name = info["dbname"]
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _progress(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), count(*) FILTER (WHERE status <> 'claimed' AND moved_at IS NOT NULL)"
                           " FROM tlog_files").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_demo(files: int = 60, timeout: float = 180.0, workdir: Path | None = None) -> int:
    workdir = (workdir or Path(".demo")).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    dsn = os.environ.get("TLOGSYNC_DEMO_DATABASE_URL", "postgresql:///tlogsync_demo")
    console.rule("tlogsync demo")
    console.print(f"database {dsn} (recreated), broker {os.environ.get('TLOGSYNC_BROKER_URL', 'default')}")
    _fresh_database(dsn)
    console.print("migrations: " + ", ".join(migrate(dsn)))
    server = EmbeddedSftpServer(workdir / "sftp", workdir / "keys")
    endpoint = server.start()
    console.print(f"embedded SFTP server on {endpoint.host}:{endpoint.port}, root {endpoint.root}")
    seeded = _seed(endpoint.root, files)
    total = sum(seeded.values())
    console.print(f"seeded {total} TLog files: {seeded}")
    retailers = workdir / "retailers.toml"
    retailers.write_text(_retailers_toml(endpoint))
    env = dict(os.environ, TLOGSYNC_DATABASE_URL=dsn, TLOGSYNC_RETAILERS=str(retailers))
    celery = [sys.executable, "-m", "celery", "-A", "worker"]
    worker = _start(celery + ["worker", "-Q", ",".join(WORK_QUEUES), "-c", "2", "-l", "INFO",
                              "--hostname", f"demo-{os.getpid()}@%h"], env, workdir / "worker.log")
    beat = _start(celery + ["beat", "-l", "INFO", "-s", str(workdir / "celerybeat-schedule")], env,
                  workdir / "beat.log")
    started = time.monotonic()
    status = 0
    try:
        done = 0
        while time.monotonic() - started < timeout:
            seen, done = _progress(dsn)
            if seen >= total and done == seen:
                break
            for proc, name in ((worker, "worker"), (beat, "beat")):
                if proc.poll() is not None:
                    console.print(f"[red]{name} exited with {proc.returncode}; see {workdir / (name + '.log')}[/red]")
                    return 1
            time.sleep(0.25)
        else:
            console.print(f"[red]timed out after {timeout:.0f}s with {done} of {total} files final[/red]")
            status = 1
        elapsed = time.monotonic() - started
    finally:
        _stop(beat)
        _stop(worker)
        server.stop()
    _summary(dsn, total, elapsed, endpoint.root)
    console.print(f"logs: {workdir / 'worker.log'}, {workdir / 'beat.log'}")
    return status


def _summary(dsn: str, total: int, elapsed: float, root: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        by_status = conn.execute("SELECT retailer_id, status, count(*) FROM tlog_files GROUP BY 1, 2 ORDER BY 1, 2")
        table = Table(title="files by retailer and status")
        for col in ("retailer", "status", "files"):
            table.add_column(col)
        final = 0
        for retailer, status, count in by_status:
            table.add_row(retailer, status, str(count))
            final += count
        console.print(table)
        orders = conn.execute(
            "SELECT retailer_id, order_type, status_id, count(*), sum(grand_total) FROM orders"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2")
        table = Table(title="orders stored")
        for col in ("retailer", "type", "status", "orders", "grand total"):
            table.add_column(col)
        for retailer, kind, status, count, amount in orders:
            table.add_row(retailer, kind, status, str(count), f"{amount:.2f}")
        console.print(table)
        failures = conn.execute("SELECT retailer_id, file_name, status, error FROM tlog_files"
                                " WHERE status IN ('failed', 'skipped', 'duplicate')"
                                " ORDER BY array_position(ARRAY['failed', 'duplicate', 'skipped'], status), id"
                                " LIMIT 12")
        table = Table(title="not imported, and why (first 12)")
        for col in ("retailer", "file", "status", "reason"):
            table.add_column(col, overflow="fold")
        for row in failures:
            table.add_row(*[str(v) for v in row])
        console.print(table)
    left = sorted(p.name for p in root.glob("*/POS/PS_to_HC/SalesOrder/*.json"))
    console.print(f"{final} of {total} files accounted for in the ledger; {len(left)} left in inbound folders")
    console.print(f"elapsed {elapsed:.1f}s from worker start to the last file final: "
                  f"{total / elapsed:.1f} files/s (includes worker start-up and the first poll)")
