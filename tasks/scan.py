"""scan_retailer: list a retailer's inbound folders, claim new files, fan out one task per file."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from tasks.ingest import ingest_tlog
from tasks.routing import apply_variance_file, publish_runs
from worker.app.runtime import runtime
from worker.app.taskbase import TlogTask
from worker.celery import app
from worker.core.errors import TransientError, bounded
from worker.services.feeds import FULFILLMENT_FEED, ORDERS_FEED, feeds
from worker.services.scan import ScanResult, scan_feeds

FILE_TASKS = {ORDERS_FEED: ingest_tlog}
log = logging.getLogger("tlogsync.scan")


def _file_task(feed: str) -> Any:
    if feed == FULFILLMENT_FEED:
        from tasks.lifecycle import apply_fulfillment_file

        return apply_fulfillment_file
    return FILE_TASKS.get(feed, apply_variance_file)


@app.task(
    base=TlogTask,
    bind=True,
    name="tlogsync.scan_retailer",
    retry_policy_name="scan_retry",
    redone_by_schedule=True,  # out of retries: no dead letter, the next scheduled scan redoes it
    soft_time_limit=300,
    time_limit=360,
)
def scan_retailer(
    self: TlogTask, retailer_id: str, scan_id: str | None = None, requested_by: str = "manual"
) -> dict[str, Any]:
    run_id = scan_id or self.request.id
    retailer = runtime.retailer(retailer_id)
    ledger = runtime.ledger()
    started = ledger.now()
    if not retailer.enabled:
        ledger.record_scan(run_id, retailer_id, requested_by, started, error="retailer is paused (enabled = false)")
        return {"retailer": retailer_id, "paused": True}
    settings = runtime.settings
    # The outbox sweep first: follow-ups of committed orders whose messages were lost go out again, even
    # when the retailer's SFTP host is down (they need only the database and the broker).
    resent = runtime.routing().stale_runs(retailer_id, settings.routing_sweep_after_seconds)
    publish_runs(retailer_id, resent)
    total: ScanResult | None = None
    try:
        with runtime.sftp(retailer) as source:
            total = scan_feeds(
                retailer,
                feeds(retailer),
                source,
                ledger,
                settings.max_in_flight_per_retailer,
                timedelta(seconds=settings.redispatch_after_seconds),
                lambda feed, files: publish_files(retailer_id, feed, files),
            )
    except Exception as exc:
        will_retry = isinstance(exc, TransientError) and self.request.retries < self.retry_policy.max_retries
        ledger.record_scan(
            run_id,
            retailer_id,
            requested_by,
            started,
            total,
            error=f"{type(exc).__name__}: {exc}",
            will_retry=will_retry,
        )
        raise
    ledger.record_scan(run_id, retailer_id, requested_by, started, total)
    # dead letters of this retailer whose work has since been done another way are marked resolved (best
    # effort: the scan's own work is done; the next scan or the Dead letters page marks them otherwise)
    try:
        runtime.dead_letters().resolve_done(retailer_id)
    except TransientError as exc:
        log.warning("%s: dead letters not swept: %s", retailer_id, exc, extra={"retailer": retailer_id})
    if total.busy:
        # another scan of this retailer holds its lock: it does this one's work, this one gives up at once
        return {"retailer": retailer_id, "busy": True, "note": total.note, "followups_resent": len(resent)}
    return {
        "retailer": retailer_id,
        "listed": total.listed,
        "dispatched": len(total.dispatch),
        "in_flight": len(total.watch),
        "too_young": total.too_young,
        "ignored": total.ignored,
        "deferred": total.deferred,
        "followups_resent": len(resent),
    }


def publish_files(retailer_id: str, feed: str, files: Sequence[tuple[int, str]]) -> Iterator[int]:
    """Publish one message per file over one pooled producer (ids and names only, never contents),
    yielding each ledger id once its message is out."""
    task = _file_task(feed)
    with app.producer_or_acquire() as producer:
        for file_id, file_name in files:
            args = (retailer_id, file_id, file_name)
            # argsrepr (what Flower shows) as plain repr, bounded: Celery's default, saferepr, is a fifth of the
            # cost of a publish (py-spy, docs/benchmarks.md), and these three values need none of its care
            task.apply_async(args, producer=producer, argsrepr=bounded(repr(args), 1024), kwargsrepr="{}")
            yield file_id
