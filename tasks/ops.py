"""Operator tasks, callable from Flower's API (POST /api/task/async-apply/<name>), on queue tlog.ops."""

from __future__ import annotations

from typing import Any

from tasks.ingest import ingest_tlog
from tasks.routing import apply_variance_file
from worker.adapters.rabbitmq import list_dead, replay
from worker.app.runtime import runtime
from worker.app.taskbase import TlogTask
from worker.celery import app
from worker.services.feeds import FULFILLMENT_FEED, ORDERS_FEED, fulfillment_feed, orders_feed, variance_feed
from worker.services.replay import ReplayRefused, replay_file


@app.task(base=TlogTask, bind=True, name="tlogsync.ops.list_dead_letters")
def list_dead_letters(self: TlogTask, queue: str | None = None) -> list[dict[str, Any]]:
    """The dead letters of one work queue (or all), with task, arguments, reason and when they died."""
    letters = list_dead(app, [queue] if queue else None, runtime.dead_letters().reasons)
    return [{**d.__dict__, "died_at": d.died_at.isoformat() if d.died_at else None} for d in letters]


@app.task(base=TlogTask, bind=True, name="tlogsync.ops.replay_dead_letters")
def replay_dead_letters(
    self: TlogTask, queue: str | None = None, task_id: str | None = None, all: bool = False
) -> dict[str, Any]:  # noqa: A002 - mirrors the CLI's --all
    """Put dead letters back on their work queue: one by task id, or all of a queue (or of every queue)."""
    if not task_id and not all:
        return {"error": "name a task_id, or pass all=true", "replayed": []}
    replayed = replay(app, [queue] if queue else None, [task_id] if task_id else None)
    runtime.dead_letters().mark_replayed(replayed)
    return {"replayed": replayed}


@app.task(base=TlogTask, bind=True, name="tlogsync.ops.replay_file")
def replay_file_task(self: TlogTask, retailer_id: str, file_name: str, feed: str = ORDERS_FEED) -> dict[str, Any]:
    """Reprocess a file someone fixed in error_dir, through the normal ingest path."""
    retailer = runtime.retailer(retailer_id)
    chosen = (
        orders_feed(retailer)
        if feed == ORDERS_FEED
        else fulfillment_feed(retailer)
        if feed == FULFILLMENT_FEED
        else variance_feed(retailer)
    )
    if chosen is None:
        return {"error": f"retailer {retailer_id!r} has no {feed} feed"}
    try:
        with runtime.sftp(retailer) as source:
            row = replay_file(retailer_id, chosen, file_name, source, runtime.ledger())
    except ReplayRefused as exc:
        # an operator's request that cannot be done is an answer, not a dead letter
        return {"error": str(exc)}
    task = ingest_tlog if feed == ORDERS_FEED else apply_variance_file
    if feed == FULFILLMENT_FEED:
        from tasks.lifecycle import apply_fulfillment_file

        task = apply_fulfillment_file
    task.apply_async((retailer_id, row.id, row.file_name))
    return {"retailer": retailer_id, "file": file_name, "ledger_id": row.id}
