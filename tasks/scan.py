"""scan_retailer: list a retailer's inbound folder, claim new files, fan out one ingest per file."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tasks.ingest import ingest_tlog
from worker.celery import app
from worker.core.ingest import orders_feed, scan_feed
from worker.core.ports import TransientError
from worker.runtime import runtime
from worker.taskbase import TlogTask


@app.task(base=TlogTask, bind=True, name="tlogsync.scan_retailer", retry_policy_name="scan_retry",
          soft_time_limit=300, time_limit=360)
def scan_retailer(self: TlogTask, retailer_id: str, scan_id: str | None = None,
                  requested_by: str = "manual") -> dict[str, Any]:
    run_id = scan_id or self.request.id
    retailer = runtime.retailer(retailer_id)
    ledger = runtime.ledger()
    started = ledger.now()
    if not retailer.enabled:
        ledger.record_scan(run_id, retailer_id, requested_by, started, error="retailer is paused (enabled = false)")
        return {"retailer": retailer_id, "paused": True}
    try:
        with runtime.sftp(retailer) as source:
            result = scan_feed(retailer, orders_feed(retailer), source, ledger,
                               runtime.settings.max_in_flight_per_retailer,
                               timedelta(seconds=runtime.settings.redispatch_after_seconds))
    except Exception as exc:
        will_retry = isinstance(exc, TransientError) and self.request.retries < self.retry_policy.max_retries
        ledger.record_scan(run_id, retailer_id, requested_by, started, error=f"{type(exc).__name__}: {exc}",
                           will_retry=will_retry)
        raise
    sent = dispatch_ingest(retailer_id, result.dispatch)
    ledger.record_scan(run_id, retailer_id, requested_by, started, result)
    return {"retailer": retailer_id, "listed": result.listed, "dispatched": sent, "in_flight": len(result.watch),
            "too_young": result.too_young, "deferred": result.deferred}


def dispatch_ingest(retailer_id: str, files: list[tuple[int, str]]) -> int:
    """Publish one ingest message per file over one pooled producer (ids and names only, never contents)."""
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for file_id, file_name in files:
                ingest_tlog.apply_async((retailer_id, file_id, file_name), producer=producer)
                sent += 1
    finally:
        if sent < len(files):
            # Unsent files go back to "never dispatched", so the next scan sends them at once.
            runtime.ledger().clear_dispatched([file_id for file_id, _ in files[sent:]])
    return sent
