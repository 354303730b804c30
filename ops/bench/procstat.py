"""CPU and memory from /proc: the whole machine's busy time, and each process class's own (workers, PostgreSQL,
RabbitMQ, sshd, the baseline), over a window, sampled every half second so that processes born during the
window are counted too.

A window's figure for a class is the sum, over every process of that class seen during the window, of its
utime+stime at the last sample minus at the window's start (zero for a process born after the start). A process
that ends between two samples loses at most its last half second. The machine's busy time is
user+nice+system+irq+softirq+steal from the first line of /proc/stat.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PROC = Path("/proc")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (idle=3, iowait=4 are not busy)
# PostgreSQL's own processes that work for every database (WAL, checkpoints, autovacuum's launcher).
PG_SHARED = ("checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication", "archiver")
RABBIT_HELPERS = ("erl_child_setup", "inet_gethost", "epmd")

CLASSES = ("workers", "beat", "baseline", "postgres", "rabbitmq", "sshd")
PIPELINE = ("workers", "beat", "baseline", "postgres", "rabbitmq", "sshd")  # what a run costs, "other" excluded


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str
    ppid: int
    sid: int
    start: int  # clock ticks after boot: (pid, start) names one process even when pids are reused
    cpu: int  # utime + stime, clock ticks
    rss: int  # bytes


def read_proc(pid: int) -> Proc | None:
    try:
        data = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    left, right = data.find("("), data.rfind(")")
    rest = data[right + 2 :].split()
    return Proc(
        pid=pid,
        comm=data[left + 1 : right],
        ppid=int(rest[1]),
        sid=int(rest[3]),
        start=int(rest[19]),
        cpu=int(rest[11]) + int(rest[12]),
        rss=int(rest[21]) * PAGE,
    )


def all_procs() -> dict[tuple[int, int], Proc]:
    out = {}
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None:
                out[(proc.pid, proc.start)] = proc
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    with open(PROC / "stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    busy = sum(values[i] for i in BUSY_FIELDS)
    return busy, busy + values[3] + values[4]


def boot_ticks_now() -> int:
    """Now, in the clock ticks after boot that /proc/<pid>/stat's start time uses."""
    return int(float((PROC / "uptime").read_text().split()[0]) * TICK)


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Window:
    """What one run cost; filled by the meter while it is open."""

    label: str
    started: float
    start_boot_ticks: int
    machine0: tuple[int, int]
    first: dict[tuple[int, int], int] = field(default_factory=dict)
    last: dict[tuple[int, int], int] = field(default_factory=dict)
    cls: dict[tuple[int, int], str] = field(default_factory=dict)
    rss: list[tuple[float, dict[tuple[int, int], int]]] = field(default_factory=list)  # workers' RSS over time
    result: dict[str, object] | None = None


class Meter:
    """Samples every process every `interval` seconds in a thread; one window open at a time."""

    def __init__(self, database: str, interval: float = 0.5):
        self.database = database
        self.interval = interval
        self.sessions: dict[int, str] = {}  # session id -> class, for the processes the bench starts
        self.sshd_pid: int | None = None
        self.exclude: set[int] = set()  # the bench's own PostgreSQL backends
        self.ticks: list[Callable[[], None]] = []  # called after each sample (broker, memory samplers)
        self._pg: dict[tuple[int, int], str | None] = {}
        self._window: Window | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def watch_session(self, sid: int, cls: str) -> None:
        """Processes of this session (a Popen started with start_new_session=True, and its children) are cls."""
        self.sessions[sid] = cls

    # ------------------------------------------------------------ classification
    def _postgres(self, key: tuple[int, int], pid: int) -> str | None:
        if key not in self._pg:
            title = cmdline(pid)
            if "postgres:" not in title:
                found: str | None = "postgres"  # the postmaster itself
            else:
                words = title.split(":", 2)[-1].split()
                text = " ".join(words)
                if any(text.startswith(name) for name in PG_SHARED) or self.database in words[:3]:
                    found = "postgres"
                else:
                    found = None  # another database's backend: not this bench's
            self._pg[key] = found
        return self._pg[key]

    def classify(self, proc: Proc, procs: dict[int, Proc]) -> str | None:
        if proc.sid in self.sessions:
            return self.sessions[proc.sid]
        if proc.comm == "postgres":
            return None if proc.pid in self.exclude else self._postgres((proc.pid, proc.start), proc.pid)
        if proc.comm == "beam.smp":
            return "rabbitmq" if "rabbit boot" in cmdline(proc.pid) else None  # not rabbitmqctl's VMs
        if proc.comm in RABBIT_HELPERS:
            parent = procs.get(proc.ppid)
            return "rabbitmq" if parent and parent.comm == "beam.smp" else None
        if self.sshd_pid is not None:
            seen, pid = 0, proc.pid
            while pid > 1 and seen < 20:  # the listener and its per-connection children
                if pid == self.sshd_pid:
                    return "sshd"
                parent = procs.get(pid)
                if parent is None:
                    break
                pid, seen = parent.ppid, seen + 1
        return None

    # ------------------------------------------------------------ sampling
    def _sample(self) -> None:
        procs = all_procs()
        by_pid = {p.pid: p for p in procs.values()}
        with self._lock:
            window = self._window
            if window is None:
                return
            rss: dict[tuple[int, int], int] = {}
            for key, proc in procs.items():
                cls = window.cls.get(key) or self.classify(proc, by_pid)
                if cls is None:
                    continue
                window.cls[key] = cls
                if key not in window.first:
                    window.first[key] = 0 if proc.start >= window.start_boot_ticks else proc.cpu
                window.last[key] = proc.cpu
                if cls == "workers":
                    rss[key] = proc.rss
            window.rss.append((time.monotonic(), rss))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()
            for tick in list(self.ticks):
                tick()

    def begin(self, label: str) -> Window:
        with self._lock:
            assert self._window is None, "one window at a time"
            self._window = Window(label, time.monotonic(), boot_ticks_now(), machine_ticks())
        # the processes already running count from here: their CPU so far is the window's zero
        self._sample()
        return self._window

    def end(self, window: Window, files: int) -> dict[str, object]:
        self._sample()
        with self._lock:
            self._window = None
        busy1, total1 = machine_ticks()
        busy0, total0 = window.machine0
        seconds = time.monotonic() - window.started
        per_class = dict.fromkeys(CLASSES, 0.0)
        processes = dict.fromkeys(CLASSES, 0)
        for key, cls in window.cls.items():
            per_class[cls] += (window.last[key] - window.first[key]) / TICK
            processes[cls] += 1
        machine = (busy1 - busy0) / TICK
        pipeline = sum(per_class[c] for c in PIPELINE)
        window.result = {
            "seconds": round(seconds, 3),
            "machine_busy_s": round(machine, 2),
            "machine_utilisation": round((busy1 - busy0) / max(1, total1 - total0), 3),
            "cpu_s": {k: round(v, 2) for k, v in per_class.items()},
            "processes": processes,
            "machine_cpu_ms_per_file": round(machine * 1000 / files, 3),
            "pipeline_cpu_ms_per_file": round(pipeline * 1000 / files, 3),
            "cpu_ms_per_file": {k: round(v * 1000 / files, 3) for k, v in per_class.items()},
            "other_cpu_s": round(machine - pipeline, 2),  # everything else on the machine during the run
        }
        return window.result
