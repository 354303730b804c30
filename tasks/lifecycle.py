"""The order's life after the sale as Celery tasks (docs/order-lifecycle.md): the fulfilment feed's files, and
ship / reject / cancel of one order (or one line) an operator can start from Flower or `tlogsync order`."""

from __future__ import annotations

from typing import Any

from tasks.routing import forgiven_on_transient, move_backoff, publish_runs
from worker.adapters.postgres.lifecycle import PgOrderActions
from worker.app.runtime import runtime
from worker.app.taskbase import TlogTask
from worker.celery import app
from worker.core.errors import NotFound
from worker.core.lifecycle import CANCELLED, REJECTED, SHIPPED, ActionRefused
from worker.services.feeds import fulfillment_feed
from worker.services.ingest import decide_fulfillment, move_file, record_file


@app.task(base=TlogTask, bind=True, name="tlogsync.apply_fulfillment_file", soft_time_limit=120, time_limit=180)
def apply_fulfillment_file(
    self: TlogTask, retailer_id: str, file_id: int, file_name: str | None = None
) -> dict[str, Any]:
    """One fulfilment file (SHIPPED / REJECTED records, CSV or JSON), applied in one transaction, once; a line
    rejected back to the brokering queue starts a brokering run."""
    retailer = runtime.retailer(retailer_id)
    feed = fulfillment_feed(retailer)
    if feed is None:
        raise NotFound(f"retailer {retailer_id!r} has no fulfilment feed configured")
    with forgiven_on_transient(file_id), runtime.sftp(retailer) as source:
        committed = record_file(
            file_id,
            feed,
            source,
            runtime.ledger(),
            runtime.settings.max_file_bytes,
            decide_fulfillment,
            runtime.settings.max_attempts,
            retailer_id=retailer_id,
        )
        if committed.result.runs:
            publish_runs(retailer_id, committed.result.runs)
        result = move_file(committed, feed, source, runtime.ledger(), move_backoff())
    return {
        "retailer": retailer_id,
        "file": result.file_name,
        "status": result.status,
        "applied": result.records_applied,
        "rejected": result.records_rejected,
        "error": result.error,
        "move_error": result.move_error,
    }


def order_action(retailer_id: str, action: str, order_id: str, item: int | None, reason: str | None) -> dict[str, Any]:
    """One action in one transaction; an action that cannot be done is an answer, not a dead letter."""
    runtime.retailer(retailer_id)
    try:
        done = PgOrderActions(runtime.database()).act(retailer_id, action, order_id, item, reason=reason)
    except (ActionRefused, NotFound) as exc:
        return {"retailer": retailer_id, "order": order_id, "error": str(exc)}
    if action == REJECTED and done.changed:
        publish_runs(retailer_id, ["brokering"])  # the line is back in the queue: the next run places it
    return {
        "retailer": retailer_id,
        "order": order_id,
        "changed": list(done.changed),
        "already": list(done.already),
        "order_status": done.order_status,
    }


@app.task(base=TlogTask, bind=True, name="tlogsync.ops.ship_order")
def ship_order(self: TlogTask, retailer_id: str, order_id: str, item: int | None = None) -> dict[str, Any]:
    """The facility shipped the order (or its line `item`): on hand and reserved drop, the item completes."""
    return order_action(retailer_id, SHIPPED, order_id, item, None)


@app.task(base=TlogTask, bind=True, name="tlogsync.ops.reject_order")
def reject_order(
    self: TlogTask, retailer_id: str, order_id: str, item: int | None = None, reason: str | None = None
) -> dict[str, Any]:
    """The facility cannot fill it: reservation released, back to brokering with that facility excluded."""
    return order_action(retailer_id, REJECTED, order_id, item, reason)


@app.task(base=TlogTask, bind=True, name="tlogsync.ops.cancel_order")
def cancel_order(self: TlogTask, retailer_id: str, order_id: str, item: int | None = None) -> dict[str, Any]:
    """Cancel the order (or its line `item`): what was reserved is released; a sold in-store line gives its
    stock back once."""
    return order_action(retailer_id, CANCELLED, order_id, item, None)
