"""Dead letters on PostgreSQL: why each message was given up, kept beside the broker's copy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.services.ports import DeadLetterReason


class PgDeadLetters:
    def __init__(self, db: Database):
        self.db = db

    def record(
        self, task_id: str, task_name: str, queue: str, args: Any, kwargs: Any, reason: str, retailer_id: str | None
    ) -> None:
        """Keep why a message was dead-lettered (the broker only says 'rejected')."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO dead_letters (task_id, task_name, queue, args, kwargs, reason, retailer_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (task_id) DO UPDATE SET reason = EXCLUDED.reason,"
                " created_at = now(), replayed_at = NULL",
                (task_id, task_name, queue, Jsonb(list(args)), Jsonb(dict(kwargs)), reason, retailer_id),
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
