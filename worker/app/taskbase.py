"""The task base class: log context, the retry policy for transient errors, dead-lettering the rest.

Three tiers of failure:
- transient (SFTP/network, database unavailable, the soft time limit): retried with exponential backoff, full
  jitter, a cap;
- permanent (unknown retailer or ledger row, bad SFTP credentials or host key): rejected without
  requeue, so RabbitMQ dead-letters the message into `<queue>.dead`;
- retries exhausted: dead-lettered the same way, except for a task its schedule redoes (`redone_by_schedule`: the
  scan), which ends in FAILURE without a dead letter (logged, and counted in `task_failures`).
A bad *file* is recorded as `failed` in the ledger and moved to error_dir; its task then ends in FAILURE
(`FileFailed`, one of the `throws`: Celery logs it without a traceback) so Flower's Failed filter shows it, and is
neither retried nor dead-lettered. Both kinds are kept with their arguments (`task_failures`), so Flower's Retry
re-sends them as they were. A task that succeeds and carries the replay header marks its dead letter resolved.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
import traceback
from functools import cache
from typing import Any

import psycopg
from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as KombuOperationalError

from worker.adapters.postgres.operations import FILE_FAILED, GAVE_UP
from worker.adapters.postgres.pool import describe_db_error, transient_db_errors
from worker.adapters.rabbitmq import REPLAY_HEADER
from worker.app.runtime import runtime
from worker.app.settings import RetryPolicy
from worker.core.errors import FileFailed, LeftToSchedule, Permanent, TransientError, bounded
from worker.monitoring import logs

log = logging.getLogger("tlogsync.tasks")

BROKER_ERRORS: tuple[type[Exception], ...] = (KombuOperationalError, ConnectionError)


def as_transient(exc: BaseException) -> TransientError | None:
    """A failure worth a retry that is not a TransientError itself: the soft time limit, the broker."""
    if isinstance(exc, SoftTimeLimitExceeded):
        # A stuck lock or SFTP read held the task too long; the next attempt may find it free. The attempt
        # still counts toward TLOGSYNC_MAX_ATTEMPTS, so a file that always times out is failed in the end.
        return TransientError("soft time limit exceeded: the task ran too long (a stuck lock or SFTP read?)")
    if isinstance(exc, BROKER_ERRORS):
        # a publish of follow-up or file messages failed: the ledger or the outbox still has the work
        return TransientError(f"broker: {bounded(repr(exc))}")
    return None


def unexpected_reason(exc: BaseException) -> str:
    """The reason kept for an unforeseen failure: a database error by its condition (its message may quote a
    value from a file or a message), anything else by its text, bounded."""
    if isinstance(exc, psycopg.Error):
        return f"unexpected database error: {describe_db_error(exc)}"
    return bounded(f"unexpected {type(exc).__name__}: {exc}")


def logged_args(args: Any) -> str:
    """A task's arguments as log lines show them: a forged 2 MB argument is cut to a few KB."""
    return bounded(repr(args))


# The argument names of our tasks that say what a task is about, and the log field each becomes.
CONTEXT_ARGUMENTS = {"retailer_id": "retailer", "file_id": "file_id", "file_name": "file", "order_id": "order_id"}


