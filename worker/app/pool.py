"""The default worker pool: Celery's threads pool, with the time limits Celery's threads pool does not enforce.

One process runs its tasks on threads: no pipe and no pickling between a parent and its children (the prefork
pool's cost per task), and one task's waits (SFTP, PostgreSQL, RabbitMQ) overlap the others' work. The GIL
bounds one process to one core, so `celery -A worker worker` starts one such process per core
(worker/app/processes.py).

Time limits, as the prefork pool has them:
- soft: SoftTimeLimitExceeded is raised in the task's thread (PyThreadState_SetAsyncExc; it arrives at the next
  Python instruction, so a thread blocked in a system call gets it when the call returns); the statement the
  task waits on in PostgreSQL, if any, is cancelled at the same time (so a stuck lock ends now), SFTP reads
  time out after TLOGSYNC_SFTP_TIMEOUT. TlogTask retries it as a transient error, as under prefork.
- hard: the process ends (exit code 70), as a prefork child past its hard limit is killed. Its unacknowledged
  messages go back to the queue (acks late); its supervisor starts a new process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.concurrency.base import apply_target
from celery.concurrency.thread import ApplyResult
from celery.concurrency.thread import TaskPool as CeleryThreadsPool
from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger("tlogsync.pool")

HARD_LIMIT_EXIT = 70  # EX_SOFTWARE
WATCH_SECONDS = 0.5  # how often the watchdog looks at the deadlines


@dataclass
class _Deadline:
    soft: float | None
    hard: float | None
    soft_sent: bool = False


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Raise exc_type in the thread `ident` at its next Python instruction; False if no such thread."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))
    if done > 1:  # more than one thread state touched: undo (CPython's documented contract)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        return False
    return done == 1


class TimeLimits:
    """Deadlines of the tasks running on a process's threads, and a watchdog that enforces them."""

    def __init__(
        self,
        on_hard: Callable[[], None] | None = None,
        raise_soft: Callable[[int, type[BaseException]], bool] = raise_in_thread,
        interrupt: Callable[[int], None] | None = None,
    ):
        self._interrupt = interrupt
        self._lock = threading.Lock()
        self._running: dict[int, _Deadline] = {}
        self._on_hard = on_hard or self._exit
        self._raise_soft = raise_soft
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="tlogsync-time-limits", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def begin(self, soft_seconds: float | None, hard_seconds: float | None) -> None:
        now = time.monotonic()
        deadline = _Deadline(now + soft_seconds if soft_seconds else None, now + hard_seconds if hard_seconds else None)
        with self._lock:
            self._running[threading.get_ident()] = deadline  # replaces whatever the thread had before

    def end(self) -> None:
        ident = threading.get_ident()
        while True:  # a soft limit raised at this very moment must not leave the deadline behind
            try:
                with self._lock:
                    self._running.pop(ident, None)
                return
            except SoftTimeLimitExceeded:
                continue

    def check(self, now: float | None = None) -> None:
        """Enforce the deadlines once (the watchdog calls this every WATCH_SECONDS)."""
        now = time.monotonic() if now is None else now
        hard = False
        soft: list[int] = []
        with self._lock:
            for ident, d in self._running.items():
                if d.hard is not None and now >= d.hard:
                    hard = True
                elif d.soft is not None and not d.soft_sent and now >= d.soft:
                    d.soft_sent = True
                    self._raise_soft(ident, SoftTimeLimitExceeded)
                    soft.append(ident)
        if hard:
            self._on_hard()
        for ident in soft:
            if self._interrupt is not None:
                # a thread blocked in a statement gets the exception when the statement ends: end it now
                try:
                    self._interrupt(ident)
                except Exception:  # noqa: BLE001 - the watchdog must keep watching
                    log.exception("could not interrupt a task past its soft time limit")

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            self.check()

    @staticmethod
    def _exit() -> None:
        log.critical("a task ran past its hard time limit: ending this worker process (its messages are redelivered)")
        logging.shutdown()
        os._exit(HARD_LIMIT_EXIT)


class ThreadsPool(CeleryThreadsPool):  # type: ignore[misc]
    """Celery's threads pool, enforcing soft and hard time limits (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from worker.app.runtime import runtime

        self.limits = TimeLimits(interrupt=runtime.interrupt)

    def on_start(self) -> None:
        self.limits.start()
        super().on_start()

    def on_stop(self) -> None:
        self.limits.stop()
        super().on_stop()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        **_: Any,
    ) -> ApplyResult:
        limits = self.limits

        def run() -> None:
            limits.begin(soft_timeout, timeout)
            try:
                apply_target(target, args, kwargs, callback, accept_callback)
            finally:
                limits.end()

        return ApplyResult(self.executor.submit(run))
