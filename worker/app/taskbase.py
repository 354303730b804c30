"""The task base class: log context, the retry policy for transient errors, dead-lettering the rest.

Three tiers of failure:
- transient (SFTP/network, database unavailable, the soft time limit): retried with exponential backoff, full
  jitter, a cap;
- permanent (unknown retailer or ledger row, bad SFTP credentials or host key): rejected without
  requeue, so RabbitMQ dead-letters the message into `<queue>.dead`;
- retries exhausted: dead-lettered the same way.
Bad *files* are not task failures: ingest records them as `failed` in the ledger and succeeds.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from typing import Any

import psycopg
from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as KombuOperationalError

from worker.adapters.postgres.pool import describe_db_error, transient_db_errors
from worker.app.runtime import runtime
from worker.app.settings import RetryPolicy
from worker.core.errors import Permanent, TransientError, bounded

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


def backoff_seconds(policy: RetryPolicy, retries: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retries)], never below one second."""
    ceiling = min(policy.cap_seconds, policy.base_seconds * (2**retries))
    return max(1.0, (rng or random).uniform(0, ceiling))


class TlogTask(Task):  # type: ignore[misc]
    """Base for every tlogsync task."""

    abstract = True
    retry_policy_name = "ingest_retry"
    acks_late = True
    # The outcome lives in the ledger and in the task's log line; with no result backend, the value returned to
    # Celery is only repr'd (celery's tracer runs saferepr on it: about 50 us for ingest's dict, per task) and put
    # in the task-succeeded event. A task run once per file sets this: Celery gets None, callers of run() the dict.
    quiet_result = False

    @property
    def retry_policy(self) -> RetryPolicy:
        return getattr(runtime.settings, self.retry_policy_name)  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            # one connection checkout for the whole task; a database that cannot be reached is transient
            with transient_db_errors(), runtime.database().bound():
                result = self.run(*args, **kwargs)
        except (Retry, Reject):
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
            log.error("%s %s: %s\n%s", self.name, logged_args(args), reason, frames)
            raise self.dead_letter(reason, args, kwargs) from None
        self._log_done(args, result, started)
        return None if self.quiet_result else result

    def _log_done(self, args: tuple[Any, ...], result: Any, started: float) -> None:
        """One event per task: who, which file or order, what came of it, how long it took."""
        if not log.isEnabledFor(logging.INFO):
            return
        outcome = result if isinstance(result, dict) else {}
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
        log.info(
            "%s %s: %s in %.1f ms",
            self.name,
            shown or logged_args(args),
            fields["outcome"],
            fields["duration_ms"],
            extra={k: v for k, v in fields.items() if v is not None},
        )

    def _retry_or_give_up(self, exc: TransientError, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
        policy = self.retry_policy
        retries = self.request.retries or 0
        if retries >= policy.max_retries:
            return self.dead_letter(f"retries exhausted after {retries}: {exc}", args, kwargs)
        delay = backoff_seconds(policy, retries)
        log.warning(
            "%s %s: transient error, retry %d in %.1fs: %s",
            self.name,
            logged_args(args),
            retries + 1,
            delay,
            bounded(str(exc)),
        )
        return self.retry(exc=exc, countdown=delay, max_retries=policy.max_retries)  # type: ignore[no-any-return]

    def dead_letter(self, reason: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Reject:
        """Keep the reason in PostgreSQL, then reject without requeue: RabbitMQ moves it to <queue>.dead."""
        reason = bounded(reason)
        log.error("%s %s: dead-lettered: %s", self.name, logged_args(args), reason)
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
