#!/usr/bin/env python3
"""`make bench`: tlogsync against the one-process baseline (ops/bench/baseline.py), as ratios measured in the
same run, on a real OpenSSH sshd, PostgreSQL and RabbitMQ. docs/benchmarks.md says what each phase measures.

Phases, each on fresh files:
  whole machine  BENCH_PAIRS pairs of (baseline, `celery -A worker worker` as a newcomer starts it), alternating,
                 BENCH_FILES realistic (~21 KB) files each: the median of the per-pair ratios of files/s and of
                 CPU per file (the whole machine from /proc/stat, and per process class)
  counting       a plain run, then the same worker with `-A ops.bench.countingapp` on as many files: SQL
                 statements and SFTP requests per file, and how much counting changes the timing
  one process    a worker in one OS process (BENCH_ONE_PROCESS_ARGS), then two (BENCH_TWO_PROCESS_*)
  small files    a pair on ~3 KB files
  profile        with BENCH_PROFILE=1: py-spy on the default worker, summarised by package
  latency        beat scanning every BENCH_POLL_SECONDS; files written at 100/s, then at 70 % of the whole
                 machine's rate: written -> order stored, p95
  backlog        BENCH_BACKLOG files waiting when the workers start, until drained or BENCH_BACKLOG_SECONDS: CPU
                 per file against the whole-machine runs, time to the first final file, worker memory, the
                 broker's largest queue
Prints the targets table and writes everything as JSON (BENCH_OUT, default .bench/results.json).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ops.bench import profile, rabbit  # noqa: E402
from ops.bench.files import FileMaker  # noqa: E402
from ops.bench.procstat import CLASSES, Meter  # noqa: E402
from worker.adapters.postgres.inventory import PgInventory  # noqa: E402
from worker.adapters.postgres.migrate import drop_database, ensure_database, migrate  # noqa: E402
from worker.adapters.postgres.pool import open_pool  # noqa: E402
from worker.adapters.queues import INGEST  # noqa: E402
from worker.app.settings import Settings  # noqa: E402
from worker.core.inventory import parse_facilities_csv, parse_inventory_csv  # noqa: E402
from worker.demo.procs import stop_group  # noqa: E402
from worker.demo.sshd import SSHD, Sshd, start_sshd  # noqa: E402
from worker.demo.tlogfactory import CATALOG, NETWORK_FACILITIES_CSV  # noqa: E402

BASELINE = Path(__file__).resolve().with_name("baseline.py")  # the yardstick, beside this file
CELERY = Path(sys.executable).with_name("celery")

# The targets. None: reported, no target. ("min", x): met when measured >= x; ("max", x): <= x.
# Issue 11's seven: (1) whole machine >= 2x the baseline, (2) machine CPU per file <= 2x, (3) one process >= 1x,
# (4) small files >= 1.3x, (5) the backlog's four, (6) latency, (7) two processes >= 1.7x one.
TARGETS: dict[str, tuple[str, float] | None] = {
    "whole_machine_ratio": ("min", 2.0),
    "whole_machine_cpu_ratio": ("max", 2.0),
    "one_process_os_processes": ("max", 1),
    "one_process_ratio": ("min", 1.0),
    "two_over_one": ("min", 1.7),
    "small_files_ratio": ("min", 1.3),
    "backlog_cpu_vs_whole_machine": ("max", 1.2),
    "backlog_first_final_s": ("max", 10.0),
    "backlog_worker_rss_growth_pct": ("max", 10.0),
    "backlog_broker_max_messages": ("max", float("nan")),  # the in-flight cap, filled in at run time
    "latency_p95_s_at_100": ("max", float("nan")),  # the scan interval + 1 s, filled in at run time
    "latency_p95_s_at_70pct": ("max", float("nan")),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


@dataclass
class Run:
    """One tlogsync run: its own vhost, retailer, retailers file and inbound folder."""

    label: str
    vhost: str
    retailer: str
    retailers_file: Path
    inbound: Path

    @property
    def broker(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    command: list[str]
    logfile: Path
    stats: Path | None = None


@dataclass
class Progress:
    """The main loop's samples of (monotonic time, files final)."""

    times: list[float] = field(default_factory=list)
    final: list[int] = field(default_factory=list)

    def add(self, final: int) -> None:
        self.times.append(time.monotonic())
        self.final.append(final)

    def final_at(self, when: float) -> int:
        i = bisect.bisect_right(self.times, when) - 1
        return self.final[i] if i >= 0 else 0


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.workdir).resolve()
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.token = secrets.token_hex(3)
        # A database of its own unless told: two benches (two worktrees) never drop each other's.
        self.own_database = not args.dsn
        self.dsn = args.dsn or f"postgresql:///tlogsync_bench_{self.token}"
        self.runs: list[Run] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sshd: Sshd | None = None
        self.db: psycopg.Connection[Any] | None = None
        self.meter: Meter | None = None
        self.queries = 0  # statements the bench itself sent (each one a committed transaction)
        self.makers: dict[str, FileMaker] = {}
        self.seq = 0
        self.settings = Settings.from_env()  # the workers inherit this environment: the same cap

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        if not SSHD.exists():
            raise SystemExit("make bench needs OpenSSH's sshd: apt-get install openssh-server")
        if not rabbit.available():
            raise SystemExit("make bench needs RabbitMQ's management API: rabbitmq-plugins enable rabbitmq_management")
        self.sshd = start_sshd(self.work / "sshd")
        ensure_database(self.dsn, recreate=True)
        migrate(self.dsn)
        self.connect()
        assert self.db is not None
        database = self.db.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        self.meter = Meter(database)
        self.meter.sshd_pid = self.sshd.process.pid
        self.meter.exclude.add(self.db.info.backend_pid)
        self.meter.start()
        for size in ("realistic", "small"):
            self.makers[size] = FileMaker(size, bad_every=50)

    def connect(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db = psycopg.connect(self.dsn, autocommit=True)
        if self.meter is not None:
            self.meter.exclude.add(self.db.info.backend_pid)

    def teardown(self) -> None:
        for proc in self.procs:
            stop_group(proc)
        if self.meter:
            self.meter.stop()
        if self.db is not None:
            self.db.close()
        if self.sshd:
            self.sshd.stop()
        for run in self.runs:
            rabbit.delete_vhost(run.vhost)
        if self.own_database and not self.args.keep:
            drop_database(self.dsn)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        assert self.db is not None
        self.queries += 1
        return self.db.execute(sql, params).fetchall()

    def xact_commit(self) -> int:
        """The database's committed transactions, every backend's stats flushed (they flush when they exit)."""
        self.connect()
        assert self.db is not None
        self.db.execute("SELECT pg_stat_clear_snapshot()")
        row = self.db.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        self.queries = 0  # counted from here: this statement's own commit is in the next reading
        self.queries += 1
        return int(row[0])  # type: ignore[index]

    def wait_backends_gone(self, timeout: float = 15) -> None:
        """The workers' connections have ended, so their statistics are flushed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if rows[0][0] == 0:
                return
            time.sleep(0.1)

    def transactions(self, xact0: int) -> int:
        self.wait_backends_gone()
        bench_own = self.queries
        xact1 = self.xact_commit()
        return xact1 - xact0 - bench_own

    # ------------------------------------------------------------ runs, files, processes
    def new_run(self, label: str, poll_seconds: int = 3600, min_age: float = 0.0) -> Run:
        assert self.sshd
        vhost = f"tlogsync_bench_{self.token}_{label}"
        rabbit.create_vhost(vhost)
        rid = f"bench_{label}"
        inbound = self.sshd.root / rid / "inbound"
        for sub in ("archive", "error"):
            (inbound / sub).mkdir(parents=True, exist_ok=True)
        run = Run(label, vhost, rid, self.work / f"retailers-{label}.toml", inbound)
        run.retailers_file.write_text(f"""
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
        with open_pool(self.dsn) as db:
            store = PgInventory(db)
            store.load_facilities(rid, parse_facilities_csv(NETWORK_FACILITIES_CSV))
            rows = ["facility_id,product_id,gtin,quantity_on_hand"]
            rows += [f"{f},{p.product_id},{p.gtin},1000000" for f in ("254", "255", "301", "DC1") for p in CATALOG]
            store.load_inventory(rid, parse_inventory_csv("\n".join(rows) + "\n"))
        self.runs.append(run)
        return run

    def prefix(self) -> str:
        self.seq += 1
        return f"B{self.token.upper()}{self.seq:03d}X"

    def env(self, run: Run, **extra: str) -> dict[str, str]:
        # Only what points the worker at this run's broker, database and retailers: nothing else is tuned.
        return dict(
            os.environ,
            TLOGSYNC_DATABASE_URL=self.dsn,
            TLOGSYNC_BROKER_URL=run.broker,
            TLOGSYNC_RETAILERS=str(run.retailers_file),
            TLOGSYNC_AUDIT_DIR=str(self.work / "audit"),
            **extra,
        )

    def start(self, cmd: list[str], env: dict[str, str], name: str, cls: str) -> subprocess.Popen[bytes]:
        assert self.meter
        logfile = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        logfile.close()
        self.meter.watch_session(proc.pid, cls)
        self.procs.append(proc)
        return proc

    def worker(self, run: Run, args: list[str], name: str, app: str = "worker", stats: Path | None = None) -> Worker:
        cmd = [str(CELERY), "-A", app, "worker", *args]
        extra = {"TLOGSYNC_STATS_DIR": str(stats)} if stats else {}
        proc = self.start(cmd, self.env(run, **extra), name, "workers")
        return Worker(proc, cmd, self.work / f"{name}.log", stats)

    def beat(self, run: Run) -> subprocess.Popen[bytes]:
        cmd = [str(CELERY), "-A", "worker", "beat", "-s", str(self.work / f"beat-{run.label}")]
        return self.start(cmd, self.env(run), f"beat-{run.label}", "beat")

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        for proc in procs:
            stop_group(proc)

    def wait_ready(self, run: Run, workers: list[Worker], timeout: float = 90) -> None:
        """Every worker consumes the ingest queue (the pool is up before the consumer starts)."""
        depth = rabbit.Depth(run.broker)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = depth.queue(INGEST)
                if found is not None and found[1] >= len(workers):
                    return
                for w in workers:
                    if w.proc.poll() is not None:
                        raise SystemExit(f"worker exited ({w.proc.returncode}): see {w.logfile}")
                time.sleep(0.1)
        finally:
            depth.close()
        raise SystemExit(f"workers not ready after {timeout}s: see {workers[0].logfile}")

    def scan(self, run: Run) -> float:
        """Send one scan of the run's retailer, as `tlogsync scan` would; the time it was sent."""
        from worker.celery import app  # its queue declarations (dead-letter arguments) match the workers'

        with app.connection_for_write(run.broker) as conn:
            sent = time.time()
            app.send_task("tlogsync.scan_retailer", (run.retailer,), {"requested_by": "bench"}, connection=conn)
        return sent

    def progress(self, run: Run) -> tuple[int, int, float | None]:
        """(files final and moved, follow-ups pending, when the last of either finished: epoch seconds)."""
        [(final, pending, last)] = self.query(
            "SELECT f.final, o.pending, extract(epoch FROM greatest(f.last, o.last))::float8 FROM"
            " (SELECT count(*) FILTER (WHERE status <> 'claimed' AND moved_at IS NOT NULL) AS final,"
            "         max(greatest(finished_at, moved_at)) AS last FROM tlog_files WHERE retailer_id = %(r)s) f,"
            " (SELECT count(*) FILTER (WHERE status = 'pending') AS pending, max(done_at) AS last"
            "    FROM order_followups WHERE retailer_id = %(r)s) o",
            {"r": run.retailer},
        )
        return int(final), int(pending), last

    def wait_done(
        self, run: Run, files: int, timeout: float, progress: Progress | None = None, workers: list[Worker] = ()
    ) -> float:
        """Until every file is final and every follow-up done; the epoch time the last of them finished."""
        deadline = time.monotonic() + timeout
        while True:
            final, pending, last = self.progress(run)
            if progress is not None:
                progress.add(final)
            if final >= files and pending == 0:
                assert last is not None
                return last
            for w in workers:
                if w.proc.poll() is not None:
                    raise SystemExit(f"{run.label}: worker exited ({w.proc.returncode}): see {w.logfile}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{run.label}: {final} of {files} files final, {pending} follow-ups pending")
            time.sleep(0.2)

    # ------------------------------------------------------------ the two sides of a ratio
    def baseline(self, count: int, size: str = "realistic") -> dict[str, Any]:
        assert self.sshd and self.meter
        label = f"baseline{self.seq + 1}"
        folder = self.sshd.root / label
        for sub in ("archive", "error"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        batch = self.makers[size].write(folder, count, self.prefix())
        xact0 = self.xact_commit()
        cmd = [
            sys.executable,
            str(BASELINE),
            *("--host", "127.0.0.1", "--port", str(self.sshd.port), "--user", self.sshd.username),
            *("--key", str(self.sshd.private_key), "--known-hosts", str(self.sshd.known_hosts)),
            *("--dir", str(folder), "--archive-dir", f"{folder}/archive", "--error-dir", f"{folder}/error"),
            *("--dsn", self.dsn),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
        self.meter.watch_session(proc.pid, "baseline")
        assert proc.stdout
        window = None
        result: dict[str, Any] = {}
        for line in proc.stdout:
            message = json.loads(line)
            if message.get("event") == "started":
                window = self.meter.begin(label)
            else:
                result = message
        if proc.wait() != 0 or window is None:
            raise SystemExit(f"baseline failed ({proc.returncode})")
        cpu = self.meter.end(window, count)
        out = {
            "label": label,
            "files": count,
            "size": size,
            "mean_file_bytes": batch.bytes // count,
            "files_per_s": result["files_per_s"],
            "seconds": result["seconds"],
            "transactions_per_file": round(self.transactions(xact0) / count, 2),
            "cpu": cpu,
        }
        log(
            f"{label}: {count} {size} files, {out['files_per_s']} files/s, {cpu['machine_cpu_ms_per_file']} ms CPU/file"
        )
        return out

    def tlogsync(
        self,
        name: str,
        count: int,
        size: str = "realistic",
        workers: list[list[str]] | None = None,
        app: str = "worker",
        counting: bool = False,
        profile_to: Path | None = None,
    ) -> dict[str, Any]:
        assert self.meter
        run = self.new_run(f"{name}{self.seq + 1}")
        batch = self.makers[size].write(run.inbound, count, self.prefix())
        specs = workers or [[]]
        started = []
        xact0 = self.xact_commit()
        for i, args in enumerate(specs):
            stats = self.work / f"stats-{run.label}" if counting else None
            extra = ["-n", f"{run.label}{i}@%h"] if len(specs) > 1 else []  # two nodes on one host need two names
            started.append(self.worker(run, [*args, *extra], f"{run.label}-{i}", app=app, stats=stats))
        self.wait_ready(run, started)
        spy = profile.start(started[0].proc.pid, profile_to) if profile_to else None
        window = self.meter.begin(run.label)
        sent = self.scan(run)
        last = self.wait_done(run, count, self.args.timeout, workers=started)
        cpu = self.meter.end(window, count)
        if spy is not None:
            profile.stop(spy)
        self.stop(*(w.proc for w in started))
        seconds = last - sent
        out: dict[str, Any] = {
            "label": run.label,
            "vhost": run.vhost,
            "files": count,
            "size": size,
            "mean_file_bytes": batch.bytes // count,
            "broken_files": batch.broken,
            "commands": [shlex.join(w.command) for w in started],
            "os_processes": cpu["processes"]["workers"],  # type: ignore[index]
            "files_per_s": round(count / seconds, 2),
            "seconds": round(seconds, 3),
            "transactions_per_file": round(self.transactions(xact0) / count, 2),
            "cpu": cpu,
        }
        if counting:
            out.update(counted(started[0].stats, count))  # type: ignore[arg-type]
        log(
            f"{run.label}: {count} {size} files, {out['os_processes']} worker process(es),"
            f" {out['files_per_s']} files/s, {cpu['machine_cpu_ms_per_file']} ms CPU/file"
        )
        return out

    # ------------------------------------------------------------ latency and backlog
    def latency(self, rates: list[float], seconds: float) -> list[dict[str, Any]]:
        poll = self.args.poll_seconds
        run = self.new_run("latency", poll_seconds=poll, min_age=0.2)
        worker = self.worker(run, [], "latency")
        beat = self.beat(run)
        self.wait_ready(run, [worker])
        clean = FileMaker("realistic", bad_every=0)  # every file an order, so every file has a latency
        results, total = [], 0
        for rate in rates:
            prefix = self.prefix()
            count = max(1, int(rate * seconds))
            written: dict[str, float] = {}
            log(f"latency: {count} files at {rate:.1f}/s, beat scanning every {poll}s")
            begin = time.monotonic()
            for seq in range(1, count + 1):
                pause = begin + (seq - 1) / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                name, order_id, data = clean.make(seq, prefix)
                tmp = run.inbound / f".{name}.part"
                tmp.write_bytes(data)
                os.replace(tmp, run.inbound / name)  # written whole, as a careful POS writer would
                written[order_id] = time.time()
            achieved = count / max(1e-9, time.monotonic() - begin)
            total += count
            self.wait_done(run, total, self.args.timeout, workers=[worker])
            stored = dict(
                self.query(
                    "SELECT external_id, extract(epoch FROM created_at)::float8 FROM orders"
                    " WHERE retailer_id = %s AND external_id LIKE %s",
                    (run.retailer, f"{prefix}%"),
                )
            )
            lat = [float(stored[o]) - t for o, t in written.items() if o in stored]
            result = {
                "rate_per_s": round(rate, 1),
                "achieved_rate_per_s": round(achieved, 1),
                "files": count,
                "stored": len(lat),
                "scan_interval_s": poll,
                "p50_s": round(median(lat), 3),
                "p95_s": round(percentile(lat, 0.95), 3),
                "max_s": round(max(lat), 3) if lat else None,
            }
            log(f"latency: {result}")
            results.append(result)
        self.stop(beat, worker.proc)
        return results

    def backlog(self, count: int) -> dict[str, Any]:
        assert self.meter
        poll = self.args.poll_seconds
        run = self.new_run("backlog", poll_seconds=poll)
        t = time.monotonic()
        batch = self.makers["realistic"].write(run.inbound, count, self.prefix())
        generated = time.monotonic() - t
        log(f"backlog: {count} files written in {generated:.1f}s; starting the worker and beat")
        cap = self.settings.max_in_flight_per_retailer
        broker = BrokerWatch(run)
        self.meter.ticks.append(broker.sample)
        xact0 = self.xact_commit()
        progress = Progress()
        t0, t0_epoch = time.monotonic(), time.time()
        worker = self.worker(run, [], "backlog")
        beat = self.beat(run)
        first_final = None
        ready = None
        window = None
        try:
            depth = rabbit.Depth(run.broker)
            while first_final is None:
                final, _, _ = self.progress(run)
                progress.add(final)
                if ready is None:
                    found = depth.queue(INGEST)
                    if found is not None and found[1] >= 1:
                        ready = time.monotonic() - t0
                        window = self.meter.begin(run.label)
                if final > 0:
                    first_final = time.monotonic() - t0
                elif time.monotonic() - t0 > self.args.timeout:
                    raise SystemExit(f"backlog: no file final {self.args.timeout}s after the worker started")
                if worker.proc.poll() is not None:
                    raise SystemExit(f"backlog: worker exited: see {worker.logfile}")
                time.sleep(0.1)
            depth.close()
            if window is None:
                window = self.meter.begin(run.label)
            log(f"backlog: worker ready after {ready:.1f}s, first file final after {first_final:.1f}s")
            # Until drained, or the phase's time is up: a backlog tlogsync drains too slowly is a finding, and
            # what it did until then (files final, CPU per final file, memory, the broker) is still measured.
            deadline = t0 + (self.args.backlog_seconds or self.args.timeout * 10)  # 0: until drained
            while True:
                final, pending, last = self.progress(run)
                progress.add(final)
                finished = final >= count and pending == 0
                if finished or time.monotonic() > deadline:
                    break
                if worker.proc.poll() is not None:
                    raise SystemExit(f"backlog: worker exited: see {worker.logfile}")
                time.sleep(0.2)
            done = max(1, final)
            cpu = self.meter.end(window, done)
        finally:
            self.meter.ticks.remove(broker.sample)
            broker.close()
        self.stop(beat, worker.proc)
        memory = rss_over_run(window.rss, progress, done)
        # from the worker's start: start-up and the first scans are part of draining a backlog
        seconds = (last if finished and last else time.time()) - t0_epoch
        out = {
            "label": run.label,
            "vhost": run.vhost,
            "files_written": count,
            "files": final,  # the per-file figures' denominator: files final
            "finished": finished,
            "time_limit_s": self.args.backlog_seconds,
            "mean_file_bytes": batch.bytes // count,
            "generate_s": round(generated, 1),
            "worker_ready_s": round(ready or 0, 2),
            "first_final_s": round(first_final, 2),
            "files_per_s": round(final / seconds, 2),
            "seconds": round(seconds, 1),
            "drain_estimate_s": round(count / (final / seconds), 1) if final else None,
            "transactions_per_file": round(self.transactions(xact0) / done, 2),
            "in_flight_cap": cap,
            "broker_max_messages": broker.max_messages,
            "broker_max_ready_amqp": broker.max_ready,
            "broker_max_messages_mgmt": broker.max_mgmt,
            "memory": memory,
            "cpu": cpu,
        }
        log(f"backlog: {json.dumps({k: v for k, v in out.items() if k != 'cpu'})}")
        return out


class BrokerWatch:
    """The largest number of messages the run's work queues held: the management API's messages (ready and
    unacknowledged, refreshed every few seconds) and AMQP's ready count (exact), sampled with the meter."""

    def __init__(self, run: Run):
        self.run = run
        self.depth = rabbit.Depth(run.broker)
        self.max_mgmt = 0
        self.max_ready = 0
        self.unacked = 0

    def sample(self) -> None:
        try:
            rows = rabbit.work_queues(self.run.vhost)
            self.max_mgmt = max(self.max_mgmt, sum(int(r.get("messages") or 0) for r in rows.values()))
            self.unacked = sum(int(r.get("messages_unacknowledged") or 0) for r in rows.values())
            self.max_ready = max(self.max_ready, self.depth.ready())
        except Exception as exc:  # noqa: BLE001 - a missed sample is not worth ending the bench
            log(f"broker sample failed: {exc}")

    @property
    def max_messages(self) -> int:
        return max(self.max_mgmt, self.max_ready + self.unacked)

    def close(self) -> None:
        self.depth.close()


def rss_over_run(samples: list[tuple[float, dict[Any, int]]], progress: Progress, files: int) -> dict[str, Any]:
    """Worker RSS (all worker processes together, and the largest one) early and late in the run."""
    early, late, peak_total, peak_one = [], [], 0, 0
    for when, by_proc in samples:
        if not by_proc:
            continue
        total = sum(by_proc.values())
        peak_total, peak_one = max(peak_total, total), max(peak_one, max(by_proc.values()))
        share = progress.final_at(when) / files
        if 0.1 <= share <= 0.2:
            early.append(total)
        elif share >= 0.9:
            late.append(total)
    mib = 1024 * 1024
    e, la = median(early), median(late)
    return {
        "worker_rss_mib_at_10_20pct": round(e / mib, 1) if early else None,
        "worker_rss_mib_at_90_100pct": round(la / mib, 1) if late else None,
        "worker_rss_growth_pct": round((la - e) / e * 100, 1) if early and late else None,
        "worker_rss_mib_peak_total": round(peak_total / mib, 1),
        "worker_rss_mib_peak_one_process": round(peak_one / mib, 1),  # the process that scanned included
        "samples": len(samples),
    }


def counted(folder: Path, files: int) -> dict[str, Any]:
    """The counting plugin's per-process files, summed: SQL statements and SFTP requests per file."""
    sql = sftp = 0
    unknown = False
    paths = list(folder.glob("*.json"))
    for path in paths:
        data = json.loads(path.read_text())
        sql += data["sql_statements"]
        if data["sftp_requests"] is None:
            unknown = True
        else:
            sftp += data["sftp_requests"]
    return {
        "counted_processes": len(paths),
        "sql_statements_per_file": round(sql / files, 2),
        "sftp_requests_per_file": None if unknown else round(sftp / files, 2),
    }


# ------------------------------------------------------------ the phases, in one run
def cpu_ratios(t: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    out = {
        "machine": ratio(t["cpu"]["machine_cpu_ms_per_file"], b["cpu"]["machine_cpu_ms_per_file"]),
        "pipeline": ratio(t["cpu"]["pipeline_cpu_ms_per_file"], b["cpu"]["pipeline_cpu_ms_per_file"]),
        # the baseline's own process stands where the workers stand
        "workers_vs_baseline_process": ratio(
            t["cpu"]["cpu_ms_per_file"]["workers"], b["cpu"]["cpu_ms_per_file"]["baseline"]
        ),
    }
    for cls in ("postgres", "rabbitmq", "sshd"):
        out[cls] = ratio(t["cpu"]["cpu_ms_per_file"][cls], b["cpu"]["cpu_ms_per_file"][cls])
    return out


def pair(t: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "baseline": b,
        "tlogsync": t,
        "ratio": ratio(t["files_per_s"], b["files_per_s"]),
        "cpu_ratio": cpu_ratios(t, b),
    }


def run_phases(bench: Bench, args: argparse.Namespace, phases: dict[str, Any], save: Any) -> None:
    """Fill phases, saving after each; a phase that fails is recorded as its error and the next one runs."""
    one_args = shlex.split(args.one_process_args)
    two_args = shlex.split(args.two_process_args if args.two_process_args is not None else args.one_process_args)

    log(f"whole machine: {args.pairs} pairs of {args.files} files, alternating")
    pairs = []
    for _ in range(args.pairs):
        b = bench.baseline(args.files)
        t = bench.tlogsync("whole", args.files)
        pairs.append(pair(t, b))
    whole = phases["whole_machine"] = {
        "pairs": pairs,
        "ratio_median": median([p["ratio"] for p in pairs]),
        "cpu_ratio_median": {k: median([p["cpu_ratio"][k] for p in pairs]) for k in pairs[0]["cpu_ratio"]},
        "baseline_files_per_s_median": median([p["baseline"]["files_per_s"] for p in pairs]),
        "tlogsync_files_per_s_median": median([p["tlogsync"]["files_per_s"] for p in pairs]),
        "tlogsync_pipeline_cpu_ms_per_file_median": median(
            [p["tlogsync"]["cpu"]["pipeline_cpu_ms_per_file"] for p in pairs]
        ),
        "cpu_ms_per_file_median": {
            side: {
                "machine": median([p[side]["cpu"]["machine_cpu_ms_per_file"] for p in pairs]),
                "pipeline": median([p[side]["cpu"]["pipeline_cpu_ms_per_file"] for p in pairs]),
                **{c: median([p[side]["cpu"]["cpu_ms_per_file"][c] for p in pairs]) for c in CLASSES},
            }
            for side in ("baseline", "tlogsync")
        },
    }
    save()

    def counting() -> dict[str, Any]:
        # Counting costs a lock and a Python call per statement and per SFTP request: a plain run of the same
        # size just before says how much that changes the timing, which is why no timed run counts.
        log(f"counting: {args.count_files} files, plain -A worker then -A ops.bench.countingapp")
        plain = bench.tlogsync("plain", args.count_files)
        c = bench.tlogsync("counting", args.count_files, app="ops.bench.countingapp", counting=True)
        return {
            "plain": plain,
            "tlogsync": c,
            "files_per_s_counting_over_plain": ratio(c["files_per_s"], plain["files_per_s"]),
            "pipeline_cpu_counting_over_plain": ratio(
                c["cpu"]["pipeline_cpu_ms_per_file"], plain["cpu"]["pipeline_cpu_ms_per_file"]
            ),
        }

    def processes() -> dict[str, Any]:
        log(f"one process ({args.one_process_args}) and two ({args.two_workers} x {shlex.join(two_args)})")
        b = bench.baseline(args.process_files)
        one = bench.tlogsync("one", args.process_files, workers=[one_args])
        two = bench.tlogsync("two", args.process_files, workers=[two_args] * args.two_workers)
        return {
            "baseline": b,
            "one": one,
            "two": two,
            "one_ratio": ratio(one["files_per_s"], b["files_per_s"]),
            "two_ratio": ratio(two["files_per_s"], b["files_per_s"]),
            "two_over_one": ratio(two["files_per_s"], one["files_per_s"]),
        }

    def small() -> dict[str, Any]:
        log(f"small files: {args.small_files}")
        b = bench.baseline(args.small_files, size="small")
        return pair(bench.tlogsync("small", args.small_files, size="small"), b)

    def profiled() -> dict[str, Any]:
        out = bench.work / "profile.txt"
        log(f"profile: py-spy on the default worker, {args.files} files -> {out}")
        t = bench.tlogsync("profile", args.files, profile_to=out)
        summary = profile.summarise(out)
        (bench.work / "profile-summary.txt").write_text(profile.render(summary))
        return {"run": t, "summary": summary}

    def latency() -> list[dict[str, Any]]:
        rate70 = 0.7 * whole["tlogsync_files_per_s_median"]
        return bench.latency([args.latency_rate, rate70], args.latency_seconds)

    def backlog() -> dict[str, Any]:
        b = bench.backlog(args.backlog)
        b["cpu_vs_whole_machine"] = ratio(
            b["cpu"]["pipeline_cpu_ms_per_file"], whole["tlogsync_pipeline_cpu_ms_per_file_median"]
        )
        return b

    for name, wanted, phase in (
        ("counting", args.count_files, counting),
        ("processes", args.process_files, processes),
        ("small", args.small_files, small),
        ("profile", args.profile, profiled),
        ("latency", args.latency_seconds, latency),
        ("backlog", args.backlog, backlog),
    ):
        if not wanted:
            continue
        try:
            phases[name] = phase()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - measure what can be measured, say what failed
            log(f"{name}: FAILED: {exc}")
            phases[name] = {"error": str(exc)}
        save()

    # the management API's counters settle every few seconds: read them once, at the end
    time.sleep(6)
    for run in bench.runs:
        try:
            sent = rabbit.published(run.vhost)
        except Exception as exc:  # noqa: BLE001 - a run without its task counts is still a run
            log(f"{run.label}: no publish counts from the management API: {exc}")
            continue
        for found in walk(phases):
            if found.get("vhost") == run.vhost and found.get("files"):
                found["tasks_published"] = sent
                found["tasks_per_file"] = round(sum(sent.values()) / found["files"], 2)


def walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(d for v in node.values() for d in walk(v))]
    if isinstance(node, list):
        return [d for v in node for d in walk(v)]
    return []


# ------------------------------------------------------------ the table
def figures(report: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """(key, description, measured, unit) rows of the table, in the phases' order."""
    ph = report["phases"]
    rows: list[tuple[str, str, Any, str]] = []

    def row(key: str, text: str, value: Any, unit: str = "") -> None:
        rows.append((key, text, value, unit))

    def usable(name: str) -> dict[str, Any] | None:
        found = ph.get(name)
        if isinstance(found, dict) and "error" in found:
            row(f"{name}_error", f"{name}: FAILED", found["error"][:60])
            return None
        return found  # type: ignore[no-any-return]

    w = usable("whole_machine")
    if w:
        row(
            "whole_machine_ratio",
            "whole machine: files/s, tlogsync / baseline (median of pairs)",
            w["ratio_median"],
            "x",
        )
        row(
            "whole_machine_cpu_ratio",
            "whole machine: machine CPU per file, tlogsync / baseline",
            w["cpu_ratio_median"]["machine"],
            "x",
        )
        for cls in ("pipeline", "workers_vs_baseline_process", "postgres", "rabbitmq", "sshd"):
            row(f"cpu_ratio_{cls}", f"  CPU per file, tlogsync / baseline: {cls}", w["cpu_ratio_median"][cls], "x")
        for side in ("baseline", "tlogsync"):
            c = w["cpu_ms_per_file_median"][side]
            own = "workers" if side == "tlogsync" else "baseline"
            values = ", ".join(f"{c[k]:.1f}" for k in ("machine", "pipeline", own, "postgres", "rabbitmq", "sshd"))
            row(f"cpu_ms_{side}", f"  {side} CPU ms/file: machine, pipeline, {own}, pg, rabbit, sshd", values)
        row(
            "files_per_s",
            "  files/s: baseline, tlogsync (medians)",
            f"{w['baseline_files_per_s_median']}, {w['tlogsync_files_per_s_median']}",
        )
    p = usable("processes")
    if p:
        row("one_process_os_processes", "one process: OS processes of the worker", p["one"]["os_processes"])
        row("one_process_ratio", "one process: files/s, tlogsync / baseline", p["one_ratio"], "x")
        row("two_process_os_processes", "two processes: OS processes of the workers", p["two"]["os_processes"])
        row("two_over_one", "two processes / one process, files/s", p["two_over_one"], "x")
    sm = usable("small")
    if sm:
        row(
            "small_files_ratio",
            f"small files (~{sm['tlogsync']['mean_file_bytes'] // 1000} KB): files/s, tlogsync / baseline",
            sm["ratio"],
            "x",
        )
        row(
            "small_cpu_ratio", "small files: machine CPU per file, tlogsync / baseline", sm["cpu_ratio"]["machine"], "x"
        )
    b = usable("backlog")
    if b:
        drained = "drained" if b["finished"] else f"NOT drained in {b['time_limit_s']:g}s"
        row("backlog_final", f"backlog of {b['files_written']}: files final ({drained})", b["files"])
        row(
            "backlog_cpu_vs_whole_machine",
            "backlog: pipeline CPU per file / whole-machine runs'",
            b["cpu_vs_whole_machine"],
            "x",
        )
        row("backlog_first_final_s", "backlog: first file final after the worker's start", b["first_final_s"], "s")
        row(
            "backlog_worker_rss_growth_pct",
            "backlog: worker RSS growth, 10-20 % -> 90-100 % of the files",
            b["memory"]["worker_rss_growth_pct"],
            "%",
        )
        m = b["memory"]
        row(
            "backlog_worker_rss_peak",
            "backlog: worker RSS peak MiB (all, largest process)",
            f"{m['worker_rss_mib_peak_total']}, {m['worker_rss_mib_peak_one_process']}",
        )
        row(
            "backlog_broker_max_messages",
            "backlog: most messages in the broker's work queues",
            b["broker_max_messages"],
        )
        row("backlog_files_per_s", "backlog: files/s from the worker's start", b["files_per_s"])
    lat = usable("latency")
    for i, one in enumerate(lat or []):
        key = "latency_p95_s_at_100" if i == 0 else "latency_p95_s_at_70pct"
        row(
            key,
            f"latency p95 at {one['rate_per_s']}/s (scan every {one['scan_interval_s']}s), written -> stored",
            one["p95_s"],
            "s",
        )
    c = usable("counting")
    if c:
        row("sql_per_file", "SQL statements per file (counting run)", c["tlogsync"]["sql_statements_per_file"])
        row("sftp_per_file", "SFTP requests per file (counting run)", c["tlogsync"]["sftp_requests_per_file"])
        row(
            "counting_distortion",
            "counting run's files/s / a plain run's of the same size",
            c["files_per_s_counting_over_plain"],
            "x",
        )
    if w:
        xact_t = median([q["tlogsync"]["transactions_per_file"] for q in w["pairs"]])
        xact_b = median([q["baseline"]["transactions_per_file"] for q in w["pairs"]])
        row(
            "transactions_per_file",
            "transactions per file (pg_stat_database): tlogsync, baseline",
            f"{xact_t}, {xact_b}",
        )
        tasks = [q["tlogsync"]["tasks_per_file"] for q in w["pairs"] if q["tlogsync"].get("tasks_per_file")]
        row(
            "tasks_per_file", "tasks (messages published to the work queues) per file", median(tasks) if tasks else None
        )
    usable("profile")
    return rows


def judge(key: str, value: Any) -> tuple[str, str]:
    target = TARGETS.get(key)
    if target is None or not isinstance(value, int | float):
        return "-", "-"
    kind, bound = target
    met = value >= bound if kind == "min" else value <= bound
    return f"{'>=' if kind == 'min' else '<='} {bound:g}", "yes" if met else "NO"


def print_table(report: dict[str, Any]) -> None:
    print(f"\ntlogsync benchmark, {report['date']}, {report['machine']}")
    print(f"command: {report['command']}")
    print(f"{'figure':<86} {'measured':>34} {'target':>9} {'met':>4}")
    for key, text, value, unit in report["table"]:
        shown = f"{value:g}{unit}" if isinstance(value, int | float) else f"{value}{unit if value is not None else ''}"
        target, met = judge(key, value)
        print(f"{text:<86} {shown:>34} {target:>9} {met:>4}")
    print(f"bench took {report['bench_seconds']} s")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    files = env_int("BENCH_FILES", 2000)
    ap.add_argument("--files", type=int, default=files, help="files per whole-machine run (BENCH_FILES)")
    ap.add_argument(
        "--pairs", type=int, default=env_int("BENCH_PAIRS", 3), help="baseline/tlogsync pairs (BENCH_PAIRS)"
    )
    ap.add_argument(
        "--backlog", type=int, default=env_int("BENCH_BACKLOG", 10000), help="backlog files, 0: skip (BENCH_BACKLOG)"
    )
    ap.add_argument(
        "--backlog-seconds",
        type=float,
        default=env_float("BENCH_BACKLOG_SECONDS", 120.0),
        help="the backlog phase stops after this long from the worker's start, drained or not (0: when drained)",
    )
    ap.add_argument(
        "--count-files",
        type=int,
        default=env_int("BENCH_COUNT_FILES", max(100, files // 4)),
        help="counting run, 0: skip",
    )
    ap.add_argument(
        "--process-files",
        type=int,
        default=env_int("BENCH_PROCESS_FILES", max(100, files // 2)),
        help="one/two-process runs, 0: skip",
    )
    ap.add_argument(
        "--small-files",
        type=int,
        default=env_int("BENCH_SMALL_FILES", max(100, files // 2)),
        help="small-file pair, 0: skip",
    )
    ap.add_argument("--one-process-args", default=os.environ.get("BENCH_ONE_PROCESS_ARGS") or "--processes 1")
    ap.add_argument(
        "--two-process-args",
        default=os.environ.get("BENCH_TWO_PROCESS_ARGS") or None,
        help="default: the one-process args",
    )
    ap.add_argument(
        "--two-workers",
        type=int,
        default=env_int("BENCH_TWO_PROCESS_WORKERS", 2),
        help="workers started with the two-process args",
    )
    ap.add_argument(
        "--poll-seconds",
        type=int,
        default=env_int("BENCH_POLL_SECONDS", 1),
        help="beat's scan interval in the latency and backlog phases",
    )
    ap.add_argument("--latency-rate", type=float, default=env_float("BENCH_LATENCY_RATE", 100.0))
    ap.add_argument(
        "--latency-seconds", type=float, default=env_float("BENCH_LATENCY_SECONDS", 10.0), help="per rate, 0: skip"
    )
    ap.add_argument("--profile", action="store_true", default=os.environ.get("BENCH_PROFILE") == "1")
    ap.add_argument("--timeout", type=float, default=env_float("BENCH_TIMEOUT", 300.0))
    ap.add_argument(
        "--dsn",
        default=os.environ.get("TLOGSYNC_BENCH_DATABASE_URL") or None,
        help="default: a database of its own, tlogsync_bench_<random>, dropped at the end",
    )
    ap.add_argument("--keep", action="store_true", default=os.environ.get("BENCH_KEEP") == "1", help="keep it")
    ap.add_argument("--workdir", default=str(ROOT / ".bench"))
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT") or str(ROOT / ".bench" / "results.json"))
    args = ap.parse_args()
    if args.pairs < 1:
        ap.error("at least one pair")
    if args.profile and not profile.available():
        ap.error("BENCH_PROFILE=1 needs py-spy: .venv/bin/pip install py-spy")
    started = time.monotonic()
    bench = Bench(args)
    TARGETS["backlog_broker_max_messages"] = ("max", bench.settings.max_in_flight_per_retailer)
    TARGETS["latency_p95_s_at_100"] = TARGETS["latency_p95_s_at_70pct"] = ("max", args.poll_seconds + 1.0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = " ".join([f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")] + ["make bench"])
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_start": os.getloadavg(),
        "command": command,
        "args": vars(args),
        "phases": {},
    }
    out = Path(args.out)

    def save() -> None:
        report["bench_seconds"] = round(time.monotonic() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))

    try:
        bench.setup()
        run_phases(bench, args, report["phases"], save)
    finally:
        bench.teardown()
        report["load_average_at_end"] = os.getloadavg()
        save()
    report["table"] = figures(report)
    report["targets"] = {
        key: {"measured": value, "target": judge(key, value)[0], "met": judge(key, value)[1]}
        for key, _, value, _ in report["table"]
    }
    save()
    print_table(report)
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
