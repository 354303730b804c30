"""ingest_tlog: one TLog file from the ledger to a stored order, then out of the inbound folder."""

from __future__ import annotations

import logging
from typing import Any

from tasks.routing import forgiven_on_transient, move_backoff, publish_runs
from worker.app.runtime import runtime
from worker.app.taskbase import TlogTask
from worker.celery import app
from worker.core.errors import FileFailed
from worker.services.feeds import orders_feed
from worker.services.ingest import decide, move_file, record_file
from worker.services.ports import FAILED

log = logging.getLogger("tlogsync.ingest")


@app.task(base=TlogTask, bind=True, name="tlogsync.ingest_tlog", soft_time_limit=120, time_limit=180, quiet_result=True)
def ingest_tlog(self: TlogTask, retailer_id: str, file_id: int, file_name: str | None = None) -> dict[str, Any]:
    """file_name rides along so Flower shows which file a task is about; the ledger row is the truth."""
    retailer = runtime.retailer(retailer_id)
    with forgiven_on_transient(file_id), runtime.sftp(retailer) as source:
        feed = orders_feed(retailer)
        committed = record_file(
            file_id,
            feed,
            source,
            runtime.ledger(),
            runtime.settings.max_file_bytes,
            lambda data: decide(data, retailer),
            runtime.settings.max_attempts,
            retailer_id=retailer_id,
        )
        if committed.result.runs:
            # The order is committed and no run of its kind was pending: start one now, before the move, so a
            # move that fails or waits never holds routing back (the run takes every order the outbox holds
            # for the retailer, this one included).
            publish_runs(retailer_id, committed.result.runs)
        result = move_file(committed, feed, source, runtime.ledger(), move_backoff())
    if result.move_error:
        log.warning("%s: %s (tried again later)", result.file_name, result.move_error, extra={"retailer": retailer_id})
    if result.status == FAILED:
        # recorded and moved to error_dir: the task ends FAILURE with the reason (Flower's Failed filter shows
        # it), neither retried nor dead-lettered; the fix is a replay of the file
        raise FileFailed(f"{retailer_id}/{result.file_name}: {result.error}")
    return {
        "retailer": retailer_id,
        "file": result.file_name,
        "status": result.status,
        "order_id": result.order_id,
        "order_type": result.order_type,
        "followups": list(result.followups),
        "error": result.error,
        "moved_to": result.moved_to,
        "move_error": result.move_error,
    }
