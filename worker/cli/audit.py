"""`tlogsync audit`: the daily sales audit of a business day, and the reconciliation with the ERP."""

from __future__ import annotations

import argparse
import json
from typing import Any

import click
from rich.table import Table

from worker.app.settings import Settings
from worker.cli.common import console, database, error, known_retailer, option, retailer_argument, with_settings


@click.command("audit", help="The daily sales audit of RETAILER's business day (and the reconciliation with the ERP).")
@retailer_argument
@option("--date", required=True, help="The business day, YYYY-MM-DD (store-local).")
@option("--compare", type=click.Path(dir_okay=False), help="The ERP export: CSV with header order_id,store,type,total.")
@option("--json", is_flag=True, help="Print the report as JSON on stdout.")
@option("--sftp/--no-sftp", default=True, help="Also write the report to the retailer's SFTP audit_dir.")
@with_settings
def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """The daily audit on demand, optionally reconciled against the ERP's export."""
    from datetime import date

    from worker.adapters.postgres.audit import PgAudit
    from worker.adapters.sftp import SftpSource
    from worker.core.audit import CSV_COLUMNS, ErpFileError, parse_erp_csv, reconcile
    from worker.core.money import cents
    from worker.services.audit import run_audit

    retailer = known_retailer(settings, args.retailer)
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        error(f"--date {args.date!r}: expected YYYY-MM-DD")
        return 2
    erp = None
    if args.compare:
        try:
            erp = parse_erp_csv(open(args.compare, encoding="utf-8").read())  # noqa: SIM115
        except (OSError, ErpFileError) as exc:
            error(f"{args.compare}: {exc}")
            return 2
    source = SftpSource(retailer.sftp, settings.sftp_timeout_seconds) if retailer.sftp.audit_dir and args.sftp else None
    try:
        with database(settings) as db:
            document, orders, written = run_audit(retailer, day, PgAudit(db), source, settings.audit_dir)
    finally:
        if source is not None:
            source.close()
    outcome: dict[str, Any] = {"report": document, "files": [str(p) for p in written]}
    mismatch = not document["consistent"]
    if erp is not None:
        rec = reconcile(orders, erp)
        outcome["reconciliation"] = {
            "matches": rec.matches,
            "missing_in_oms": [
                {"line": r.line, "order_id": r.order_id, "store": r.store, "type": r.order_type, "total": str(r.total)}
                for r in rec.missing_in_oms
            ],
            "missing_in_erp": [
                {
                    "order_id": o.external_id,
                    "store": o.store_id,
                    "type": o.order_type,
                    "total": str(cents(o.grand_total)),
                }
                for o in rec.missing_in_erp
            ],
            "total_differs": [
                {"order_id": i, "oms": str(a), "erp": str(b), "difference": str(a - b)} for i, a, b in rec.total_differs
            ],
            "other_differs": rec.other_differs,
        }
        mismatch = mismatch or not rec.matches
    if args.json:
        print(json.dumps(outcome))
        return 1 if mismatch else 0
    table = Table(title=f"audit of {retailer.retailer_id} for {day} (store-local business day)")
    for col in CSV_COLUMNS:  # the report's columns, as the CSV names them
        table.add_column(col.replace("_", " "))
    for r in document["rows"]:
        table.add_row(
            r["store"],
            r["type"],
            str(r["orders"]),
            str(r["units"]),
            r["merchandise"],
            r["discounts"],
            r["tax"],
            r["shipping"],
            r["grand_total"],
            ", ".join(f"{m} {a}" for m, a in r["tenders"].items()),
        )
    console.print(table)
    console.print("totals: " + ", ".join(f"{t} {v}" for t, v in document["totals"].items()))
    for problem in document["inconsistent_orders"]:
        console.print(f"[red]does not add up: {problem}[/red]")
    for name in document["unfinished_files"]:
        console.print(f"[red]not final: {name}[/red]")
    if erp is not None:
        rec_doc = outcome["reconciliation"]
        for row in rec_doc["missing_in_oms"]:
            console.print(f"[red]in the ERP, not here: {row['order_id']} (line {row['line']}, {row['total']})[/red]")
        for row in rec_doc["missing_in_erp"]:
            console.print(f"[red]here, not in the ERP: {row['order_id']} ({row['type']}, {row['total']})[/red]")
        for row in rec_doc["total_differs"]:
            console.print(
                f"[red]{row['order_id']}: {row['oms']} here, {row['erp']} in the ERP, difference "
                f"{row['difference']}[/red]"
            )
        for text in rec_doc["other_differs"]:
            console.print(f"[red]{text}[/red]")
        console.print("reconciliation: " + ("every order matches" if rec_doc["matches"] else "MISMATCH"))
    console.print("report files: " + ", ".join(outcome["files"]))
    return 1 if mismatch else 0
