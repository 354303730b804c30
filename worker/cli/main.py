"""The `tlogsync` command line: set up, scan, watch, replay, load, broker, audit; run the demo.

Each command lives in the module of its group; this module only parses and dispatches."""

from __future__ import annotations

import argparse
import sys

import psycopg

from worker.app.settings import Settings, SettingsError
from worker.cli.audit import cmd_audit
from worker.cli.common import console, redact
from worker.cli.dlq import cmd_dlq
from worker.cli.flower import cmd_flower
from worker.cli.routing import cmd_broker, cmd_load
from worker.cli.scan import cmd_replay_file, cmd_scan
from worker.cli.setup import cmd_demo, cmd_migrate, cmd_retailers
from worker.cli.status import cmd_metrics, cmd_status
from worker.core.errors import UnknownRetailer
from worker.core.retailers import ConfigError


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tlogsync", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("migrate", help="apply the numbered SQL migrations (idempotent)")
    p.add_argument("--create-db", action="store_true", help="create the database first if it does not exist")
    p.set_defaults(func=cmd_migrate)
    sub.add_parser("retailers", help="list the retailers and their scan schedules").set_defaults(func=cmd_retailers)
    p = sub.add_parser("scan", help="enqueue a scan of one retailer now")
    p.add_argument("retailer")
    p.add_argument("--wait", action="store_true", help="block until every file the scan saw is final")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scan)
    p = sub.add_parser(
        "status", help="per retailer: last scan, files by status, oldest pending file, dead letters, recent failures"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--failures", type=int, default=10, help="recent failures to show (default 10)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("metrics", help="serve Prometheus metrics (business metrics per retailer)")
    p.add_argument("--port", type=int, default=9808)
    p.add_argument("--address", default="0.0.0.0")  # noqa: S104 - a scrape target
    p.set_defaults(func=cmd_metrics)
    p = sub.add_parser("flower", help="Flower with basic auth from FLOWER_USER/FLOWER_PASSWORD")
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--address", default="0.0.0.0")  # noqa: S104
    p.add_argument("--db", default="flower.db", help="Flower's persistent state file")
    p.add_argument("--insecure-local", action="store_true", help="no auth, loopback only (development)")
    p.add_argument(
        "--enable-events",
        action="store_true",
        help="let Flower turn task events on in workers started without -E (off by default)",
    )
    p.set_defaults(func=cmd_flower)
    for what in ("facilities", "inventory"):
        group = sub.add_parser(what, help=f"{what} data").add_subparsers(dest="action", required=True)
        columns = (
            "facility_id,name,facility_type,postal_code,latitude,longitude,allow_brokering,"
            "max_orders_per_day,facility_group,sequence"
            if what == "facilities"
            else "facility_id,product_id,gtin,quantity_on_hand"
        )
        p = group.add_parser("load", help=f"upsert {what} from a CSV file with the header {columns}")
        p.add_argument("retailer")
        p.add_argument("file")
        p.set_defaults(func=cmd_load, what=what)
    p = sub.add_parser("broker", help="enqueue brokering for orders still in _NA_ (--parked: and UNFILLABLE_PARKING)")
    p.add_argument("retailer")
    p.add_argument("--parked", action="store_true")
    p.set_defaults(func=cmd_broker)
    dlq = sub.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="action", required=True)
    p = dlq.add_parser("list", help="dead letters with task, arguments, reason and age")
    p.add_argument("queue", nargs="?", help="work queue (tlog.ingest, ...) or its .dead name; default all")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dlq)
    p = dlq.add_parser("replay", help="put dead letters back on their work queue")
    p.add_argument("queue", nargs="?")
    p.add_argument("--id", action="append", help="a task id (repeatable)")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_dlq)
    p = sub.add_parser("replay-file", help="reprocess a fixed file from error_dir through the normal path")
    p.add_argument("retailer")
    p.add_argument("file")
    p.add_argument("--variance", action="store_true", help="the file belongs to the variance feed")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_replay_file)
    p = sub.add_parser("audit", help="the daily sales audit of a business day (and reconciliation with the ERP)")
    p.add_argument("retailer")
    p.add_argument("--date", required=True, help="the business day, YYYY-MM-DD (store-local)")
    p.add_argument("--compare", help="the ERP export: CSV with header order_id,store,type,total")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-sftp", dest="sftp", action="store_false", help="do not write to the retailer's audit_dir")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("demo", help="run the whole pipeline on local services with an embedded SFTP server")
    p.add_argument("--files", type=int, default=60, help="generated TLog files besides the published samples")
    p.add_argument("--timeout", type=float, default=180.0)
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.func(settings, args))
    except SettingsError as exc:
        print(f"tlogsync: {exc}", file=sys.stderr)  # as the worker and beat say it at start-up
        return 2
    except ConfigError as exc:
        console.print(f"[red]tlogsync: {exc}[/red]")
        return 2
    except UnknownRetailer as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    except psycopg.OperationalError as exc:
        console.print(f"[red]tlogsync: database {redact(settings.database_url)}: {exc}[/red]")
        return 3


if __name__ == "__main__":
    sys.exit(main())
