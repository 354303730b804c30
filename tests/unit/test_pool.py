"""The default pool's time limits and the one-process-per-core supervisor's decisions (worker/app/pool.py,
worker/app/processes.py); the pool running real tasks is exercised by every e2e test and the fault suite."""

from __future__ import annotations

import threading
import time

from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as CeleryThreadsPool
from celery.exceptions import SoftTimeLimitExceeded

from worker.app.pool import ThreadsPool, TimeLimits
from worker.app.processes import default_processes, node_name, wants_supervisor


def test_a_task_past_its_soft_limit_gets_soft_time_limit_exceeded_in_its_own_thread():
    limits = TimeLimits(on_hard=lambda: None)
    caught: list[BaseException] = []
    started = threading.Event()

    def task() -> None:
        limits.begin(0.05, None)
        started.set()
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # Python instructions: the async exception arrives here
                time.sleep(0.001)
        except SoftTimeLimitExceeded as exc:
            caught.append(exc)
        finally:
            limits.end()

    t = threading.Thread(target=task)
    t.start()
    started.wait()
    time.sleep(0.1)
    limits.check()
    t.join(5)
    assert not t.is_alive()
    assert len(caught) == 1


def test_the_soft_limit_is_sent_once_and_never_to_a_thread_whose_task_ended():
    sent: list[int] = []
    limits = TimeLimits(on_hard=lambda: None, raise_soft=lambda ident, exc: sent.append(ident) or True)
    limits.begin(1.0, None)
    now = time.monotonic()
    limits.check(now + 2)
    limits.check(now + 3)
    assert sent == [threading.get_ident()]
    limits.end()
    limits.begin(1.0, None)
    limits.end()
    limits.check(now + 10)
    assert sent == [threading.get_ident()]


def test_past_the_hard_limit_the_process_ends():
    ended: list[bool] = []
    limits = TimeLimits(on_hard=lambda: ended.append(True), raise_soft=lambda ident, exc: True)
    limits.begin(1.0, 2.0)
    now = time.monotonic()
    limits.check(now + 1.5)
    assert ended == []
    limits.check(now + 2.5)
    assert ended == [True]


def test_the_supervisor_runs_only_for_the_default_pool_with_several_processes():
    argv = ["-A", "worker", "worker"]
    assert wants_supervisor(ThreadsPool, 2, argv)
    assert not wants_supervisor(ThreadsPool, 1, argv)
    assert not wants_supervisor(PreforkPool, 4, argv)
    assert not wants_supervisor(CeleryThreadsPool, 4, argv)  # `--pool threads`: Celery's own, one process
    assert not wants_supervisor(ThreadsPool, 2, [*argv, "--detach"])
    assert not wants_supervisor(ThreadsPool, 2, ["tests", "-x"])  # not a worker command line to start again


def test_one_process_per_core_fewer_under_a_cgroup_cpu_quota(tmp_path):
    cores = default_processes(str(tmp_path / "absent"))
    assert cores >= 1
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")
    assert default_processes(str(limit)) == min(cores, 2)
    limit.write_text("max 100000\n")
    assert default_processes(str(limit)) == cores


def test_each_worker_process_has_a_node_name_of_its_own_the_first_the_commands():
    assert node_name("ingest@h", 1) == "ingest@h"  # what a liveness probe pings
    assert node_name("ingest@h", 2) == "p2-ingest@h"
