"""`tlogsync dlq list` and `tlogsync dlq replay`."""

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
                letters = list_dead(app, queues, dead_letters.reasons)
                if args.json:
                    print(as_json(letters))
                    return 0
                table = Table(title=f"dead letters ({len(letters)})")
                for col in ("queue", "task id", "task", "args", "reason", "age"):
                    table.add_column(col, overflow="fold")
                now = time.time()
                for d in letters:
                    age = f"{(now - d.died_at.timestamp()) / 60:.0f} min" if d.died_at else "?"
                    table.add_row(d.queue, d.task_id, d.task, d.args, d.reason or "(not recorded)", age)
                console.print(table)
                return 0
            if not args.id and not args.all:
                error("dlq replay: give --id TASK_ID or --all")
                return 2
            replayed = replay(app, queues, args.id or None)
        except ValueError as exc:
            error(str(exc))
            return 2
        dead_letters.mark_replayed(replayed)
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
