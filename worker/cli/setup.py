"""`tlogsync migrate`, `tlogsync retailers`, `tlogsync demo`."""

from __future__ import annotations

import argparse

import click
from rich.table import Table

from worker.app.settings import Settings
from worker.cli.common import console, option, redact, retailers_in_force, with_settings


@click.command("migrate", help="Apply the numbered SQL migrations to TLOGSYNC_DATABASE_URL (idempotent).")
@option("--create-db", is_flag=True, help="Create the database first if it does not exist.")
@with_settings
def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.adapters.postgres.migrate import ensure_database, migrate

    if args.create_db and ensure_database(settings.database_url):
        console.print(f"created database for {redact(settings.database_url)}")
    applied = migrate(settings.database_url)
    console.print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


@click.command("retailers", help="List the retailers in force and their schedules.")
@with_settings
def cmd_retailers(settings: Settings, args: argparse.Namespace) -> int:
    retailers = retailers_in_force(settings)
    table = Table(title=f"retailers in {settings.retailers_path}")
    for col in ("retailer", "enabled", "schedule", "order master", "sftp", "orders dir"):
        table.add_column(col)
    for r in retailers.values():
        when = r.schedule if r.schedule else f"every {r.poll_seconds:g}s"
        table.add_row(
            r.retailer_id,
            "yes" if r.enabled else "paused",
            when,
            "yes" if r.order_master else "no",
            f"{r.sftp.username}@{r.sftp.host}:{r.sftp.port}",
            r.sftp.orders_dir,
        )
    console.print(table)
    return 0


@click.command("demo", help="Run the whole pipeline on the local services with an embedded SFTP server.")
@option("--files", type=click.IntRange(min=0), default=60, help="Generated TLog files besides the published samples.")
@option("--timeout", type=click.FloatRange(min=1), default=180.0, help="Seconds to wait for every file to be final.")
@with_settings
def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from worker.demo.run import run_demo

    return run_demo(files=args.files, timeout=args.timeout)
