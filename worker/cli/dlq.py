"""`tlogsync dlq list`, `tlogsync dlq replay` and `tlogsync dlq purge`."""

from __future__ import annotations

import argparse
import time

import click
from rich.table import Table

from worker.app.settings import Settings
from worker.cli.common import console, database, error, option, with_settings


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    """dlq list / dlq replay: the dead-letter queues, with the reasons kept in PostgreSQL."""
    from worker.adapters.postgres.deadletters import PgDeadLetters
    from worker.adapters.rabbitmq import as_json, list_dead, replay
    from worker.celery import app

    queues = [args.queue] if args.queue else None
    with database(settings) as db:
        dead_letters = PgDeadLetters(db)
        try:
            if args.action == "list":
                dead_letters.resolve_done()  # those whose work was done since show as resolved
                letters = list_dead(app, queues, dead_letters.reasons)
                states = {i: row.state for i, row in dead_letters.letters([d.task_id for d in letters]).items()}
                if args.json:
                    print(as_json(letters, states))
                    return 0
                table = Table(title=f"dead letters ({len(letters)})")
                for col in ("queue", "task id", "task", "args", "reason", "state", "age"):
                    table.add_column(col, overflow="fold")
                now = time.time()
                for d in letters:
                    age = f"{(now - d.died_at.timestamp()) / 60:.0f} min" if d.died_at else "?"
                    state = states.get(d.task_id, "dead")
                    table.add_row(d.queue, d.task_id, d.task, d.args, d.reason or "(not recorded)", state, age)
                console.print(table)
                return 0
            if not args.id and not args.all:
                error("dlq replay: give --id TASK_ID or --all")
                return 2
            replayed = replay(app, queues, args.id or None)
        except ValueError as exc:
            error(str(exc))
            return 2
        dead_letters.mark_replayed(replayed, by=cli_actor())
    console.print(f"replayed {len(replayed)} dead letters" + (f": {', '.join(replayed)}" if replayed else ""))
    return 0 if replayed or args.all else 1


QUEUE = click.argument("queue", required=False, metavar="[QUEUE]")
QUEUE_HELP = " QUEUE is a work queue (tlog.ingest, ...) or its .dead name; default all."


@click.group("dlq", help="The dead-letter queues: what could not succeed, with the reasons kept in PostgreSQL.")
def dlq() -> None:
    pass


@dlq.command("list", help="Dead letters with task, arguments, reason and age." + QUEUE_HELP)
@QUEUE
@option("--json", is_flag=True, help="Print them as JSON on stdout.")
@with_settings
def dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    args.action = "list"
    return cmd_dlq(settings, args)


@dlq.command("replay", help="Put dead letters back on their work queue." + QUEUE_HELP)
@QUEUE
@option("--id", multiple=True, help="A task id to replay (repeatable).")
@option("--all", is_flag=True, help="Every dead letter of QUEUE (or of every queue).")
@with_settings
def dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    args.action = "replay"
    args.id = list(args.id)
    return cmd_dlq(settings, args)


def cli_actor() -> str:
    """Who acts from the command line, as operator_actions and dead_letters record it."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user} (tlogsync cli)"


def purge_dead_letters(
    settings: Settings, queue: str | None, ids: list[str], all_queues: bool = False, resolved: bool = False
) -> int:
    """Remove dead letters from RabbitMQ, mark their rows purged and record the action; the exit code."""
    from worker.adapters.rabbitmq import _work_queue
    from worker.celery import app
    from worker.monitoring.actions import Actions

    if not queue and not ids and not all_queues and not resolved:
        error("dlq purge: name a QUEUE, give --id TASK_ID, --resolved, or --all for every queue")
        return 2
    try:
        name = _work_queue(queue) if queue else None
    except ValueError as exc:
        error(str(exc))
        return 2
    with database(settings) as db:
        done = Actions(app, db).purge_dead(cli_actor(), name, ids or None, resolved_only=resolved)
    if done.ok:
        console.print(done.result)
        return 0
    error(done.result)
    return 1


@dlq.command(
    "purge",
    help="Remove dead letters from their queue without replaying them; their rows in PostgreSQL stay, marked"
    " purged (by whom, when), and alerts stop counting them." + QUEUE_HELP,
)
@QUEUE
@option("--id", multiple=True, help="A task id to purge (repeatable); without it, the whole QUEUE.")
@option("--resolved", is_flag=True, help="Only dead letters whose work has been done since (resolved).")
@option("--all", is_flag=True, help="Every dead-letter queue (when no QUEUE is named).")
@with_settings
def dlq_purge(settings: Settings, args: argparse.Namespace) -> int:
    return purge_dead_letters(settings, args.queue, list(args.id), args.all, args.resolved)
