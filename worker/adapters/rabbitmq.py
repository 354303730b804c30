"""Dead-letter queues: list what landed in `<queue>.dead` and put it back on its work queue.

RabbitMQ keeps the messages; PostgreSQL (`dead_letters`) keeps why each was given up. Listing takes
the messages without acknowledging them and closes the channel, so they return to the queue untouched.
Replaying republishes a message as it was to its original queue with a fresh retry budget, then
acknowledges the dead copy. Tasks are idempotent, so a replayed message that succeeds leaves no duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from kombu import Connection

from worker.adapters import queues
from worker.services.ports import DeadLetterReason


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # the work queue it came from
    task_id: str
    task: str
    args: str
    kwargs: str
    died_at: datetime | None
    reason: str | None  # from the dead_letters table, when the task recorded one
    deaths: int
    body_args: Any = None  # the arguments as the message carries them (JSON), not a repr
    body_kwargs: Any = None


def _work_queue(name: str) -> str:
    if name.endswith(".dead"):
        name = name[: -len(".dead")]
    if name not in queues.WORK_QUEUES:
        raise ValueError(f"unknown queue {name!r}; one of {', '.join(queues.WORK_QUEUES)}")
    return name


def _death(message: Any) -> tuple[datetime | None, int]:
    deaths = (message.headers or {}).get("x-death") or []
    if not deaths:
        return None, 0
    first = deaths[0]
    when = first.get("time")
    if isinstance(when, datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when, sum(int(d.get("count", 1)) for d in deaths)


# The header a replayed message carries: the dead letter it came from, so its success marks that one resolved.
REPLAY_HEADER = "tlogsync_replay_of"


def _fetch(conn: Connection, queue: str, limit: int | None = None) -> tuple[Any, list[Any]]:
    channel = conn.channel()
    dead = queues.dead_queue(queue)(channel)
    dead.declare()
    messages: list[Any] = []
    while limit is None or len(messages) < limit:
        message = dead.get(no_ack=False, accept=["json"])
        if message is None:
            break
        messages.append(message)
    return channel, messages


def _body(message: Any) -> tuple[Any, Any]:
    """(args, kwargs) of a task message of protocol 2 ([args, kwargs, embed]); (None, None) if not that."""
    try:
        body = message.decode()
    except Exception:  # noqa: BLE001 - a message we cannot decode is still listed, by its headers
        return None, None
    if isinstance(body, list | tuple) and len(body) >= 2:
        return body[0], body[1]
    return None, None


def _describe(queue: str, message: Any, reasons: dict[str, DeadLetterReason]) -> DeadLetter:
    headers = message.headers or {}
    task_id = str(headers.get("id") or message.properties.get("correlation_id") or "")
    died_at, deaths = _death(message)
    reason = reasons.get(task_id)
    body_args, body_kwargs = _body(message)
    return DeadLetter(
        queue,
        task_id,
        str(headers.get("task") or "?"),
        str(headers.get("argsrepr") or ""),
        str(headers.get("kwargsrepr") or ""),
        died_at or (reason.created_at if reason else None),
        reason.reason if reason else None,
        deaths,
        body_args,
        body_kwargs,
    )


def list_dead(
    app: Celery, queue_names: Sequence[str] | None, reasons_for: Any, limit: int | None = None
) -> list[DeadLetter]:
    """Every dead letter of the named queues (all work queues when None), oldest first; at most limit per queue."""
    out: list[DeadLetter] = []
    with app.connection_for_read() as conn:
        for queue in [_work_queue(q) for q in (queue_names or queues.WORK_QUEUES)]:
            channel, messages = _fetch(conn, queue, limit)
            try:
                ids = [str((m.headers or {}).get("id") or "") for m in messages]
                reasons = reasons_for(ids) if ids else {}
                out += [_describe(queue, m, reasons) for m in messages]
            finally:
                channel.close()  # unacknowledged: they stay in the dead-letter queue
    return out


def replay(app: Celery, queue_names: Sequence[str] | None, task_ids: Sequence[str] | None) -> list[str]:
    """Republish dead letters (those with the given task ids, or all) to their work queues; the ids replayed."""
    replayed: list[str] = []
    wanted = set(task_ids) if task_ids else None
    with app.connection_for_write() as conn:
        for queue in [_work_queue(q) for q in (queue_names or queues.WORK_QUEUES)]:
            channel, messages = _fetch(conn, queue)
            try:
                producer = conn.Producer(channel=conn.channel())
                for message in messages:
                    headers = dict(message.headers or {})
                    task_id = str(headers.get("id") or "")
                    if wanted is not None and task_id not in wanted:
                        continue
                    for key in [k for k in headers if k.startswith("x-")]:
                        headers.pop(key)
                    # A fresh retry budget and no stale countdown: the operator decided it is worth another go.
                    headers["retries"] = 0
                    headers["eta"] = None
                    headers[REPLAY_HEADER] = task_id
                    producer.publish(
                        message.body,
                        exchange=queues.WORK_EXCHANGE.name,
                        routing_key=queue,
                        headers=headers,
                        content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        delivery_mode=2,
                        declare=[queues.work_queue(queue)],
                        retry=True,
                        correlation_id=message.properties.get("correlation_id"),
                    )
                    message.ack()  # only once the copy is published (confirmed): nothing is lost in between
                    replayed.append(task_id)
            finally:
                channel.close()
    return replayed


def purge(app: Celery, queue_names: Sequence[str] | None, task_ids: Sequence[str] | None) -> list[str]:
    """Remove dead letters (those with the given task ids, or all) from their dead-letter queues; the ids removed.
    Each is taken and acknowledged one by one, so exactly the ids returned are gone (a queue purge would not
    say which)."""
    removed: list[str] = []
    wanted = set(task_ids) if task_ids else None
    with app.connection_for_write() as conn:
        for queue in [_work_queue(q) for q in (queue_names or queues.WORK_QUEUES)]:
            channel, messages = _fetch(conn, queue)
            try:
                for message in messages:
                    task_id = str((message.headers or {}).get("id") or "")
                    if wanted is not None and task_id not in wanted:
                        continue
                    message.ack()
                    removed.append(task_id)
            finally:
                channel.close()  # the others, unacknowledged, stay
    return removed


def queue_depths(app: Celery) -> dict[str, int]:
    """Messages in each dead-letter queue, by work queue name."""
    out: dict[str, int] = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for name in queues.WORK_QUEUES:
            _, messages, _ = queues.dead_queue(name)(channel).queue_declare()  # declared if missing, as _fetch does
            out[name] = int(messages)
    return out


def as_json(letters: Sequence[DeadLetter], states: dict[str, str] | None = None) -> str:
    """The list as JSON; states: each task id's state in dead_letters (dead, replayed, resolved, purged)."""
    return json.dumps(
        [
            {
                **letter.__dict__,
                "died_at": letter.died_at.isoformat() if letter.died_at else None,
                **({"state": states.get(letter.task_id, "dead")} if states is not None else {}),
            }
            for letter in letters
        ],
        default=str,
    )
