"""`tlogsync facilities load`, `tlogsync inventory load` and `tlogsync broker`."""

from __future__ import annotations

import argparse

from worker.adapters.postgres.pool import open_pool
from worker.app.settings import Settings
from worker.cli.common import console, known_retailer


def _inventory_store(settings: Settings):  # type: ignore[no-untyped-def]
    from worker.adapters.postgres.inventory import PgInventory

    return open_pool(settings.database_url), PgInventory


def cmd_load(settings: Settings, args: argparse.Namespace) -> int:
    """facilities load / inventory load: one transaction, nothing half-loaded, bad rows named by line."""
    from worker.core.inventory import LoadError, parse_facilities_csv, parse_inventory_csv

    known_retailer(settings, args.retailer)
    try:
        text = open(args.file, encoding="utf-8-sig").read()  # noqa: SIM115
        rows = parse_facilities_csv(text) if args.what == "facilities" else parse_inventory_csv(text)
    except (OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]{args.file}: {exc}[/red]")
        return 2
    except LoadError as exc:
        console.print(f"[red]{args.file}: {exc}; nothing loaded[/red]")
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
