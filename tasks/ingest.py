"""ingest_tlog: one TLog file from the ledger to a stored order, then out of the inbound folder."""

from __future__ import annotations

from typing import Any

from tasks.routing import forgiven_on_transient, publish_runs
from worker.app.runtime import runtime
from worker.app.taskbase import TlogTask
from worker.celery import app
from worker.services.feeds import orders_feed
from worker.services.ingest import decide, ingest_file


@app.task(base=TlogTask, bind=True, name="tlogsync.ingest_tlog", soft_time_limit=120, time_limit=180)
def ingest_tlog(self: TlogTask, retailer_id: str, file_id: int, file_name: str | None = None) -> dict[str, Any]:
    """file_name rides along so Flower shows which file a task is about; the ledger row is the truth."""
    retailer = runtime.retailer(retailer_id)
    with forgiven_on_transient(file_id), runtime.sftp(retailer) as source:
        result = ingest_file(
            file_id,
            orders_feed(retailer),
            source,
            runtime.ledger(),
            runtime.settings.max_file_bytes,
            lambda data: decide(data, retailer),
            runtime.settings.max_attempts,
            retailer_id=retailer_id,
        )
    if result.runs:
        # The order is committed and no run of its kind was pending: start one (the run takes every order the
        # outbox holds for the retailer, this one included).
        publish_runs(retailer_id, result.runs)
    return {
        "retailer": retailer_id,
        "file": result.file_name,
        "status": result.status,
        "order_id": result.order_id,
        "order_type": result.order_type,
        "followups": list(result.followups),
        "error": result.error,
    }
