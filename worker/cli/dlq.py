"""`tlogsync dlq list` and `tlogsync dlq replay`."""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from worker.adapters.postgres.pool import open_pool
from worker.app.settings import Settings
from worker.cli.common import console


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    """dlq list / dlq replay: the dead-letter queues, with the reasons kept in PostgreSQL."""
    from worker.adapters.postgres.deadletters import PgDeadLetters
    from worker.adapters.rabbitmq import as_json, list_dead, replay
    from worker.celery import app

    queues = [args.queue] if args.queue else None
    with open_pool(settings.database_url) as db:
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
                console.print("[red]dlq replay: give --id TASK_ID or --all[/red]")
                return 2
            replayed = replay(app, queues, args.id or None)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            return 2
        dead_letters.mark_replayed(replayed)
    console.print(f"replayed {len(replayed)} dead letters" + (f": {', '.join(replayed)}" if replayed else ""))
    return 0 if replayed or args.all else 1
