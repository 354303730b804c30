"""`tlogsync status` (the operator's one screen) and `tlogsync metrics` (the Prometheus exporter)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from worker.adapters.postgres.readmodel import PgReadModel
from worker.app.settings import Settings
from worker.cli.common import console, database, option, with_settings


def _dead_letter_depths() -> dict[str, int] | None:
    from worker.adapters import queues
    from worker.celery import app

    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            return {q: queues.dead_queue(q)(channel).queue_declare(passive=True)[1] for q in queues.WORK_QUEUES}
    except Exception:  # noqa: BLE001 - the broker being down is itself shown
        return None


@click.command(
    "status", help="Per retailer: last scan, files by status, oldest pending file, dead letters, recent failures."
)
@option("--json", is_flag=True, help="Print the same as JSON on stdout.")
@option("--failures", type=click.IntRange(min=0), default=10, help="How many recent failures to show.")
@with_settings
def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """The operator's one screen: per retailer the last scan, files by status, the oldest pending file,
    follow-ups, dead letters and recent failures with their reasons."""
    with database(settings) as db, db.bound():
        reads = PgReadModel(db)
        files = reads.files_by_status()
        pending = reads.pending_files()
        scans = reads.last_scans()
        unmoved = reads.unmoved_files()
        leftovers = reads.listing_leftovers()
        failures = reads.recent_failures(args.failures)
        followups = reads.followups()
        checks = reads.config_checks()
        audits = reads.last_audits()
        now = reads.now()
    dead = _dead_letter_depths()
    by_retailer: dict[str, dict[str, Any]] = {}
    for f in files:
        by_retailer.setdefault(f.retailer_id, {"files": {}})["files"][f"{f.feed}:{f.status}"] = f.count
    for s in scans:
        by_retailer.setdefault(s.retailer_id, {"files": {}})["last_scan"] = {
            "finished_at": s.finished_at.isoformat(),
            "age_s": round((now - s.finished_at).total_seconds(), 1),
            "requested_by": s.requested_by,
            "listed": s.listed,
            "dispatched": s.dispatched,
            "deferred": s.deferred,
            "error": s.error,
            "note": s.note,
        }
    for p in pending:
        by_retailer.setdefault(p.retailer_id, {"files": {}})["pending"] = {
            "files": p.files,
            "oldest_age_s": round((now - p.oldest).total_seconds(), 1),
        }
    for m in unmoved:
        by_retailer.setdefault(m.retailer_id, {"files": {}})["unmoved"] = {
            "files": m.files,
            "oldest_age_s": round(float(m.oldest_age_seconds), 1),
            "move_attempts": m.move_attempts,
            "last_error": m.last_error,
        }
    for left in leftovers:
        by_retailer.setdefault(left.retailer_id, {"files": {}})["listing"] = {
            "too_young": left.too_young,
            "ignored": left.ignored,
            "oldest_too_young_s": None if left.oldest_too_young_s is None else float(left.oldest_too_young_s),
            "listed_at": left.finished_at.isoformat(),
        }
    for u in followups:
        by_retailer.setdefault(u.retailer_id, {"files": {}}).setdefault("followups", {})[f"{u.kind}:{u.status}"] = (
            u.count
        )
    for a in audits:
        by_retailer.setdefault(a.retailer_id, {"files": {}})["last_audit"] = {
            "business_date": a.business_date.isoformat(),
            "consistent": a.consistent,
            "differences": a.differences,
            "audited_at": a.created_at.isoformat(),
        }
    report = {
        "retailers": by_retailer,
        "retailers_files": [
            {
                "file": c.source,
                "valid": c.valid,
                "error": c.error,
                "invalid_since": c.invalid_since.isoformat() if c.invalid_since else None,
                "in_use_sha256": c.in_use_sha256,
                "in_use_loaded_at": c.in_use_loaded_at.isoformat() if c.in_use_loaded_at else None,
                "checked_at": c.checked_at.isoformat(),
                "checked_by": c.checked_by,
            }
            for c in checks
        ],
        "dead_letters": dead,
        "recent_failures": [
            {
                "retailer": x.retailer_id,
                "file": x.file_name,
                "failed_at": x.finished_at.isoformat() if x.finished_at else None,
                "reason": x.error,
            }
            for x in failures
        ],
    }
    if args.json:
        print(json.dumps(report))
        return 0
    table = Table(title="retailers")
    for col in ("retailer", "last scan", "files by status", "pending (oldest)", "unmoved", "not taken", "follow-ups"):
        table.add_column(col, overflow="fold")
    for retailer, info in sorted(by_retailer.items()):
        scan = info.get("last_scan")
        scan_text = (
            (
                f"{scan['age_s']:.0f}s ago by {scan['requested_by']}: {scan['dispatched']} sent"
                + (f" [red]{scan['error']}[/red]" if scan["error"] else "")
                + (f" ({scan['note']})" if scan["note"] else "")
            )
            if scan
            else "never"
        )
        waiting = info.get("pending")
        pending_text = f"{waiting['files']} ({waiting['oldest_age_s']:.0f}s)" if waiting else "0"
        files_text = ", ".join(f"{k} {v}" for k, v in sorted(info["files"].items()))
        follow = ", ".join(f"{k} {v}" for k, v in sorted(info.get("followups", {}).items()))
        stuck = info.get("unmoved")
        unmoved_text = (
            f"[red]{stuck['files']} (oldest {stuck['oldest_age_s']:.0f}s)[/red]"
            + (f": {stuck['last_error']}" if stuck["last_error"] else "")
            if stuck
            else "0"
        )
        listing = info.get("listing")
        not_taken = (
            ", ".join(
                part
                for part in (
                    f"too young {listing['too_young']}" if listing["too_young"] else "",
                    f"oldest {listing['oldest_too_young_s']:.0f}s" if listing["oldest_too_young_s"] is not None else "",
                    f"ignored {listing['ignored']} (not regular files)" if listing["ignored"] else "",
                )
                if part
            )
            or "0"
            if listing
            else ""
        )
        table.add_row(retailer, scan_text, files_text, pending_text, unmoved_text, not_taken, follow)
    console.print(table)
    for retailer, info in sorted(by_retailer.items()):
        audit = info.get("last_audit")
        if audit:
            verdict = (
                "[green]consistent[/green]"
                if audit["consistent"]
                else f"[red]NOT consistent: {audit['differences']} difference(s)[/red]"
                f" (tlogsync audit {escape(retailer)} --date {audit['business_date']})"
            )
            console.print(f"last audit of {escape(retailer)}: {audit['business_date']}, {verdict}")
    for c in checks:
        if c.valid:
            console.print(f"retailers file {escape(c.source)}: valid (sha256 {(c.sha256 or '')[:12]})")
            continue
        since = f"{(now - c.invalid_since).total_seconds():.0f}s" if c.invalid_since else "?"
        using = f"sha256 {c.in_use_sha256[:12]}" if c.in_use_sha256 else "none"
        console.print(
            f"[red]retailers file {escape(c.source)}: INVALID for {since}: {escape(c.error or '')}[/red]\n"
            f"[red]  the processes use the last valid configuration ({using}) until it is fixed[/red]"
        )
    if dead is None:
        console.print("[red]dead letters: the broker did not answer[/red]")
    else:
        console.print("dead letters: " + ", ".join(f"{q}.dead {n}" for q, n in dead.items()))
    if failures:
        failed = Table(title=f"recent failures (last {args.failures})")
        for col in ("retailer", "file", "failed at", "reason"):
            failed.add_column(col, overflow="fold")
        for x in failures:
            failed.add_row(x.retailer_id, x.file_name, str(x.finished_at), x.error or "")
        console.print(failed)
    return 0


@click.command("metrics", help="Serve the Prometheus metrics (business metrics per retailer) over HTTP.")
@option("--port", type=click.IntRange(0, 65535), default=9808, help="TCP port to listen on.")
@option("--address", default="0.0.0.0", help="Address to listen on (a scrape target).")  # noqa: S104
@with_settings
def cmd_metrics(settings: Settings, args: argparse.Namespace) -> int:
    from worker.monitoring.metrics import serve

    serve(args.port, args.address)
    return 0
