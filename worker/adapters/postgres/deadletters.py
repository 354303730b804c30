"""Dead letters on PostgreSQL: why each message was given up, kept beside the broker's copy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.pool import Database, storable, transient_db_errors
from worker.core.errors import bounded
from worker.services.ports import DeadLetterReason

ARG_LIMIT = 1000  # characters of JSON kept of one argument; a forged 2 MB one is kept as a cut repr


def _storable(text: str, limit: int) -> str:
    """Text PostgreSQL takes (no NUL, no lone surrogate), at most about limit characters."""
    return storable(bounded(text, limit))


def _kept(value: Any) -> Any:
    """A task argument as dead_letters keeps it: itself when it is small JSON that jsonb takes, else its repr,
    cut to ARG_LIMIT with a marker (a string, so the column stays valid JSON)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")  # a lone surrogate cannot be stored
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None and len(text) <= ARG_LIMIT and "\\u0000" not in text:
        return value
    return _storable(repr(value), ARG_LIMIT)


class PgDeadLetters:
    def __init__(self, db: Database):
        self.db = db

    def record(
        self, task_id: str, task_name: str, queue: str, args: Any, kwargs: Any, reason: str, retailer_id: str | None
    ) -> None:
        """Keep why a message was dead-lettered (the broker only says 'rejected'). Arguments, reason and retailer
        are kept bounded: a forged message with a 2 MB argument leaves a row of a few KB."""
        kept_args = [_kept(a) for a in args]
        kept_kwargs = {_storable(str(k), 100): _kept(v) for k, v in dict(kwargs).items()}
        if len(json.dumps([kept_args, kept_kwargs], ensure_ascii=False)) > 4 * ARG_LIMIT:  # many arguments
            kept_args, kept_kwargs = [_storable(repr(tuple(args)), 2 * ARG_LIMIT)], {}
        reason = _storable(reason, 2 * ARG_LIMIT)
        retailer_id = retailer_id if retailer_id is not None and len(retailer_id) <= 200 else None
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO dead_letters (task_id, task_name, queue, args, kwargs, reason, retailer_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (task_id) DO UPDATE SET reason = EXCLUDED.reason,"
                " created_at = now(), replayed_at = NULL, resolved_at = NULL, resolution = NULL, purged_at = NULL,"
                " purged_by = NULL",
                (task_id, task_name, queue, Jsonb(kept_args), Jsonb(kept_kwargs), reason, retailer_id),
            )

    def reasons(self, task_ids: Sequence[str]) -> dict[str, DeadLetterReason]:
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(DeadLetterReason)) as cur,
        ):
            cur.execute(
                "SELECT task_id, reason, created_at FROM dead_letters WHERE task_id = ANY(%s)", (list(task_ids),)
            )
            return {row.task_id: row for row in cur}

    def mark_replayed(self, task_ids: Sequence[str], by: str | None = None, replayed_as: str | None = None) -> None:
        """Sent again (by an operator, named when known): no longer dead, not resolved until its work succeeds."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE dead_letters SET replayed_at = now(), replayed_by = %s, replayed_as = %s"
                " WHERE task_id = ANY(%s)",
                (by, replayed_as, list(task_ids)),
            )

    def mark_purged(self, task_ids: Sequence[str], by: str) -> int:
        """Removed from its dead-letter queue by an operator: kept here, marked, never counted as dead again."""
        with transient_db_errors(), self.db.connection() as conn:
            cur = conn.execute(
                "UPDATE dead_letters SET purged_at = now(), purged_by = %s WHERE task_id = ANY(%s)",
                (_storable(by, 200), list(task_ids)),
            )
            return cur.rowcount

    def mark_resolved(self, task_id: str, resolution: str) -> bool:
        """Its work succeeded (a replay of it, or a retry sent in its place); True if it was open."""
        with transient_db_errors(), self.db.connection() as conn:
            cur = conn.execute(
                "UPDATE dead_letters SET resolved_at = now(), resolution = %s WHERE task_id = %s"
                " AND resolved_at IS NULL",
                (_storable(resolution, 500), task_id),
            )
            return cur.rowcount > 0

    def resolve_done(self, retailer_id: str | None = None) -> int:
        """Mark resolved the open dead letters whose work has since been done by another path (a later delivery,
        a redispatch, a later scan or run); the number marked. One statement, by the rules of RESOLVE_DONE."""
        with transient_db_errors(), self.db.connection() as conn:
            cur = conn.execute(RESOLVE_DONE, {"retailer": retailer_id})
            return cur.rowcount

    def letters(self, task_ids: Sequence[str]) -> dict[str, DeadLetterRow]:
        """The rows of these task ids, as kept (arguments, reason, state)."""
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(DeadLetterRow)) as cur,
        ):
            cur.execute(f"SELECT {ROW_COLUMNS} FROM dead_letters WHERE task_id = ANY(%s)", (list(task_ids),))
            return {row.task_id: row for row in cur}

    def open_by_queue(self) -> list[tuple[str, int]]:
        """Dead letters still dead (not replayed, resolved or purged), per queue: what alerts count."""
        with transient_db_errors(), self.db.connection() as conn:
            return [
                (str(queue), int(count))
                for queue, count in conn.execute(
                    "SELECT queue, count(*) FROM dead_letters WHERE resolved_at IS NULL AND purged_at IS NULL"
                    " AND replayed_at IS NULL GROUP BY queue ORDER BY queue"
                )
            ]

    def history(self, limit: int = 50) -> list[DeadLetterRow]:
        """The latest dead letters that are no longer dead (replayed, resolved or purged), newest first."""
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(DeadLetterRow)) as cur,
        ):
            cur.execute(
                f"SELECT {ROW_COLUMNS} FROM dead_letters WHERE resolved_at IS NOT NULL OR purged_at IS NOT NULL"
                " OR replayed_at IS NOT NULL ORDER BY greatest(resolved_at, purged_at, replayed_at) DESC LIMIT %s",
                (limit,),
            )
            return list(cur)


@dataclass(frozen=True)
class DeadLetterRow:
    task_id: str
    task_name: str
    queue: str
    args: Any
    kwargs: Any
    reason: str
    retailer_id: str | None
    created_at: datetime
    replayed_at: datetime | None
    replayed_by: str | None
    replayed_as: str | None
    resolved_at: datetime | None
    resolution: str | None
    purged_at: datetime | None
    purged_by: str | None

    @property
    def state(self) -> str:
        if self.purged_at:
            return "purged"
        if self.resolved_at:
            return "resolved"
        if self.replayed_at:
            return "replayed"
        return "dead"


ROW_COLUMNS = (
    "task_id, task_name, queue, args, kwargs, reason, retailer_id, created_at, replayed_at, replayed_by, replayed_as,"
    " resolved_at, resolution, purged_at, purged_by"
)

# When is a dead letter's work done by another path? Per task, on the ids in its arguments (kept as JSON; a
# forged argument that is not an id simply never matches):
# - a file task (ingest, variance file): the file (or a later row of the same name: a replay) is final and not
#   failed, or it failed after the dead letter (then the failed file is what ops see and replay);
# - a follow-up (one order's brokering or inventory): that follow-up is done;
# - a routing run: no follow-up of its kind that was pending when it died is pending still;
# - a scan: a later scan of the retailer ran without error;
# - an audit: a later report of the retailer was written.
RESOLVE_DONE = """
UPDATE dead_letters d SET resolved_at = now(), resolution = w.why
FROM (
  SELECT x.task_id,
    CASE
      WHEN x.task_name IN ('tlogsync.ingest_tlog', 'tlogsync.apply_variance_file') AND x.id IS NOT NULL
       AND EXISTS (SELECT 1 FROM tlog_files f JOIN tlog_files g ON g.retailer_id = f.retailer_id AND g.feed = f.feed
                   AND g.file_name = f.file_name AND g.id >= f.id
                   WHERE f.id = x.id AND f.retailer_id = x.retailer_id
                     AND (g.status NOT IN ('claimed', 'failed')
                          OR (g.status = 'failed' AND g.finished_at > x.created_at)))
        THEN 'the file was finished later (ledger row ' || x.id || ')'
      WHEN x.task_name IN ('tlogsync.broker_order', 'tlogsync.apply_sale_to_inventory') AND x.id IS NOT NULL
       AND EXISTS (SELECT 1 FROM order_followups o WHERE o.order_id = x.id AND o.retailer_id = x.retailer_id
                   AND o.status = 'done'
                   AND o.kind = CASE x.task_name WHEN 'tlogsync.broker_order' THEN 'brokering' ELSE 'inventory' END)
        THEN 'the order''s follow-up was done later (order ' || x.id || ')'
      WHEN x.task_name IN ('tlogsync.run_brokering', 'tlogsync.run_inventory')
       AND NOT EXISTS (SELECT 1 FROM order_followups o WHERE o.retailer_id = x.retailer_id AND o.status = 'pending'
                       AND o.created_at <= x.created_at
                       AND o.kind = CASE x.task_name WHEN 'tlogsync.run_brokering' THEN 'brokering'
                                    ELSE 'inventory' END)
        THEN 'every follow-up pending when it died is done'
      WHEN x.task_name = 'tlogsync.scan_retailer'
       AND EXISTS (SELECT 1 FROM scan_runs s WHERE s.retailer_id = x.retailer_id AND s.error IS NULL
                   AND s.finished_at > x.created_at)
        THEN 'a later scan of the retailer succeeded'
      WHEN x.task_name = 'tlogsync.ops.audit_retailer'
       AND EXISTS (SELECT 1 FROM audit_reports a WHERE a.retailer_id = x.retailer_id AND a.created_at > x.created_at)
        THEN 'a later audit of the retailer was written'
    END AS why
  FROM (
    SELECT task_id, task_name, retailer_id, created_at,
           CASE WHEN jsonb_typeof(args -> 1) = 'number' AND (args ->> 1) ~ '^[0-9]{1,18}$'
                THEN (args ->> 1)::bigint END AS id
    FROM dead_letters
    WHERE resolved_at IS NULL AND purged_at IS NULL AND retailer_id IS NOT NULL
      AND (%(retailer)s::text IS NULL OR retailer_id = %(retailer)s::text)
  ) x
) w
WHERE d.task_id = w.task_id AND w.why IS NOT NULL
"""
