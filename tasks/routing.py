"""Downstream of ingest: brokering for ship-to-home lines, inventory for in-store sales and variance files."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from worker.app.runtime import runtime
from worker.app.taskbase import TlogTask
from worker.celery import app
from worker.core.errors import FileFailed, NotFound, TransientError
from worker.core.routing import BROKERING, INVENTORY
from worker.core.routing import broker_order as broker_order_core
from worker.services.feeds import variance_feed
from worker.services.ingest import MoveBackoff, decide_variance, ingest_file
from worker.services.ports import FAILED
from worker.services.routing import run_brokering as run_brokering_core
from worker.services.routing import run_inventory as run_inventory_core


@app.task(
    base=TlogTask,
    bind=True,
    name="tlogsync.broker_order",
    retry_policy_name="routing_retry",
    soft_time_limit=60,
    time_limit=90,
)
def broker_order(self: TlogTask, retailer_id: str, order_id: int, parked: bool = False) -> dict[str, Any]:
    """Allocate an order's ship-to-home lines waiting in _NA_ (and UNFILLABLE_PARKING when parked)."""
    retailer = runtime.retailer(retailer_id)
    run_id = self.request.id or f"run-{uuid.uuid4()}"
    runtime.inventory().start_followup(retailer_id, order_id, BROKERING, runtime.settings.max_attempts)
    with (
        forgiven_on_transient(order_id, BROKERING),
        runtime.inventory().brokering_unit(retailer_id, order_id, parked) as unit,
    ):
        plan = broker_order_core(unit, retailer.brokering.routings, run_id)
    if plan is None:
        note = "nothing waiting, or no routing matched (tlogsync order show says which)"
        return {"retailer": retailer_id, "order_id": order_id, "allocated": 0, "note": note}
    return {
        "retailer": retailer_id,
        "order_id": order_id,
        "allocated": [(a.item_seq, a.facility_id, a.rule) for a in plan.allocations],
        "unfillable": [(u.item_seq, u.reason) for u in plan.unfillable],
    }


@app.task(
    base=TlogTask,
    bind=True,
    name="tlogsync.run_brokering",
    retry_policy_name="routing_retry",
    soft_time_limit=120,
    time_limit=180,
)
def run_brokering(self: TlogTask, retailer_id: str, scheduled: bool = False, parked: bool = True) -> dict[str, Any]:
    """A brokering run: every send-sale order of the retailer waiting in the brokering queue, in batches, by its
    routings; scheduled (beat, `tlogsync broker`) also takes the parked and queued orders again."""
    retailer = runtime.retailer(retailer_id)
    run_id = self.request.id or f"run-{uuid.uuid4()}"
    inventory = runtime.inventory()
    result = run_brokering_core(
        runtime.routing(),
        lambda order_ids, queues: inventory.brokering_batch(retailer_id, order_ids, queues),
        retailer.brokering.routings,
        retailer_id,
        run_id,
        runtime.settings.max_attempts,
        scheduled=scheduled,
        parked=parked,
    )
    if result.busy and scheduled:
        # a scheduled run found another run going: it is tried again a little later, still as a scheduled run,
        # so that the parked orders are taken again all the same
        run_brokering.apply_async((retailer_id,), {"scheduled": True, "parked": parked}, countdown=5)
    elif result.more:
        # work left at the time budget, or an order asked for a run while this one held the lock: the next run
        # (a busy run ends here: the run holding the lock asks for the next one when it is done)
        publish_runs(retailer_id, [BROKERING])
    return {"retailer": retailer_id, "run": run_id, "busy": result.busy, "result": result.summary()}


@app.task(
    base=TlogTask,
    bind=True,
    name="tlogsync.run_inventory",
    retry_policy_name="routing_retry",
    soft_time_limit=120,
    time_limit=180,
)
def run_inventory(self: TlogTask, retailer_id: str) -> dict[str, Any]:
    """An inventory run: every pending in-store sale of the retailer lowers its store's stock, once."""
    runtime.retailer(retailer_id)
    result = run_inventory_core(runtime.routing(), retailer_id, runtime.settings.max_attempts)
    if result.more:
        publish_runs(retailer_id, [INVENTORY])  # as in run_brokering
    for note in result.notes:
        # a sale of stock the store did not have: recorded as negative stock, surfaced for ops
        log.warning("%s", note, extra={"retailer": retailer_id})
    return {"retailer": retailer_id, "busy": result.busy, "result": result.summary()}


