"""What an operator can do from tlogsync's pages in Flower (and `tlogsync dlq purge`), each action recorded.

Every action is written to `operator_actions` before it is done (who, when, what), and its result after: one that
fails midway is still on record. Dead letters are replayed and purged here, at once, through RabbitMQ; a file
replay goes to a worker as `tlogsync.ops.replay_file` (it needs the retailer's SFTP host, which Flower need not
reach), and that worker writes the action's result when it is done. A retry re-sends a failed task with the
arguments kept in PostgreSQL (`dead_letters`, `task_failures`), never with the repr Flower shows.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from worker.adapters import queues
from worker.adapters.postgres.deadletters import PgDeadLetters
from worker.adapters.postgres.operations import FILE_FAILED, GAVE_UP, PgOperations
from worker.adapters.postgres.pool import Database
from worker.adapters.rabbitmq import REPLAY_HEADER, list_dead, purge, replay
from worker.core.errors import bounded
from worker.services.feeds import ORDERS_FEED

log = logging.getLogger("tlogsync.actions")

CUT_MARKER = "characters cut]"  # what dead_letters keeps of an argument too large to keep whole

FILE_TASKS = {ORDERS_FEED: "tlogsync.ingest_tlog"}
VARIANCE_TASK = "tlogsync.apply_variance_file"
REPLAY_FILE_TASK = "tlogsync.ops.replay_file"


class Refused(ValueError):
    """The action cannot be done as asked; the message says why (and is the action's result)."""


@dataclass(frozen=True)
class Done:
    """An action's record: ok None means handed to a worker, which records how it ended."""

    action_id: int
    ok: bool | None
    result: str
    task_id: str | None = None  # a task sent, to follow in Flower


class Actions:
    def __init__(self, app: Celery, db: Database):
        self.app = app
        self.dead = PgDeadLetters(db)
        self.ops = PgOperations(db)

    def _run(
        self,
        actor: str,
        action: str,
        target: dict[str, Any],
        remote_addr: str | None,
        work: Callable[[int], tuple[bool | None, str, str | None]],
    ) -> Done:
        action_id = self.ops.start_action(actor, action, target, remote_addr)
        try:
            ok, text, task_id = work(action_id)
        except Refused as exc:
            ok, text, task_id = False, str(exc), None
        except Exception as exc:  # the failure is the action's result; the operator sees it
            log.warning("action %s %s by %s failed", action, target, actor, exc_info=True)
            ok, text, task_id = False, f"failed: {type(exc).__name__}: {bounded(str(exc), 500)}", None
        self.ops.finish_action(action_id, ok, text)
        log.info(
            "operator action %d: %s %s by %s: %s",
            action_id,
            action,
            json.dumps(target, default=str),
            actor,
            text,
            extra={"action": action, "actor": actor},
        )
        return Done(action_id, ok, text, task_id)

    # -- dead letters
    def replay_dead(self, actor: str, queue: str, task_id: str | None, remote_addr: str | None = None) -> Done:
        """Put one dead letter (task_id) or all of a queue back on its work queue, as it was."""

        def work(_: int) -> tuple[bool | None, str, str | None]:
            replayed = replay(self.app, [queue], [task_id] if task_id else None)
            self.dead.mark_replayed(replayed, by=actor)
            if task_id and not replayed:
                raise Refused(f"{task_id} is not in {queue}.dead (replayed or purged already?)")
            return True, f"replayed {len(replayed)} from {queue}.dead" + _ids(replayed), task_id

        target = {"queue": queue, "task_id": task_id} if task_id else {"queue": queue, "all": True}
        return self._run(
            actor, "replay dead letter" if task_id else "replay dead-letter queue", target, remote_addr, work
        )

    def purge_dead(
        self,
        actor: str,
        queue: str | None,
        task_ids: Sequence[str] | None,
        remote_addr: str | None = None,
        resolved_only: bool = False,
    ) -> Done:
        """Remove dead letters (these task ids, or all of a queue, all queues when None; with resolved_only, those
        whose work has been done since) from RabbitMQ; their rows in dead_letters stay, marked purged (who, when)."""

        def work(_: int) -> tuple[bool | None, str, str | None]:
            wanted = list(task_ids) if task_ids else None
            if resolved_only:
                self.dead.resolve_done()
                letters = list_dead(self.app, [queue] if queue else None, self.dead.reasons)
                rows = self.dead.letters([d.task_id for d in letters])
                resolved = [i for i, row in rows.items() if row.state == "resolved"]
                wanted = [i for i in resolved if wanted is None or i in wanted]
                if not wanted:
                    return True, "purged 0: no resolved dead letter in the queue", None
            removed = purge(self.app, [queue] if queue else None, wanted)
            self.dead.mark_purged(removed, actor)
            missing = sorted(set(task_ids or ()) - set(removed))
            if missing and not removed:
                raise Refused(f"{', '.join(missing)}: not in {queue or 'any'} dead-letter queue (replayed or purged?)")
            where = f"{queue}.dead" if queue else "every dead-letter queue"
            note = f"; not found: {', '.join(missing)}" if missing else ""
            return True, f"purged {len(removed)} from {where}" + _ids(removed) + note, None

        target: dict[str, Any] = {"queue": queue}
        target.update(
            {"task_id": task_ids[0]}
            if task_ids and len(task_ids) == 1
            else {"task_ids": list(task_ids)}
            if task_ids
            else {"all": True}
        )
        if resolved_only:
            target["resolved_only"] = True
        action = "purge dead letter" if task_ids else "purge dead-letter queue"
        return self._run(actor, action, target, remote_addr, work)

    # -- failed tasks
    def retry_task(self, actor: str, task_id: str, remote_addr: str | None = None) -> Done:
        """Re-send a failed task with the arguments PostgreSQL kept: a dead letter's (its dead copy is then
        removed from the queue), a scan's that ran out of retries; a failed file's ingest is a replay of the file."""

        def work(action_id: int) -> tuple[bool | None, str, str | None]:
            letter = self.dead.letters([task_id]).get(task_id)
            if letter is not None:
                _whole(letter.args, letter.kwargs, task_id)
                sent = self._send(letter.task_name, letter.args, letter.kwargs, task_id)
                removed = purge(self.app, [letter.queue], [task_id]) if letter.queue in queues.WORK_QUEUES else []
                self.dead.mark_replayed([task_id], by=actor, replayed_as=sent)
                note = f"; its dead copy removed from {letter.queue}.dead" if removed else ""
                return True, f"sent {letter.task_name} again as task {sent}, arguments from dead_letters{note}", sent
            failure = self.ops.failure(task_id)
            if failure is None:
                raise Refused(
                    f"task {task_id}: PostgreSQL keeps no arguments for it (neither a dead letter nor a failure"
                    " tlogsync recorded); nothing to retry from"
                )
            if failure.kind == FILE_FAILED and failure.file_id is not None:
                ok, text, replay_task = self._replay_file(failure.file_id, action_id)
                self.ops.mark_retried(task_id, actor, replay_task or "")
                return ok, text, replay_task
            if failure.kind == GAVE_UP:
                _whole(failure.args, failure.kwargs, task_id)
                sent = self._send(failure.task_name, failure.args, failure.kwargs, None)
                self.ops.mark_retried(task_id, actor, sent)
                return True, f"sent {failure.task_name} again as task {sent}, arguments from task_failures", sent
            raise Refused(f"task {task_id}: a {failure.kind} failure without a file; nothing to retry")

        return self._run(actor, "retry task", {"task_id": task_id}, remote_addr, work)

    # -- files
    def replay_file(self, actor: str, file_id: int, remote_addr: str | None = None) -> Done:
        """A failed file (fixed in error_dir, or its cause fixed) goes through ingest again, by a worker."""
        return self._run(
            actor, "replay file", {"file_id": file_id}, remote_addr, lambda aid: self._replay_file(file_id, aid)
        )

    def dispatch_file(self, actor: str, file_id: int, remote_addr: str | None = None) -> Done:
        """A file stuck in flight gets its ingest message again now (the scan would after its redispatch delay)."""

        def work(_: int) -> tuple[bool | None, str, str | None]:
            row = self.ops.file(file_id)
            if row is None:
                raise Refused(f"no ledger row {file_id}")
            if row.status != "claimed":
                raise Refused(f"ledger row {file_id} ({row.file_name}) is {row.status}: nothing to dispatch")
            name = FILE_TASKS.get(row.feed, VARIANCE_TASK)
            sent = self._send(name, [row.retailer_id, row.id, row.file_name], {}, None)
            return True, f"sent {name} for {row.retailer_id}/{row.file_name} as task {sent}", sent

        return self._run(actor, "dispatch file", {"file_id": file_id}, remote_addr, work)

    def _replay_file(self, file_id: int, action_id: int) -> tuple[bool | None, str, str | None]:
        row = self.ops.file(file_id)
        if row is None:
            raise Refused(f"no ledger row {file_id}")
        if row.status != "failed" or not row.moved_to:
            raise Refused(f"{row.file_name} (ledger row {file_id}) is {row.status}; only failed files in error_dir")
        name = posixpath.basename(row.moved_to)
        sent = self._send(REPLAY_FILE_TASK, [row.retailer_id, name, row.feed], {"action_id": action_id}, None)
        return None, f"sent {REPLAY_FILE_TASK} for {row.retailer_id}/{name} as task {sent}; a worker replays it", sent

    def _send(self, name: str, args: Sequence[Any], kwargs: dict[str, Any], replay_of: str | None) -> str:
        headers = {REPLAY_HEADER: replay_of} if replay_of else None
        result = self.app.send_task(name, args=list(args), kwargs=dict(kwargs), headers=headers)
        return str(result.id)


def _whole(args: Any, kwargs: Any, task_id: str) -> None:
    if CUT_MARKER in json.dumps([args, kwargs], default=str):
        raise Refused(
            f"task {task_id}: an argument was too large to keep whole in PostgreSQL; replay its dead letter"
            " (the message as it was) instead"
        )


def _ids(ids: Sequence[str]) -> str:
    if not ids:
        return ""
    shown = ", ".join(ids[:10])
    return f": {shown}" + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
