#!/usr/bin/env python3
"""`make bench`: tlogsync against the one-process baseline, side by side, on the same machine and files.

Phases (each on fresh files generated on a real OpenSSH sshd, mixed in-store / send-sale / mixed carts
with a few broken ones):
  baseline    ops/bench/baseline.py (one process, one reused SFTP connection)
  tlogsync-1  one worker process, concurrency 1, end to end (scan, ingest, brokering, inventory)
  tlogsync-2  the whole machine: worker processes = cores
  latency     files written at a steady rate while beat scans every second: file written -> order stored
  soak        a long run: worker RSS after the first and the last thousand files
Prints a table and writes the results as JSON (default .bench-results.json; work files under .bench/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from worker.adapters.postgres.inventory import PgInventory  # noqa: E402
from worker.adapters.postgres.migrate import ensure_database, migrate  # noqa: E402
from worker.adapters.postgres.pool import open_pool  # noqa: E402
from worker.adapters.queues import WORK_QUEUES  # noqa: E402
from worker.core.inventory import parse_facilities_csv, parse_inventory_csv  # noqa: E402
from worker.demo.procs import stop_group  # noqa: E402
from worker.demo.sshd import SSHD, Sshd, start_sshd  # noqa: E402
from worker.demo.tlogfactory import CATALOG, NETWORK_FACILITIES_CSV, mix  # noqa: E402

BASELINE = Path(__file__).resolve().with_name("baseline.py")  # the yardstick, beside this file
FACILITIES = NETWORK_FACILITIES_CSV  # noqa: E402 - after the sys.path set-up above


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.workdir).resolve()
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.dsn = args.dsn
        self.vhost = f"tlogsync_bench_{secrets.token_hex(3)}"
        self.broker = f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"
        self.retailers_file = self.work / "retailers.toml"
        self.retailers: list[str] = []
        self.sshd: Sshd | None = None
        self.procs: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        if not SSHD.exists():
            raise SystemExit("make bench needs OpenSSH's sshd: apt-get install openssh-server")
        self.sshd = start_sshd(self.work / "sshd")
        ensure_database(self.dsn, recreate=True)
        migrate(self.dsn)
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.vhost], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )

    def teardown(self) -> None:
        for proc in self.procs:
            stop_group(proc)
        if self.sshd:
            self.sshd.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], capture_output=True)

    def env(self, **extra: str) -> dict[str, str]:
        return dict(
            os.environ,
            TLOGSYNC_DATABASE_URL=self.dsn,
            TLOGSYNC_BROKER_URL=self.broker,
            TLOGSYNC_RETAILERS=str(self.retailers_file),
            TLOGSYNC_LOG_LEVEL="WARNING",
            **extra,
        )

    def add_retailer(self, rid: str, poll_seconds: int = 3600, min_age: float = 0.0) -> Path:
        assert self.sshd
        inbound = self.sshd.root / rid / "inbound"
        for sub in ("archive", "error"):
            (inbound / sub).mkdir(parents=True, exist_ok=True)
        self.retailers.append(f"""
