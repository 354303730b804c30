"""The task base class: log context, the retry policy for transient errors, dead-lettering the rest.

Three tiers of failure:
- transient (SFTP/network, database unavailable): retried with exponential backoff, full jitter, a cap;
- permanent (unknown retailer or ledger row, bad SFTP credentials or host key): rejected without
  requeue, so RabbitMQ dead-letters the message into `<queue>.dead`;
- retries exhausted: dead-lettered the same way.
Bad *files* are not task failures: ingest records them as `failed` in the ledger and succeeds.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry
from kombu.exceptions import OperationalError as KombuOperationalError

from worker.adapters.postgres.pool import transient_db_errors
from worker.app.runtime import runtime
from worker.app.settings import RetryPolicy
from worker.core.errors import Permanent, TransientError

log = logging.getLogger("tlogsync.tasks")

BROKER_ERRORS: tuple[type[Exception], ...] = (KombuOperationalError, ConnectionError)


def backoff_seconds(policy: RetryPolicy, retries: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retries)], never below one second."""
    ceiling = min(policy.cap_seconds, policy.base_seconds * (2**retries))
    return max(1.0, (rng or random).uniform(0, ceiling))


class TlogTask(Task):  # type: ignore[misc]
    """Base for every tlogsync task."""

    abstract = True
    retry_policy_name = "ingest_retry"
    acks_late = True

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
        except BROKER_ERRORS as exc:
            # a publish of follow-up or file messages failed: the ledger or the outbox still has the work
            raise self._retry_or_give_up(TransientError(f"broker: {exc!r}"), args, kwargs) from exc
        except TransientError as exc:
            raise self._retry_or_give_up(exc, args, kwargs) from exc
        except Permanent as exc:
            raise self.dead_letter(f"{type(exc).__name__}: {exc}", args, kwargs) from exc
        except Exception as exc:
            # Not foreseen (a bug, a permission denied on a folder...): never acknowledged silently. The
            # reason is kept and the message dead-lettered, where ops see it and can replay it once fixed.
            log.exception("%s %s: unexpected error", self.name, args)
            raise self.dead_letter(f"unexpected {type(exc).__name__}: {exc}", args, kwargs) from exc
        self._log_done(args, result, started)
        return result

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
        log.info(
            "%s %s: %s in %.1f ms",
            self.name,
            fields["file"] or args,
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
        log.warning("%s %s: transient error, retry %d in %.1fs: %s", self.name, args, retries + 1, delay, exc)
        return self.retry(exc=exc, countdown=delay, max_retries=policy.max_retries)  # type: ignore[no-any-return]

    def dead_letter(self, reason: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Reject:
        """Keep the reason in PostgreSQL, then reject without requeue: RabbitMQ moves it to <queue>.dead."""
        log.error("%s %s: dead-lettered: %s", self.name, args, reason)
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
            log.exception("could not record the reason of dead letter %s", self.request.id)
        return Reject(reason, requeue=False)
