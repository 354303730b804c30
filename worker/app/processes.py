"""`celery -A worker worker` on a machine with several cores: one threads-pool worker process per core.

The threads pool (worker/app/pool.py) runs a process's tasks on threads, which the GIL keeps to one core. With
`--processes N` (default: one per core) the command's own process becomes a supervisor: once the app is imported
and the configuration checked (Celery's worker_init), it forks N worker processes, each of which goes on starting
as an ordinary one-process worker with the same options and a node name of its own (the first the command's
own, then `p2-<name>@<host>`, `p3-...`), and forks again one that ends while the supervisor is not stopping (as
the prefork pool replaces a child that died). The supervisor itself consumes nothing and holds no connection.

Signals: SIGTERM and SIGINT to the supervisor stop the workers warmly (SIGTERM to each; they finish their tasks);
SIGQUIT stops them at once (SIGQUIT to each). The workers are in the supervisor's process group (a `kill` of the
group reaches them all) and are told by the kernel to stop (SIGTERM) if the supervisor dies.

`--processes 1` (or any other pool than the default) runs one ordinary worker process, as Celery does.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import click
from celery import Celery

log = logging.getLogger("tlogsync.processes")

PR_SET_PDEATHSIG = 1
RESTART_PAUSE_SECONDS = 1.0  # between two starts of the same worker process
GIVE_UP_EXIT = 2  # a worker that ends with this code (bad settings or retailers file) is not started again


def processes_option() -> click.Option:
    return click.Option(
        ["--processes"],
        type=click.IntRange(min=1),
        default=None,
        help="tlogsync: worker processes of the default (threads) pool, each with --concurrency threads"
        " (default: one per core; 1: this process only)",
    )


def default_processes(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """One per core this process may use: the CPUs it may run on, fewer under a cgroup CPU quota (a container's
    CPU limit, rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open(cpu_max) as fh:  # noqa: PTH123
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def wants_supervisor(pool_cls: Any, processes: int | None, argv: Sequence[str]) -> bool:
    """Supervise when the pool is the default threads pool, more than one process is asked for (or the machine
    has more than one core) and the command line is a worker's that can be started again (not --detach)."""
    from worker.app.pool import ThreadsPool

    if not (isinstance(pool_cls, type) and issubclass(pool_cls, ThreadsPool)):
        return False
    if "worker" not in argv or any(a in ("-D", "--detach") for a in argv):
        return False
    return (processes if processes is not None else default_processes()) > 1


def node_name(nodename: str, slot: int) -> str:
    """Worker process `slot`'s node name. The first keeps the command's, so `celery inspect ping -d <name>` (a
    liveness probe) finds it."""
    name, _, host = nodename.partition("@")
    return nodename if slot == 1 else f"p{slot}-{name}@{host}"


class BecomeWorker(BaseException):  # noqa: N818 - not an error: the forked child leaves the supervisor's loop
    def __init__(self, nodename: str):
        super().__init__(nodename)
        self.nodename = nodename


class _Forked:
    """A forked worker process, as much of subprocess.Popen as the supervisor uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the process group still reaches them
        pass


class Supervisor:
    def __init__(self, nodename: str, processes: int):
        self.nodes = [node_name(nodename, slot + 1) for slot in range(processes)]
        self.procs: list[_Forked | None] = [None] * processes
        self.started_at = [0.0] * processes
        self.stopping: int | None = None  # the signal the workers were sent

    def _start(self, slot: int) -> None:
        """Fork worker process `slot`: the child leaves the supervisor (BecomeWorker) and goes on starting as an
        ordinary one-process worker, with the app already imported (as prefork's children are forked)."""
        self.started_at[slot] = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(signum, signal.SIG_DFL)  # Celery installs its own as it starts
            raise BecomeWorker(self.nodes[slot])
        self.procs[slot] = _Forked(pid)

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        forward = signal.SIGQUIT if signum == signal.SIGQUIT else signal.SIGTERM
        self.stopping = forward
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(forward)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, self._signal)
        print(
            f"tlogsync: {len(self.procs)} worker processes (threads pool); --processes 1 runs one",
            file=sys.stderr,
            flush=True,
        )
        for slot in range(len(self.procs)):
            self._start(slot)
        code = 0
        while True:
            alive = 0
            for slot, proc in enumerate(self.procs):
                if proc is None:
                    continue
                rc = proc.poll()
                if rc is None:
                    alive += 1
                    continue
                if self.stopping is not None:
                    self.procs[slot] = None
                    continue
                if rc == GIVE_UP_EXIT:
                    print(f"tlogsync: worker process {slot + 1} refused to start (exit 2): stopping", file=sys.stderr)
                    code = GIVE_UP_EXIT
                    self._signal(signal.SIGTERM, None)
                    self.procs[slot] = None
                    continue
                if time.monotonic() - self.started_at[slot] < RESTART_PAUSE_SECONDS:
                    alive += 1  # started again after the pause
                    continue
                print(
                    f"tlogsync: worker process {slot + 1} ended ({rc}): starting it again", file=sys.stderr, flush=True
                )
                self._start(slot)
                alive += 1
            if alive == 0 and (self.stopping is not None or code):
                return code
            time.sleep(0.2)


def install(app: Celery) -> None:
    """The --processes option and the supervisor, on the app's worker command."""
    from celery import concurrency, signals

    app.user_options["worker"].add(processes_option())

    @signals.celeryd_init.connect(weak=False)
    def _supervise(sender: str, instance: Any, conf: Any, options: dict[str, Any], **_: Any) -> None:
        # the CLI's --pool arrives as `pool` (a class: Celery's default "prefork" resolves to the configured pool)
        pool_cls = options.get("pool") or options.get("pool_cls") or concurrency.get_implementation(conf.worker_pool)
        processes = options.get("processes")
        if not wants_supervisor(pool_cls, processes, sys.argv[1:]):
            return
        count = processes if processes is not None else default_processes()
        try:
            code = Supervisor(sender, count).run()
        except BecomeWorker as child:
            instance.hostname = child.nodename  # a forked worker process: it starts as Celery goes on
            return
        raise SystemExit(code)
