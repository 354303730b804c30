"""The fault suite's harness: a batch of realistic files, dedicated workers and beat in a vhost of their
own, and the invariants every fault must leave intact."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.conftest import SESSION_DIR, RetailerDirs, WorkerProcess, start_worker
from worker.core.inventory import parse_facilities_csv, parse_inventory_csv
from worker.demo.procs import stop_group
from worker.demo.tlogfactory import CATALOG, NETWORK_FACILITIES_CSV, STORES, mix

REPORT: list[dict[str, Any]] = []  # one row per fault, printed at the end of the session
REPORT_PATH = Path(os.environ.get("TLOGSYNC_FAULT_REPORT", SESSION_DIR / "faults.json"))

FACILITIES = NETWORK_FACILITIES_CSV
INITIAL_STOCK = 100_000  # plenty: every send-sale line is placed, so the arithmetic is exact


@dataclass
class Batch:
    retailer: RetailerDirs
    names: list[str]
    valid: dict[str, dict[str, Any]]  # file name -> TLog document, for the files that must become orders
    bad: set[str]
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)
    beats: list[subprocess.Popen[bytes]] = field(default_factory=list)
    beat_logs: dict[int, Path] = field(default_factory=dict)  # pid -> its log
    started: float = 0.0

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def worker(self, name: str, concurrency: int = 2, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        # tests.support.faultapp: the fault plugin is installed (TLOGSYNC_FAULT_CRASH_FILES in extra_env arms it)
        wp = start_worker(
            f"{name}-{secrets.token_hex(2)}",
            concurrency=concurrency,
            env={**self.env, **(extra_env or {})},
            app="tests.support.faultapp",
        )
        self.workers.append(wp)
        return wp

    def beat(self) -> subprocess.Popen[bytes]:
        schedule = SESSION_DIR / f"beat-{secrets.token_hex(3)}"
        # -X faulthandler: a beat that does not stop is sent SIGABRT and its threads' stacks land in its log
        with schedule.with_suffix(".log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-m", "celery", "-A", "worker", "beat", "-l", "WARNING"]
                + ["-s", str(schedule)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.beats.append(proc)
        self.beat_logs[proc.pid] = schedule.with_suffix(".log")
        return proc

    def stop(self) -> None:
        """Every beat and worker stopped, each killed when it does not stop in time, whatever the others do:
        a process left running would fail a later test (its Popen and log file are collected there)."""
        stuck = []
        for proc in self.beats:
            if proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGABRT)  # faulthandler writes every thread's stack to the log
                stop_group(proc, timeout=5, sig=signal.SIGKILL)
                stuck.append(proc)
        for wp in self.workers:
            wp.stop()
        for proc in stuck:
            log = self.beat_logs[proc.pid]
            print(f"fault harness: beat {proc.pid} did not stop on SIGTERM in 20 s; its log {log}:", file=sys.stderr)
            print(log.read_text(errors="replace")[-6000:], file=sys.stderr)


def make_batch(
    make_retailer: Any,
    inventory: Any,
    fault_env: dict[str, str],
    count: int = 300,
    bad_every: int = 30,
    extra: dict[str, bytes] | None = None,
) -> Batch:
    r = make_retailer(poll_seconds=1)
    inventory.load_facilities(r.retailer_id, parse_facilities_csv(FACILITIES))
    rows = ["facility_id,product_id,gtin,quantity_on_hand"]
    rows += [f"{f},{p.product_id},{p.gtin},{INITIAL_STOCK}" for f in ("254", "255", "301", "DC1") for p in CATALOG]
    inventory.load_inventory(r.retailer_id, parse_inventory_csv("\n".join(rows) + "\n"))
    prefix = f"F{secrets.token_hex(3).upper()}"
    files = mix(count, seed=count, bad_every=bad_every, order_prefix=prefix)
    valid, bad = {}, set()
    for seq, (name, data) in enumerate(files, 1):
        if bad_every and seq % bad_every == 0:
            bad.add(name)
        else:
            valid[name] = json.loads(data)
        r.put(name, data)
    for name, data in (extra or {}).items():
        r.put(name, data)
        bad.add(name)
    return Batch(r, [n for n, _ in files] + list(extra or {}), valid, bad, fault_env)


def progress(db: Any, batch: Batch) -> int:
    return int(
        db.execute(
            "SELECT count(*) FROM tlog_files WHERE retailer_id = %s AND status <> 'claimed' AND moved_at IS NOT NULL"
            " AND replayed_by IS NULL",
            (batch.retailer.retailer_id,),
        ).fetchone()[0]
    )


def wait_until(db: Any, batch: Batch, final_files: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while progress(db, batch) < final_files:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {progress(db, batch)} of {final_files} files final")
        time.sleep(0.1)


def drain(db: Any, batch: Batch, timeout: float = 240) -> float:
    """Wait until every file is final and every follow-up done; seconds since the batch started."""
    deadline = time.monotonic() + timeout
    rid = batch.retailer.retailer_id
    while True:
        files = progress(db, batch)
        pending = db.execute(
            "SELECT count(*) FROM order_followups WHERE retailer_id = %s AND status = 'pending'", (rid,)
        ).fetchone()[0]
        if files >= len(batch.names) and pending == 0:
            return time.monotonic() - batch.started
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not drained: {files} of {len(batch.names)} files final, {pending} follow-ups pending"
            )
        time.sleep(0.2)


def check_invariants(
    db: Any, batch: Batch, fault: str, drained: float, expected_statuses: dict[str, str] | None = None
) -> dict[str, Any]:
    """Every file final exactly once, orders = distinct valid sales, allocations and variances once,
    inventory equal to the arithmetic. Returns the report row (and asserts it is clean)."""
    rid = batch.retailer.retailer_id
    rows = db.execute(
        "SELECT file_name, status, moved_at IS NOT NULL FROM tlog_files WHERE retailer_id = %s"
        " AND feed = 'orders' AND replayed_by IS NULL AND status <> 'duplicate'",
        (rid,),
    ).fetchall()
    per_name = Counter(name for name, _, _ in rows)
    final = {name: status for name, status, moved in rows if status != "claimed" and moved}
    losses = [n for n in batch.names if n not in final]
    duplicates = sum(c - 1 for c in per_name.values() if c > 1)
    wrong = [n for n in batch.valid if final.get(n) != "processed"]
    wrong += [n for n in batch.bad if final.get(n) != (expected_statuses or {}).get(n, "failed")]
    left = batch.retailer.inbound_names()

    orders = dict(
        db.execute("SELECT external_id, count(*) FROM orders WHERE retailer_id = %s GROUP BY 1", (rid,)).fetchall()
    )
    expected_ids = {doc["orderId"] for doc in batch.valid.values()}
    losses += sorted(expected_ids - set(orders))
    duplicates += sum(c - 1 for c in orders.values()) + len(set(orders) - expected_ids)
    duplicates += db.execute(
        "SELECT count(*) FROM (SELECT order_id, item_seq FROM order_facility_changes WHERE retailer_id = %s"
        " AND reason = 'BROKERED' GROUP BY 1, 2 HAVING count(*) > 1) d",
        (rid,),
    ).fetchone()[0]
    duplicates += db.execute(
        "SELECT count(*) - count(DISTINCT source) FROM inventory_variances WHERE retailer_id = %s", (rid,)
    ).fetchone()[0]

    sold: Counter[tuple[str, str]] = Counter()
    shipped: Counter[str] = Counter()
    for doc in batch.valid.values():
        for line in doc["orderProductList"]:
            if line["omniFulfillmentType"] == "IN_STORE":
                sold[(doc["storeId"], line["gtin"])] += int(line["quantity"])
            else:
                shipped[line["gtin"]] += int(line["quantity"])
    stock = {
        (f, g): (q, r)
        for f, g, q, r in db.execute(
            "SELECT facility_id, gtin, quantity_on_hand, reserved FROM inventory WHERE retailer_id = %s", (rid,)
        )
    }
    inventory_errors = [
        f"{store}/{p.gtin}: on hand {stock[(store, p.gtin)][0]} != {INITIAL_STOCK - sold[(store, p.gtin)]}"
        for store in STORES
        for p in CATALOG
        if stock[(store, p.gtin)][0] != INITIAL_STOCK - sold[(store, p.gtin)]
    ]
    for p in CATALOG:
        reserved = sum(r for (f, g), (_, r) in stock.items() if g == p.gtin)
        if reserved != shipped[p.gtin]:
            inventory_errors.append(f"{p.gtin}: reserved {reserved} != shipped {shipped[p.gtin]}")
    waiting = db.execute(
        "SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id"
        " WHERE o.retailer_id = %s AND i.facility_id IN ('_NA_', 'UNFILLABLE_PARKING')",
        (rid,),
    ).fetchone()[0]
    row = {
        "fault": fault,
        "files": len(batch.names),
        "orders": len(orders),
        "duplicates": duplicates,
        "losses": len(losses),
        "drain_s": round(drained, 1),
    }
    REPORT.append(row)
    REPORT_PATH.write_text(json.dumps(REPORT, indent=1))
    assert left == [], f"left in the inbound folder: {left[:5]}"
    assert losses == [], f"lost: {losses[:5]}"
    assert duplicates == 0
    assert wrong == [], f"unexpected final status: {[(n, final.get(n)) for n in wrong[:5]]}"
    assert inventory_errors == [], inventory_errors[:5]
    assert waiting == 0, f"{waiting} send-sale lines not allocated"
    return row


def money(value: Any) -> Decimal:
    return Decimal(str(value))