[retailers.{rid}]
product_store_id = "BENCH"
currency = "USD"
order_master = true
may_split = true
poll_seconds = {poll_seconds}
[retailers.{rid}.sftp]
host = "127.0.0.1"
port = {self.sshd.port}
username = "{self.sshd.username}"
private_key = "{self.sshd.private_key}"
known_hosts = "{self.sshd.known_hosts}"
orders_dir = "{inbound}"
archive_dir = "{inbound}/archive"
error_dir = "{inbound}/error"
min_age_seconds = {min_age}
""")
        tmp = self.retailers_file.with_suffix(".tmp")
        tmp.write_text("".join(self.retailers))
        tmp.replace(self.retailers_file)
        with open_pool(self.dsn) as db:
            store = PgInventory(db)
            store.load_facilities(rid, parse_facilities_csv(FACILITIES))
            rows = ["facility_id,product_id,gtin,quantity_on_hand"]
            rows += [f"{f},{p.product_id},{p.gtin},1000000" for f in ("254", "255", "301", "DC1") for p in CATALOG]
            store.load_inventory(rid, parse_inventory_csv("\n".join(rows) + "\n"))
        return inbound

    def write_files(self, inbound: Path, count: int, prefix: str) -> list[str]:
        files = mix(count, seed=count, bad_every=50, order_prefix=prefix)
        old = time.time() - 60
        for name, data in files:
            path = inbound / name
            path.write_bytes(data)
            os.utime(path, (old, old))
        return [name for name, _ in files]

    # ------------------------------------------------------------ processes
    def worker(
        self, name: str, concurrency: int, stats: Path, pool: str = "prefork", events: bool = False, **extra: str
    ) -> subprocess.Popen[bytes]:
        logfile = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        # ops.bench.countingapp: tlogsync's app with the counting plugin (SQL statements, SFTP requests, RSS)
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ops.bench.countingapp",
            "worker",
            "-Q",
            ",".join(WORK_QUEUES),
            "-c",
            str(concurrency),
            "--hostname",
            f"{name}@bench",
            "-l",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
            "-P",
            pool,
        ] + (["-E"] if events else [])
        proc = subprocess.Popen(
            cmd,
            env=self.env(TLOGSYNC_STATS_DIR=str(stats), **extra),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def beat(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "beat",
                "-l",
                "WARNING",
                "-s",
                str(self.work / f"beat-{secrets.token_hex(2)}"),
            ],
            env=self.env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        # ready when the pool children exist and the worker is connected: poll the queue consumers
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["rabbitmqctl", "-q", "list_queues", "-p", self.vhost, "name", "consumers"],
                capture_output=True,
                text=True,
            ).stdout
            if any(
                line.split()[0] == "tlog.ingest" and int(line.split()[1]) > 0
                for line in out.splitlines()
                if len(line.split()) == 2 and line.split()[1].isdigit()
            ):
                return
            if proc.poll() is not None:
                raise SystemExit(f"worker exited: see {self.work}")
            time.sleep(0.2)
        raise SystemExit("worker not ready")

    def scan(self, rid: str) -> None:
        from worker.celery import app  # its queue declarations (dead-letter arguments) match the workers'

        with app.connection_for_write(self.broker) as conn:
            app.send_task("tlogsync.scan_retailer", (rid,), {"requested_by": "bench"}, connection=conn)

    def progress(self, rid: str) -> tuple[int, int]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM tlog_files WHERE retailer_id = %(r)s AND status <> 'claimed'"
                " AND moved_at IS NOT NULL),"
                " (SELECT count(*) FROM order_followups WHERE retailer_id = %(r)s AND status = 'pending')",
                {"r": rid},
            ).fetchone()
        assert row
        return int(row[0]), int(row[1])

    def wait_done(self, rid: str, files: int, timeout: float, on_progress=None) -> float:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        while True:
            final, pending = self.progress(rid)
            if on_progress:
                on_progress(final)
            if final >= files and pending == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise SystemExit(f"{rid}: only {final} of {files} files final after {timeout}s")
            time.sleep(0.05)

    @staticmethod
    def stats(folder: Path) -> dict[str, int]:
        out = {"sql_statements": 0, "sftp_requests": 0, "peak_rss_kib": 0}
        for path in folder.glob("*.json"):
            data = json.loads(path.read_text())
            out["sql_statements"] += data["sql_statements"]
            out["sftp_requests"] += data["sftp_requests"] or 0  # None: not countable on this paramiko
            out["peak_rss_kib"] = max(out["peak_rss_kib"], data["peak_rss_kib"])
        return out

    @staticmethod
    def children_rss(pid: int) -> list[int]:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        out = []
        for kid in kids:
            try:
                status = Path(f"/proc/{kid}/status").read_text()
            except OSError:
                continue
            out += [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
        return out

    # ------------------------------------------------------------ phases
    def baseline(self, count: int) -> dict[str, object]:
        assert self.sshd
        inbound = self.sshd.root / "baseline"
        for sub in ("archive", "error"):
            (inbound / sub).mkdir(parents=True, exist_ok=True)
        self.write_files(inbound, count, "BASE")
        log(f"baseline: {count} files")
        done = subprocess.run(
            [
                sys.executable,
                str(BASELINE),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.sshd.port),
                "--user",
                self.sshd.username,
                "--key",
                str(self.sshd.private_key),
                "--known-hosts",
                str(self.sshd.known_hosts),
                "--dir",
                str(inbound),
                "--archive-dir",
                f"{inbound}/archive",
                "--error-dir",
                f"{inbound}/error",
                "--dsn",
                self.dsn,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"baseline: {result}")
        return {"name": "baseline", "processes": 1, **result}

    def tlogsync(self, name: str, count: int, concurrency: int) -> dict[str, object]:
        rid = name.replace("-", "_")
        inbound = self.add_retailer(rid)
        self.write_files(inbound, count, rid.upper().replace("_", ""))
        stats = self.work / f"stats-{name}"
        proc = self.worker(name, concurrency, stats)
        self.wait_ready(proc)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            xact0 = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()[0]
        log(f"{name}: {count} files, {concurrency} process(es)")
        started = time.monotonic()
        self.scan(rid)
        seconds = self.wait_done(rid, count, timeout=self.args.timeout)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            xact1 = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()[0]
        stop_group(proc)
        counted = self.stats(stats)
        result = {
            "name": name,
            "processes": concurrency,
            "files": count,
            "seconds": round(seconds, 3),
            "files_per_s": round(count / seconds, 1),
            "sql_statements_per_file": round(counted["sql_statements"] / count, 1),
            "transactions_per_file": round((xact1 - xact0) / count, 1),
            "sftp_requests_per_file": round(counted["sftp_requests"] / count, 1),
            "peak_rss_mib_per_process": round(counted["peak_rss_kib"] / 1024, 1),
            "wall_from_scan_s": round(time.monotonic() - started, 3),
        }
        log(f"{name}: {result}")
        return result

    def latency(self, rate: float, seconds: float) -> dict[str, object]:
        rid = "bench_latency"
        inbound = self.add_retailer(rid, poll_seconds=1, min_age=0.2)
        stats = self.work / "stats-latency"
        proc = self.worker("latency", os.cpu_count() or 2, stats)
        self.wait_ready(proc)
        self.beat()
        total = int(rate * seconds)
        files = mix(total, seed=total + 1, bad_every=0, order_prefix="LAT")
        written: dict[str, float] = {}
        log(f"latency: writing {total} files at {rate:g}/s")
        start = time.monotonic()
        for index, (name, data) in enumerate(files):
            due = start + index / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            tmp = inbound / f".{name}.part"
            tmp.write_bytes(data)
            os.replace(tmp, inbound / name)  # written whole, as a careful POS writer would
            written[json.loads(data)["orderId"]] = time.time()
        self.wait_done(rid, total, timeout=self.args.timeout)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            stored = dict(
                conn.execute(
                    "SELECT external_id, extract(epoch FROM created_at) FROM orders WHERE retailer_id = %s", (rid,)
                ).fetchall()
            )
        lat = sorted(float(stored[o]) - t for o, t in written.items() if o in stored)
        result = {
            "name": "latency",
            "rate_per_s": rate,
            "files": total,
            "scan_interval_s": 1,
            "p50_s": round(statistics.median(lat), 3),
            "p95_s": round(lat[int(len(lat) * 0.95) - 1], 3),
            "max_s": round(lat[-1], 3),
        }
        stop_group(proc)
        log(f"latency: {result}")
        return result

    def soak(self, count: int) -> dict[str, object]:
        rid = "bench_soak"
        inbound = self.add_retailer(rid)
        self.write_files(inbound, count, "SOAK")
        stats = self.work / "stats-soak"
        proc = self.worker(
            "soak", os.cpu_count() or 2, stats, TLOGSYNC_MAX_TASKS_PER_CHILD="0", TLOGSYNC_MAX_IN_FLIGHT=str(count)
        )
        self.wait_ready(proc)
        samples: dict[str, list[int]] = {}
        first_mark, last_mark = 1000, count - 1000

        def sample(final: int) -> None:
            if "first" not in samples and final >= first_mark:
                samples["first"] = self.children_rss(proc.pid)
            if "last" not in samples and final >= last_mark:
                samples["last"] = self.children_rss(proc.pid)

        log(f"soak: {count} files")
        self.scan(rid)
        seconds = self.wait_done(rid, count, timeout=self.args.timeout * 3, on_progress=sample)
        stop_group(proc)
        firsts, lasts = samples.get("first") or [0], samples.get("last") or [0]
        first, last = sum(firsts) / len(firsts), sum(lasts) / len(lasts)
        growth = (last - first) / first * 100 if first else 0.0
        result = {
            "name": "soak",
            "files": count,
            "processes": len(lasts),
            "files_per_s": round(count / seconds, 1),
            "rss_mib_per_process_after_first_1000": round(first / 1024, 1),
            "rss_mib_per_process_at_last_1000": round(last / 1024, 1),
            "rss_growth_pct": round(growth, 1),
        }
        log(f"soak: {result}")
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=int(os.environ.get("BENCH_FILES", 2000)))
    ap.add_argument(
        "--soak", type=int, default=int(os.environ.get("BENCH_SOAK", 10000)), help="files of the soak run (0: skip)"
    )
    ap.add_argument("--rate", type=float, default=100.0, help="files/s written during the latency phase")
    ap.add_argument("--rate-seconds", type=float, default=15.0)
    ap.add_argument("--pool", default="prefork")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--dsn", default=os.environ.get("TLOGSYNC_BENCH_DATABASE_URL", "postgresql:///tlogsync_bench"))
    ap.add_argument("--workdir", default=str(ROOT / ".bench"))
    ap.add_argument("--out", default=str(ROOT / ".bench-results.json"))
    args = ap.parse_args()
    bench = Bench(args)
    started = time.monotonic()
    results: list[dict[str, object]] = []
    try:
        bench.setup()
        results.append(bench.baseline(args.files))
        results.append(bench.tlogsync("tlogsync-1", args.files, 1))
        results.append(bench.tlogsync("tlogsync-2", args.files, os.cpu_count() or 2))
        results.append(bench.latency(args.rate, args.rate_seconds))
        if args.soak:
            results.append(bench.soak(args.soak))
    finally:
        bench.teardown()
    base = float(results[0]["files_per_s"])  # type: ignore[arg-type]
    for r in results[1:3]:
        r["ratio_to_baseline"] = round(float(r["files_per_s"]) / base, 2)  # type: ignore[arg-type]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "bench_seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print_table(report)
    print(f"results written to {args.out}")
    return 0


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "?"
    )
    return f"{os.cpu_count()} cores ({cpu}), {int(mem) // 1024 // 1024} GiB, Python {platform.python_version()}"


def print_table(report: dict[str, object]) -> None:
    results = report["results"]
    assert isinstance(results, list)
    print(f"\ntlogsync benchmark, {report['date']}, {report['machine']}")
    print(
        f"{'run':<12} {'procs':>5} {'files':>6} {'files/s':>8} {'x base':>7} {'SQL/file':>9} {'xact/file':>9}"
        f" {'SFTP req/file':>13} {'peak RSS MiB':>12}"
    )
    for r in results[:3]:
        print(
            f"{r['name']:<12} {r['processes']:>5} {r['files']:>6} {r['files_per_s']:>8} "
            f"{r.get('ratio_to_baseline', 1.0):>7} {r.get('sql_statements_per_file', '-'):>9} "
            f"{r.get('transactions_per_file', '-'):>9} {r.get('sftp_requests_per_file', '-'):>13} "
            f"{r.get('peak_rss_mib_per_process', '-'):>12}"
        )
    for r in results[3:]:
        print("  " + ", ".join(f"{k}={v}" for k, v in r.items()))
    print(f"bench took {report['bench_seconds']} s")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
