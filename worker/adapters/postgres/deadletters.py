"""Dead letters on PostgreSQL: why each message was given up, kept beside the broker's copy."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
                " created_at = now(), replayed_at = NULL",
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

    def mark_replayed(self, task_ids: Sequence[str]) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE task_id = ANY(%s)", (list(task_ids),))
