"""What operators act on from tlogsync's pages in Flower, on PostgreSQL: the tasks that failed without a dead
letter (kept with their arguments, so a retry re-sends them as they were), the files that failed or are stuck,
and the record of every action taken (who, when, what, what came of it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.deadletters import _kept, _storable
from worker.adapters.postgres.pool import Database, transient_db_errors

FILE_FAILED = "file_failed"  # an ingest (or variance file) whose file failed: bad input, recorded, moved to error
GAVE_UP = "gave_up"  # a task that ran out of retries and is redone by its schedule (a scan): no dead letter


@dataclass(frozen=True)
class TaskFailure:
    task_id: str
    task_name: str
    queue: str
    kind: str
    args: Any
    kwargs: Any
    reason: str
    retailer_id: str | None
    file_id: int | None
    created_at: datetime
    retried_at: datetime | None
    retried_by: str | None
    retried_as: str | None


@dataclass(frozen=True)
class Action:
    id: int
    at: datetime
    actor: str
    action: str
    target: Any
    ok: bool | None
    result: str | None
    finished_at: datetime | None
    remote_addr: str | None


@dataclass(frozen=True)
class ProblemFile:
    """A file ops must look at: failed (in error_dir, waiting for a fix and a replay) or stuck (claimed and not
    final for long, or final and not moved out of the inbound folder)."""

    id: int
    retailer_id: str
    feed: str
    file_name: str
    status: str
    problem: str  # failed, in flight too long, not moved
    reason: str | None
    attempts: int
    since: datetime | None
    moved_to: str | None
    move_error: str | None


@dataclass(frozen=True)
class GivenUp:
    retailer_id: str
    task_name: str
    count: int


FAILURE_COLUMNS = (
    "task_id, task_name, queue, kind, args, kwargs, reason, retailer_id, file_id, created_at, retried_at,"
    " retried_by, retried_as"
)
ACTION_COLUMNS = "id, at, actor, action, target, ok, result, finished_at, remote_addr"

PROBLEM_FILES = """
SELECT id, retailer_id, feed, file_name, status, problem, reason, attempts, since, moved_to, move_error FROM (
  SELECT id, retailer_id, feed, file_name, status,
         CASE WHEN status = 'failed' AND moved_at IS NOT NULL THEN 'failed'
              WHEN status = 'claimed' THEN 'in flight too long'
              ELSE 'not moved' END AS problem,
         error AS reason, attempts,
         CASE WHEN status = 'claimed' THEN claimed_at ELSE finished_at END AS since,
         moved_to, move_error
  FROM tlog_files
  WHERE replayed_by IS NULL
    AND (%(retailer)s::text IS NULL OR retailer_id = %(retailer)s::text)
    AND ((status = 'failed' AND moved_at IS NOT NULL)
         OR (status = 'claimed' AND claimed_at < now() - make_interval(secs => %(stuck)s))
         OR (status <> 'claimed' AND moved_at IS NULL AND finished_at < now() - make_interval(secs => %(stuck)s)))
) p
ORDER BY retailer_id, since DESC NULLS LAST, id DESC
LIMIT %(limit)s
"""


class PgOperations:
    def __init__(self, db: Database):
        self.db = db

    # -- tasks that failed without a dead letter
    def record_failure(
        self,
        task_id: str,
        task_name: str,
        queue: str,
        kind: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        reason: str,
        retailer_id: str | None,
        file_id: int | None,
    ) -> None:
        """Keep a FAILURE's arguments (bounded as dead letters' are) so Retry re-sends the task as it was."""
        kept_args = [_kept(a) for a in args]
        kept_kwargs = {_storable(str(k), 100): _kept(v) for k, v in dict(kwargs).items()}
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO task_failures (task_id, task_name, queue, kind, args, kwargs, reason, retailer_id,"
                " file_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (task_id) DO UPDATE SET"
                " reason = EXCLUDED.reason, kind = EXCLUDED.kind, created_at = now()",
                (
                    task_id,
                    task_name,
                    queue,
                    kind,
                    Jsonb(kept_args),
                    Jsonb(kept_kwargs),
                    _storable(reason, 2000),
                    retailer_id if retailer_id is not None and len(retailer_id) <= 200 else None,
                    file_id,
                ),
            )

    def failure(self, task_id: str) -> TaskFailure | None:
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(TaskFailure)) as cur,
        ):
            cur.execute("SELECT " + FAILURE_COLUMNS + " FROM task_failures WHERE task_id = %s", (task_id,))
            return cur.fetchone()

    def failure_of_file(self, file_id: int) -> TaskFailure | None:
        """The latest failed task of a file, if one was recorded."""
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(TaskFailure)) as cur,
        ):
            cur.execute(
                "SELECT " + FAILURE_COLUMNS + " FROM task_failures WHERE file_id = %s ORDER BY created_at DESC LIMIT 1",
                (file_id,),
            )
            return cur.fetchone()

    def mark_retried(self, task_id: str, by: str, retried_as: str) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE task_failures SET retried_at = now(), retried_by = %s, retried_as = %s WHERE task_id = %s",
                (_storable(by, 200), retried_as, task_id),
            )

    def given_up(self) -> list[GivenUp]:
        """Tasks that ran out of retries and were left to their schedule, ever, per retailer and task."""
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(GivenUp)) as cur,
        ):
            cur.execute(
                "SELECT coalesce(retailer_id, '') AS retailer_id, task_name, count(*) AS count FROM task_failures"
                " WHERE kind = %s GROUP BY 1, 2 ORDER BY 1, 2",
                (GAVE_UP,),
            )
            return list(cur)

    # -- files
    def problem_files(self, retailer_id: str | None, stuck_after_seconds: float, limit: int = 500) -> list[ProblemFile]:
        """Failed files not replayed yet, and files stuck longer than stuck_after_seconds, newest first."""
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(ProblemFile)) as cur,
        ):
            cur.execute(PROBLEM_FILES, {"retailer": retailer_id, "stuck": stuck_after_seconds, "limit": limit})
            return list(cur)

    def file(self, file_id: int) -> ProblemFile | None:
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(ProblemFile)) as cur,
        ):
            cur.execute(
                "SELECT id, retailer_id, feed, file_name, status, status AS problem, error AS reason, attempts,"
                " coalesce(finished_at, claimed_at) AS since, moved_to, move_error FROM tlog_files WHERE id = %s",
                (file_id,),
            )
            return cur.fetchone()

    # -- the actions operators took
    def start_action(self, actor: str, action: str, target: dict[str, Any], remote_addr: str | None) -> int:
        """Record an action before doing it (so one that crashes midway is still on record); its id."""
        with transient_db_errors(), self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO operator_actions (actor, action, target, remote_addr) VALUES (%s, %s, %s, %s)"
                " RETURNING id",
                (_storable(actor, 200), action, Jsonb({k: _kept(v) for k, v in target.items()}), remote_addr),
            ).fetchone()
            assert row is not None
            return int(row[0])

    def finish_action(self, action_id: int, ok: bool | None, result: str) -> None:
        """What came of an action; ok None: handed to a worker, which finishes the record when done."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE operator_actions SET ok = %s, result = %s,"
                " finished_at = CASE WHEN %s::boolean IS NULL THEN NULL ELSE now() END WHERE id = %s",
                (ok, _storable(result, 2000), ok, action_id),
            )

    def action(self, action_id: int) -> Action | None:
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(Action)) as cur,
        ):
            cur.execute("SELECT " + ACTION_COLUMNS + " FROM operator_actions WHERE id = %s", (action_id,))
            return cur.fetchone()

    def actions(self, limit: int = 100) -> list[Action]:
        with (
            transient_db_errors(),
            self.db.connection() as conn,
            conn.cursor(row_factory=class_row(Action)) as cur,
        ):
            cur.execute("SELECT " + ACTION_COLUMNS + " FROM operator_actions ORDER BY id DESC LIMIT %s", (limit,))
            return list(cur)