@cache
def _signature(run: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(run)
    except (TypeError, ValueError):
        return None


def log_context(name: str, task_id: str | None, queue: str | None, run: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """What every log line of a task carries: the task, its id and queue, and the retailer, file or order its
    arguments name (bounded: a message's arguments are not trusted)."""
    fields: dict[str, Any] = {"task": name, "task_id": task_id, "queue": queue}
    signature = _signature(run)  # a bound task's run is a bound method: its signature leaves self out
    try:
        bound = signature.bind_partial(*args, **kwargs).arguments if signature is not None else {}
    except TypeError:  # a message with arguments the task does not take: it fails by itself, logged as it is
        bound = {}
    bound.pop("self", None)
    for argument, field in CONTEXT_ARGUMENTS.items():
        value = bound.get(argument)
        if isinstance(value, int) and not isinstance(value, bool):
            fields[field] = value
        elif isinstance(value, str):
            fields[field] = bounded(value, 300)
    return fields


def backoff_seconds(policy: RetryPolicy, retries: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retries)], never below one second."""
    ceiling = min(policy.cap_seconds, policy.base_seconds * (2**retries))
    return max(1.0, (rng or random).uniform(0, ceiling))


class TlogTask(Task):  # type: ignore[misc]
    """Base for every tlogsync task."""

    abstract = True
    retry_policy_name = "ingest_retry"
    acks_late = True
    # Expected ends: FAILURE in Flower, acknowledged (no dead letter), logged by us at WARNING, by Celery at INFO.
    throws = (FileFailed, LeftToSchedule)
    # True for a task beat sends again anyway (the scan): out of retries, it is left to the next run.
    redone_by_schedule = False
    # The outcome lives in the ledger and in the task's log line; with no result backend, the value returned to
    # Celery is only repr'd (celery's tracer runs saferepr on it: about 50 us for ingest's dict, per task) and put
    # in the task-succeeded event. A task run once per file sets this: Celery gets None, callers of run() the dict.
    quiet_result = False

    @property
    def retry_policy(self) -> RetryPolicy:
        return getattr(runtime.settings, self.retry_policy_name)  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        queue = (self.request.delivery_info or {}).get("routing_key")
        with logs.context(**log_context(self.name, self.request.id, queue, self.run, args, kwargs)):
            return self._call(args, kwargs)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            # one connection checkout for the whole task; a database that cannot be reached is transient
            with transient_db_errors(), runtime.database().bound():
                result = self.run(*args, **kwargs)
        except (Retry, Reject, LeftToSchedule):
            raise
        except FileFailed as exc:
            self._file_failed(exc, args, kwargs)
            raise
        except TransientError as exc:
            raise self._retry_or_give_up(exc, args, kwargs) from exc
        except Permanent as exc:
            # from None: the reason says it all, and a message's hostile text is not logged twice over
            raise self.dead_letter(f"{type(exc).__name__}: {exc}", args, kwargs) from None
        except Exception as exc:
            transient = as_transient(exc)
            if transient is not None:
                raise self._retry_or_give_up(transient, args, kwargs) from exc
            # Not foreseen (a bug, a permission denied on a folder...): never acknowledged silently. The
            # reason is kept and the message dead-lettered, where ops see it and can replay it once fixed.
            # The log shows where it happened (the innermost frames), with the bounded reason, not the
            # exception's own text (a database error quotes the value it refused).
            reason = unexpected_reason(exc)
            frames = "".join(traceback.format_tb(exc.__traceback__)[-20:])
            log.error(
                "%s %s: %s\n%s",
                self.name,
                logged_args(args),
                reason,
                frames,
                extra={"outcome": "error", "error": reason},
            )
            raise self.dead_letter(reason, args, kwargs) from None
        self._log_done(args, result, started)
        self._resolve_replayed()
        return None if self.quiet_result else result

    def _header(self, name: str) -> Any:
        request = self.request
        return getattr(request, name, None) or (getattr(request, "headers", None) or {}).get(name)

    def _resolve_replayed(self) -> None:
        """A replayed dead letter (or a task retried in its place) that succeeded: its dead letter is resolved."""
        replay_of = self._header(REPLAY_HEADER)
        if not replay_of:
            return
        try:
            if runtime.dead_letters().mark_resolved(str(replay_of), f"its replay succeeded (task {self.request.id})"):
                log.info("%s: dead letter %s resolved: its replay succeeded", self.name, bounded(str(replay_of), 200))
        except Exception:  # noqa: BLE001 - the work is done; a mark missed is caught by the next sweep
            log.warning("could not mark dead letter %s resolved", bounded(str(replay_of), 200), exc_info=True)

    def _context(self, args: tuple[Any, ...]) -> dict[str, Any]:
        """What a warning or error line carries: task, task id, queue, retailer (and file id, for a file task)."""
        fields: dict[str, Any] = {
            "task": self.name,
            "task_id": self.request.id,
            "queue": (self.request.delivery_info or {}).get("routing_key"),
        }
        if args and isinstance(args[0], str):
            fields["retailer"] = bounded(args[0], 200)
        if len(args) > 1 and isinstance(args[1], int):
            fields["file_id" if len(args) > 2 else "order_id"] = args[1]
        return {k: v for k, v in fields.items() if v is not None}

    def _keep_failure(self, kind: str, reason: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        file_id = args[1] if kind == FILE_FAILED and len(args) > 1 and isinstance(args[1], int) else None
        try:
            runtime.operations().record_failure(
                self.request.id or "",
                self.name,
                (self.request.delivery_info or {}).get("routing_key") or "unknown",
                kind,
                args,
                kwargs,
                reason,
                args[0] if args and isinstance(args[0], str) else None,
                file_id,
            )
        except Exception:  # noqa: BLE001 - the task's end must not change for want of its record
            log.warning("could not record the failure of %s", bounded(str(self.request.id), 200), exc_info=True)

    def _file_failed(self, exc: FileFailed, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        reason = bounded(str(exc))
        log.warning(
            "%s %s: file failed: %s",
            self.name,
            logged_args(args),
            reason,
            extra={**self._context(args), "outcome": "failed", "error": reason},
        )
        self._keep_failure(FILE_FAILED, reason, args, kwargs)

    def _log_done(self, args: tuple[Any, ...], result: Any, started: float) -> None:
        """One event per task: who, which file or order, what came of it, how long it took. A file that failed
        is a warning, with its reason: someone has to fix it and replay it."""
        outcome = result if isinstance(result, dict) else {}
        failed = outcome.get("status") == "failed"
        level = logging.WARNING if failed else logging.INFO
        if not log.isEnabledFor(level):
            return
        fields = {
            "task": self.name,
            "task_id": self.request.id,
            "retailer": args[0] if args else None,
            "file": outcome.get("file"),
            "order_id": outcome.get("order_id"),
            "outcome": outcome.get("status") or ("done" if result is not None else None),
            "error": outcome.get("error"),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        # a file is shown as <retailer>/<name> (names repeat across retailers); the line is the task's record
        # in the log, Celery's own success line no longer carrying the result (quiet_result)
        shown = f"{fields['retailer']}/{fields['file']}" if fields["file"] and fields["retailer"] else fields["file"]
        log.log(
            level,
            "%s %s: %s in %.1f ms%s",
            self.name,
            shown or logged_args(args),
            fields["outcome"],
            fields["duration_ms"],
            f": {bounded(str(fields['error']))}" if failed and fields["error"] else "",
            extra={k: v for k, v in fields.items() if v is not None},
        )

    def _retry_or_give_up(self, exc: TransientError, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
        policy = self.retry_policy
        retries = self.request.retries or 0
        if retries >= policy.max_retries:
            if self.redone_by_schedule:
                return self._left_to_schedule(f"retries exhausted after {retries}: {exc}", args, kwargs)
            return self.dead_letter(f"retries exhausted after {retries}: {exc}", args, kwargs)
        delay = backoff_seconds(policy, retries)
        log.warning(
            "%s %s: transient error, retry %d in %.1fs: %s",
            self.name,
            logged_args(args),
            retries + 1,
            delay,
            bounded(str(exc)),
            extra={"outcome": "retry", "retries": retries + 1, "error": bounded(str(exc))},
        )
        return self.retry(exc=exc, countdown=delay, max_retries=policy.max_retries)  # type: ignore[no-any-return]

    def _left_to_schedule(self, reason: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> LeftToSchedule:
        """Out of retries, not dead-lettered: the next scheduled run does this work (a dead letter would stay
        behind after it had, and keep an alert firing for nothing)."""
        reason = bounded(reason)
        log.warning(
            "%s %s: gave up, not dead-lettered: the next scheduled run redoes it: %s",
            self.name,
            logged_args(args),
            reason,
            extra={**self._context(args), "error": reason},
        )
        self._keep_failure(GAVE_UP, reason, args, kwargs)
        return LeftToSchedule(f"{reason}; left to the next scheduled run")

    def dead_letter(self, reason: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Reject:
        """Keep the reason in PostgreSQL, then reject without requeue: RabbitMQ moves it to <queue>.dead."""
        reason = bounded(reason)
        log.error(
            "%s %s: dead-lettered: %s",
            self.name,
            logged_args(args),
            reason,
            extra={"outcome": "dead-lettered", "error": reason, "retries": self.request.retries or 0},
        )
        queue = (self.request.delivery_info or {}).get("routing_key") or "unknown"
        try:
            runtime.dead_letters().record(
                self.request.id or "",
                self.name,
                queue,
                args,
                kwargs,
                reason,
                args[0] if args and isinstance(args[0], str) else None,
            )
        except Exception:  # noqa: BLE001 - the dead letter itself must not be lost for want of its reason
            log.exception("could not record the reason of dead letter %s", bounded(str(self.request.id), 200))
        return Reject(reason, requeue=False)
