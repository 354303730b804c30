"""`tlogsync order ...`: one order of a retailer. `show` prints where its lines are and why, run by run: each
line's result and, per rule, each facility considered and why it was or was not chosen."""

from __future__ import annotations

import argparse
import json
from typing import Any

import click
from rich.table import Table

from worker.app.settings import Settings
from worker.cli.common import console, database, error, known_retailer, option, retailer_argument, with_settings


@click.group("order", help="One order of a retailer: its lines, where they are and why.")
def order() -> None:
    pass


def show_order(settings: Settings, retailer_id: str, order_id: str, as_json: bool, runs: int) -> int:
    """Print the order and its latest `runs` brokering decisions; 1 when the retailer has no such order."""
    from worker.adapters.postgres.brokering import PgBrokeringViews

    known_retailer(settings, retailer_id)
    db = database(settings)
    with db:
        found = PgBrokeringViews(db).decisions(retailer_id, order_id, limit=runs)
    if found is None:
        error(f"tlogsync: retailer {retailer_id!r} has no order {order_id!r}")
        return 1
    if as_json:
        console.print_json(json.dumps(found))
        return 0
    print_order(found)
    return 0


def print_order(found: dict[str, Any]) -> None:
    head = f"order {found['order_id']} ({found['status']}, sold at {found['store']})"
    if found["auto_cancel_at"]:
        head += f", auto-cancel at {found['auto_cancel_at']}"
    lines = Table(title=head)
    for col in ("line", "gtin", "qty", "fulfillment", "status", "facility"):
        lines.add_column(col)
    for line in found["lines"]:
        lines.add_row(
            str(line["item_seq"]),
            line["gtin"],
            str(line["quantity"]),
            line["fulfillment"],
            line["status"],
            line["facility"],
        )
    console.print(lines)
    if not found["decisions"]:
        console.print("no brokering decision recorded")
    for decision in found["decisions"]:
        table = Table(
            title=f"run {decision['run_id']} at {decision['decided_at']}: {decision['summary']}", show_lines=True
        )
        for col in ("line", "result", "rule", "facility", "why"):
            table.add_column(col)
        for line in decision["lines"]:
            where = line.get("facility") or line.get("queue") or ""
            table.add_row(
                str(line["item_seq"]),
                f"[bold]{line['result']}[/bold]",
                line.get("rule") or "",
                where,
                line.get("why") or "",
            )
            for tried in line.get("rules", []):
                for facility_id, verdict in tried["facilities"].items():
                    table.add_row("", "", tried["rule"], facility_id, verdict)
        console.print(table)


@order.command(
    "show",
    help="Show RETAILER's order ORDER_ID (the POS order id): its lines and, per brokering run, "
    "each line's result and why every facility was or was not chosen.",
)
@retailer_argument
@click.argument("order_id", metavar="ORDER_ID")
@option("--json", is_flag=True, help="The order and its decisions as JSON.")
@option("--runs", type=click.IntRange(min=1), default=1, help="How many of the latest brokering runs to show.")
@with_settings
def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    return show_order(settings, args.retailer, args.order_id, args.json, args.runs)