@app.task(
    base=TlogTask,
    bind=True,
    name="tlogsync.apply_sale_to_inventory",
    retry_policy_name="routing_retry",
    soft_time_limit=60,
    time_limit=90,
)
def apply_sale_to_inventory(self: TlogTask, retailer_id: str, order_id: int) -> dict[str, Any]:
    """Lower the selling store's inventory for an in-store sale, once, one POS_SALE variance per line."""
    runtime.retailer(retailer_id)
    runtime.inventory().start_followup(retailer_id, order_id, INVENTORY, runtime.settings.max_attempts)
    with forgiven_on_transient(order_id, INVENTORY):
        applied, notes = runtime.inventory().apply_sale(retailer_id, order_id)
    for note in notes:
        # a sale of stock the store did not have: recorded as negative stock, surfaced for ops
        log.warning("order %s: %s", order_id, note, extra={"retailer": retailer_id, "order_id": order_id})
    return {"retailer": retailer_id, "order_id": order_id, "variances": applied, "notes": notes}


@app.task(base=TlogTask, bind=True, name="tlogsync.apply_variance_file", soft_time_limit=120, time_limit=180)
def apply_variance_file(self: TlogTask, retailer_id: str, file_id: int, file_name: str | None = None) -> dict[str, Any]:
    """One inventory variance file (CSV or JSON array), applied in one transaction, once."""
    retailer = runtime.retailer(retailer_id)
    feed = variance_feed(retailer)
    if feed is None:
        raise NotFound(f"retailer {retailer_id!r} has no variance feed configured")
    with forgiven_on_transient(file_id), runtime.sftp(retailer) as source:
        result = ingest_file(
            file_id,
            feed,
            source,
            runtime.ledger(),
            runtime.settings.max_file_bytes,
            lambda data: decide_variance(data, retailer),
            runtime.settings.max_attempts,
            move_backoff(),
            retailer_id=retailer_id,
        )
    if result.status == FAILED:  # as a failed TLog file: FAILURE in Flower, no retry, no dead letter
        raise FileFailed(f"{retailer_id}/{result.file_name}: {result.error}")
    return {
        "retailer": retailer_id,
        "file": result.file_name,
        "status": result.status,
        "applied": result.records_applied,
        "rejected": result.records_rejected,
        "error": result.error,
        "move_error": result.move_error,
    }


def move_backoff() -> MoveBackoff:
    """A failed move is tried again on the ingest retry policy's curve (TLOGSYNC_INGEST_RETRY_BASE, _CAP)."""
    policy = runtime.settings.ingest_retry
    return MoveBackoff(policy.base_seconds, policy.cap_seconds)


@contextmanager
def forgiven_on_transient(key: int, followup: str | None = None) -> Iterator[None]:
    """A transient error (retried with backoff) does not count as an attempt toward the poison bound;
    only starts that never finish do. Best effort: if the database is what failed, the count stays."""
    try:
        yield
    except TransientError:
        try:
            if followup is None:
                runtime.ledger().forgive_attempt(key)
            else:
                runtime.inventory().forgive_followup(key, followup)
        except TransientError:
            pass
        raise


log = logging.getLogger("tlogsync.inventory")

RUN_TASKS = {BROKERING: run_brokering, INVENTORY: run_inventory}


def publish_runs(retailer_id: str, kinds: Sequence[str]) -> None:
    """Start the routing runs of these kinds for the retailer; the outbox keeps what they owe, and the scan asks
    again for a run whose message was lost."""
    if not kinds:
        return
    # The run starts a moment later: orders stored meanwhile find its trigger pending and join it, so a burst is
    # a few runs, not one per order.
    delay = max(runtime.settings.routing_delay_seconds, 0.2)
    with app.producer_or_acquire() as producer:
        for kind in kinds:
            RUN_TASKS[kind].apply_async((retailer_id,), producer=producer, countdown=delay)
