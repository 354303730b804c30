"""`tlogsync facilities load`, `tlogsync inventory load` and `tlogsync broker`."""

from __future__ import annotations

import argparse

import click

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


@click.command("broker", help="Enqueue brokering of RETAILER's orders still in _NA_ (--parked: and parked ones).")
@retailer_argument
@option("--parked", is_flag=True, help="Also the orders parked in UNFILLABLE_PARKING.")
@with_settings
def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    """Re-run brokering for orders still waiting (and, with --parked, those parked as unfillable)."""
    known_retailer(settings, args.retailer)
    from tasks.routing import broker_order

    db, store_cls = _inventory_store(settings)
    with db:
        orders = store_cls(db).orders_waiting(args.retailer, args.parked)
    for order_id in orders:
        broker_order.apply_async((args.retailer, order_id), {"parked": args.parked})
    console.print(f"brokering enqueued for {len(orders)} orders of {args.retailer}")
    return 0
