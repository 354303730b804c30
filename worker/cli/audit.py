"""`tlogsync audit`: the daily audit of a business day (every file, every cent, the register sequences), an
operator's explanation of a difference, and the comparison with the ERP's export."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from worker.app.settings import Settings
from worker.cli.common import console, database, error, known_retailer, option, retailer_argument, with_settings


@click.command(
    "audit",
    help="The daily audit of RETAILER's business day: every file accounted for, every cent checked, missing register"
    " transactions found; with --compare, every difference with the ERP's export. Exit 1 when anything is to look at.",
)
@retailer_argument
@option("--date", required=True, help="The business day, YYYY-MM-DD (store-local).")
@option(
    "--compare",
    type=click.Path(dir_okay=False),
    help="The ERP export: CSV with store, day, type, orders, merchandise, discounts, tax, shipping, total and"
    " optionally order_id (one row per order); see docs/audit.md.",
)
@option(
    "--explain",
    multiple=True,
    metavar="SUBJECT=NOTE",
    help="Record an explanation of a difference (its subject as the report prints it) before auditing; repeatable.",
)
@option("--json", is_flag=True, help="Print the report as JSON on stdout.")
@option("--sftp/--no-sftp", default=True, help="Also write the report to the retailer's SFTP audit_dir.")
@with_settings
def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    return audit_command(
        settings,
        retailer_id=args.retailer,
        day_text=args.date,
        compare_path=args.compare,
        explain=list(args.explain or ()),
        as_json=args.json,
        sftp=args.sftp,
    )


def audit_command(
    settings: Settings,
    *,
    retailer_id: str,
    day_text: str,
    compare_path: str | None = None,
    explain: list[str] | None = None,
    as_json: bool = False,
    sftp: bool = True,
) -> int:
    """The audit on demand; 0 consistent (and matching the ERP), 1 something to look at, 2 usage."""
    from worker.adapters.postgres.audit import PgAudit
    from worker.adapters.sftp import SftpSource
    from worker.core.audit import ErpFileError
    from worker.core.erp import parse_erp_export
    from worker.services.audit import compare_with_erp, run_audit

    retailer = known_retailer(settings, retailer_id)
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        error(f"--date {day_text!r}: expected YYYY-MM-DD")
        return 2
    notes = []
    for item in explain or ():
        subject, sep, note = item.partition("=")
        if not sep or not subject.strip() or not note.strip():
            error(f"--explain {item!r}: expected SUBJECT=NOTE (the subject as the report prints it)")
            return 2
        notes.append((subject.strip(), note.strip()))
    erp = None
    if compare_path:
        try:
            erp = parse_erp_export(Path(compare_path).read_text(encoding="utf-8"), day)
        except (OSError, UnicodeDecodeError, ErpFileError) as exc:
            error(f"{compare_path}: {exc}")
            return 2
    source = SftpSource(retailer.sftp, settings.sftp_timeout_seconds) if retailer.sftp.audit_dir and sftp else None
    try:
        with database(settings) as db:
            audit = PgAudit(db)
            for subject, note in notes:
                audit.note(retailer.retailer_id, day, subject, note)
            document, sales, written = run_audit(retailer, day, audit, source, settings.audit_dir)
            comparison = (
                compare_with_erp(day, sales, erp, lambda ids: audit.sales_by_id(retailer.retailer_id, ids))
                if erp is not None
                else None
            )
    finally:
        if source is not None:
            source.close()
    subjects = {d["subject"] for d in document.get("differences", [])}
    for subject, _ in notes:
        if subject not in subjects:
            error(f"--explain {subject!r}: no difference of {day} has that subject; the note is kept for it")
    outcome: dict[str, Any] = {"report": document, "files": [str(p) for p in written]}
    look = not document["consistent"]
    if comparison is not None:
        outcome["reconciliation"] = {
            "matches": comparison.matches,
            "level": comparison.level,
            "differences": comparison.differences,
        }
        look = look or not comparison.matches
    if as_json:
        print(json.dumps(outcome))
        return 1 if look else 0
    show(document)
    if comparison is not None:
        for diff in comparison.differences:
            console.print(f"[red]{escape(diff['text'])}[/red]", highlight=False)
        verdict = "every order matches" if comparison.matches else f"MISMATCH ({len(comparison.differences)})"
        console.print(f"reconciliation with the ERP ({comparison.level} level): {verdict}")
    console.print("report files: " + ", ".join(outcome["files"]), highlight=False)
    return 1 if look else 0


def show(document: dict[str, Any]) -> None:
    """The report as tables and lines on the console."""
    table = Table(title=f"audit of {document['retailer']} for {document['business_date']} (store-local business day)")
    for col in (
        "store",
        "type",
        "orders",
        "units",
        "merchandise",
        "discounts",
        "tax",
        "shipping",
        "grand total",
        "tenders",
        "ties out",
    ):
        table.add_column(col)
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
            escape(", ".join(f"{m} {a}" for m, a in r["tenders"].items())),
            "yes" if r.get("ties_out", True) else "NO",
        )
    console.print(table)
    console.print("totals: " + ", ".join(f"{t} {v}" for t, v in document["totals"].items()), highlight=False)
    files = document.get("files", {})
    if files.get("by_store"):
        columns = list(files["totals"])
        ft = Table(title="files of the day, per store")
        ft.add_column("store")
        for c in columns:
            ft.add_column(c.replace("_", " "))
        for row in files["by_store"]:
            ft.add_row(escape(row["store"]), *[str(row[c]) for c in columns])
        console.print(ft)
    for diff in document.get("differences", []):
        if diff.get("explained"):
            console.print(
                f"[yellow]explained: {escape(diff['subject'])}: {escape(diff['text'])} ({escape(diff['explained'])})"
                "[/yellow]",
                highlight=False,
            )
        else:
            console.print(
                f"[red]{escape(diff['kind'])}: {escape(diff['text'])}  \\[{escape(diff['subject'])}][/red]",
                highlight=False,
            )
    for item in document.get("rounding", []):
        console.print(f"rounding: {escape(item['text'])}", highlight=False)
    for note in document.get("notes", []):
        console.print(f"note: {escape(note)}", highlight=False)
    count = document.get("differences_count", 0)
    console.print(
        "[green]consistent: every file and every cent accounted for[/green]"
        if document["consistent"]
        else f"[red]not consistent: {count} difference(s) to look at[/red]"
    )
