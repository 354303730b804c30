"""`tlogsync facilities load`, `tlogsync inventory load` and `tlogsync broker`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

import click
from rich.table import Table

from worker.app.settings import Settings
from worker.cli.common import console, database, error, known_retailer, option, retailer_argument, with_settings


def _inventory_store(settings: Settings):  # type: ignore[no-untyped-def]
    from worker.adapters.postgres.inventory import PgInventory

    return database(settings), PgInventory


FACILITY_COLUMNS = (
    "facility_id,name,facility_type,postal_code,latitude,longitude,allow_brokering,max_orders_per_day,"
    "facility_group,sequence"
)
INVENTORY_COLUMNS = "facility_id,product_id,gtin,quantity_on_hand"


def cmd_load(settings: Settings, args: argparse.Namespace) -> int:
    """facilities load / inventory load: one transaction, nothing half-loaded, bad rows named by line."""
    from worker.core.inventory import LoadError, parse_facilities_csv, parse_inventory_csv

    known_retailer(settings, args.retailer)
    try:
        text = open(args.file, encoding="utf-8-sig").read()  # noqa: SIM115
        rows = parse_facilities_csv(text) if args.what == "facilities" else parse_inventory_csv(text)
    except (OSError, UnicodeDecodeError) as exc:
        error(f"{args.file}: {exc}")
        return 2
    except LoadError as exc:
        error(f"{args.file}: {exc}; nothing loaded")
        return 1
    db, store_cls = _inventory_store(settings)
    with db:
        store = store_cls(db)
        count = (
            store.load_facilities(args.retailer, rows)
            if args.what == "facilities"
            else store.load_inventory(args.retailer, rows)
        )
    console.print(f"loaded {count} {args.what} rows for {args.retailer}")
    return 0


@click.group("facilities", help="The retailer's facilities (stores, warehouses) that brokering allocates to.")
def facilities() -> None:
    pass


@click.group("inventory", help="The retailer's stock per facility and product.")
def inventory() -> None:
    pass


def _load_command(what: str, columns: str) -> click.Command:
    @click.command("load", help=f"Upsert {what} of RETAILER from FILE, a CSV file with the header {columns}.")
    @retailer_argument
    @click.argument("file", type=click.Path(dir_okay=False))
    @with_settings
    def load(settings: Settings, args: argparse.Namespace) -> int:
        args.what = what
        return cmd_load(settings, args)

    return load


facilities.add_command(_load_command("facilities", FACILITY_COLUMNS))
inventory.add_command(_load_command("inventory", INVENTORY_COLUMNS))


@click.command(
    "broker",
    help="Start a brokering run of RETAILER now, as a scheduled run does: the orders in _NA_ and the parked and "
    "queued ones (parked first); or with --dry-run replay its orders against the current or a candidate rule set, "
    "changing nothing.",
)
@retailer_argument
@option("--new-only", is_flag=True, help="Only the orders waiting in _NA_, not the parked and queued ones.")
@option("--parked", is_flag=True, hidden=True, help="The default now (kept so older scripts still work).")
@option("--dry-run", is_flag=True, help="Reserve nothing: print fill rate, split rate, distance, changed orders.")
@option(
    "--rules",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="With --dry-run: a TOML file with a candidate [brokering] table (routings, or a flat rules list).",
)
@option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
    default=None,
    help="With --dry-run: orders stored since this date (UTC); default: the latest 5000.",
)
@option("--json", is_flag=True, help="With --dry-run: the report as JSON.")
@with_settings
def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    """A brokering run now, or a dry run."""
    retailer = known_retailer(settings, args.retailer)
    if args.dry_run:
        return broker_dry_run(settings, retailer, args.rules, args.since, args.json)
    if args.rules or args.since:
        error("tlogsync: --rules and --since go with --dry-run")
        return 2
    from tasks.routing import run_brokering

    parked = not args.new_only
    db, store_cls = _inventory_store(settings)
    with db:
        orders = store_cls(db).orders_waiting(args.retailer, parked)
    run_brokering.apply_async((args.retailer,), {"scheduled": True, "parked": parked})
    console.print(f"brokering run enqueued for {len(orders)} orders of {args.retailer}")
    return 0


def load_candidate(path: str) -> tuple[Any, ...]:
    """The routings of a candidate rules file: a [brokering] table, or its keys at the top level."""
    import tomllib

    from worker.core.brokering_config import BrokeringConfigError, parse_brokering
    from worker.core.retailers import ConfigError

    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None
    table = document.get("brokering", document)
    try:
        return parse_brokering(table).routings
    except BrokeringConfigError as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None


def broker_dry_run(
    settings: Settings, retailer: Any, rules: str | None, since: dt.datetime | None, as_json: bool
) -> int:
    """Replay RETAILER's orders since a date; print the fill rate, split rate, average distance and the orders
    whose outcome would change. Exit 0."""
    from worker.adapters.postgres.brokering import PgBrokeringViews
    from worker.services.brokering import dry_run

    candidate = load_candidate(rules) if rules else None
    when = since.replace(tzinfo=dt.UTC) if since is not None else None
    db = database(settings)
    with db:
        views = PgBrokeringViews(db)
        report = dry_run(
            lambda s: views.history(retailer.retailer_id, s),
            lambda ids: views.replay(retailer.retailer_id, ids),
            retailer.brokering.routings,
            candidate,
            when,
        )
    sets = [("current rules", report.current)] + ([("candidate rules", report.candidate)] if report.candidate else [])
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "retailer": retailer.retailer_id,
                    "orders": report.orders,
                    **{
                        name.replace(" ", "_"): {
                            "fill_rate": round(stats.fill_rate, 4),
                            "split_rate": round(stats.split_rate, 4),
                            "average_distance_km": stats.average_distance_km,
                            "lines": stats.lines,
                            "filled_lines": stats.filled_lines,
                        }
                        for name, stats in sets
                    },
                    "changed": [{"order_id": o, "before": b, "after": a} for o, b, a in report.changed],
                }
            )
        )
        return 0
    table = Table(title=f"dry run of {retailer.retailer_id}: {report.orders} orders (nothing reserved)")
    for col in ("rules", "fill rate", "split rate", "average distance", "lines filled"):
        table.add_column(col)
    for name, stats in sets:
        distance = f"{stats.average_distance_km:.1f} km" if stats.average_distance_km is not None else "-"
        table.add_row(
            name, f"{stats.fill_rate:.1%}", f"{stats.split_rate:.1%}", distance, f"{stats.filled_lines}/{stats.lines}"
        )
    console.print(table)
    against = "the current rules" if report.candidate else "where the lines are now"
    changed = Table(title=f"{len(report.changed)} orders whose outcome would change (against {against})")
    for col in ("order", "before", "after"):
        changed.add_column(col)
    for order_id, before, after in report.changed[:200]:
        changed.add_row(order_id, _where(before), _where(after))
    console.print(changed)
    return 0


def _where(placed: dict[int, str]) -> str:
    return ", ".join(f"{seq}: {fid}" for seq, fid in sorted(placed.items())) or "-"
