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

from worker.adapters.sftp import HostKeyRejected, SftpConfigError
from worker.core.ports import NotFound, TransientError
from worker.runtime import UnknownRetailer, runtime
from worker.settings import RetryPolicy

log = logging.getLogger("tlogsync.tasks")

PERMANENT_ERRORS: tuple[type[Exception], ...] = (UnknownRetailer, NotFound, SftpConfigError, HostKeyRejected)


def backoff_seconds(policy: RetryPolicy, retries: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retries)], never below one second."""
    ceiling = min(policy.cap_seconds, policy.base_seconds * (2 ** retries))
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
            result = self.run(*args, **kwargs)
        except Retry:
            raise
        except TransientError as exc:
            policy = self.retry_policy
            retries = self.request.retries or 0
            if retries >= policy.max_retries:
                log.error("%s %s: giving up after %d retries: %s", self.name, args, retries, exc)
                raise Reject(f"retries exhausted: {exc}", requeue=False) from exc
            delay = backoff_seconds(policy, retries)
            log.warning("%s %s: transient error, retry %d in %.1fs: %s", self.name, args, retries + 1, delay, exc)
            raise self.retry(exc=exc, countdown=delay, max_retries=policy.max_retries) from exc
        except PERMANENT_ERRORS as exc:
            log.error("%s %s: permanent error, dead-lettered: %s", self.name, args, exc)
            raise Reject(f"{type(exc).__name__}: {exc}", requeue=False) from exc
        log.info("%s %s: done in %.3fs: %s", self.name, args, time.perf_counter() - started, result)
        return result
