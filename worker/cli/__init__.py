"""The `tlogsync` command line: migrate, retailers, scan, status, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import psycopg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from worker.adapters.postgres.config import PgConfigSnapshots
from worker.adapters.postgres.pool import open_pool
from worker.adapters.postgres.readmodel import PgReadModel
from worker.app.settings import FlowerSettings, Settings, SettingsError
from worker.core.errors import UnknownRetailer
from worker.core.retailers import ConfigError, Retailer
from worker.services.config import RetailersConfig
from worker.services.ports import FINAL_STATUSES

# Piped output (logs, CI, scripts) gets wide tables instead of 80 columns of folded text.
console = Console(width=None if sys.stdout.isatty() else 160)
stderr_console = Console(
    stderr=True, width=None if sys.stderr.isatty() else 160
)  # warnings that must not mix with --json


def retailers_in_force(settings: Settings) -> dict[str, Retailer]:
    """The retailers file; while it is invalid (said on stderr), the last valid configuration the workers stored.
    Read only: while the file is valid, no database is needed."""
    config = RetailersConfig(settings.retailers_path, PgConfigSnapshots(settings.database_url), record=False)
    retailers = config.current()
    if config.error:
        stored = config.fallback
        using = "the last valid configuration"
        if stored:
            using += f" (sha256 {stored.sha256[:12]}, loaded {stored.loaded_at:%Y-%m-%d %H:%M:%S %Z})"
        stderr_console.print(f"[red]tlogsync: {escape(config.error)}\nusing {using} until the file is fixed[/red]")
    return retailers


def known_retailer(settings: Settings, retailer_id: str) -> Retailer:
    """The named retailer of the retailers in force; UnknownRetailer (exit 2, naming the known ones) if absent."""
    retailers = retailers_in_force(settings)
    if retailer_id not in retailers:
        raise UnknownRetailer(f"unknown retailer {retailer_id!r}; known: {', '.join(retailers)}")
    return retailers[retailer_id]


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.adapters.postgres.migrate import ensure_database, migrate

    if args.create_db and ensure_database(settings.database_url):
        console.print(f"created database for {redact(settings.database_url)}")
    applied = migrate(settings.database_url)
    console.print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


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


def wait_for_scan(reads: PgReadModel, scan_id: str, timeout: float, poll: float = 0.2) -> dict[str, Any]:
    """Block until the scan ran and every file it saw is final; returns counts per status."""
    deadline = time.monotonic() + timeout
    while True:
        run = reads.scan_run(scan_id)
        if run is not None and run.error and not run.will_retry:
            return {"error": run.error}
        if run is not None and run.note:
            return {"busy": run.note}  # it gave up at once: the scan that is running does the work
        if run is not None and not run.error:
            break
        if time.monotonic() > deadline:
            return {"timeout": "the scan did not run in time (is a worker consuming tlog.scan?)"}
        time.sleep(poll)
    return _wait_files(reads, list(run.pending_ids), max(0.0, deadline - time.monotonic()), poll)


def _wait_files(reads: PgReadModel, ids: list[int], timeout: float, poll: float = 0.2) -> dict[str, Any]:
    """Block until every ledger row in ids is final and moved; counts per status."""
    deadline = time.monotonic() + timeout
    while True:
        rows = reads.files_progress(ids)
        final = sum(row.moved for row in rows if row.status in FINAL_STATUSES)
        counts = {row.status: row.files for row in rows}
        if final == len(ids):
            return {"files": len(ids), "statuses": counts}
        if time.monotonic() > deadline:
            return {"timeout": f"{len(ids) - final} of {len(ids)} files not final", "statuses": counts}
        time.sleep(poll)


def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    known_retailer(settings, args.retailer)
    from tasks.scan import scan_retailer

    scan_id = f"cli-{uuid.uuid4()}"
    scan_retailer.apply_async((args.retailer,), {"scan_id": scan_id, "requested_by": "cli"})
    console.print(f"scan {scan_id} enqueued for {args.retailer}")
    if not args.wait:
        return 0
    with open_pool(settings.database_url) as db, db.bound():
        outcome = wait_for_scan(PgReadModel(db), scan_id, args.timeout)
    if args.json:
        print(json.dumps(outcome))
    else:
        console.print(outcome)
    if "timeout" in outcome or "error" in outcome or "busy" in outcome:
        return 1
    return 0


def _dead_letter_depths() -> dict[str, int] | None:
    from worker.adapters import queues
    from worker.celery import app

    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            return {q: queues.dead_queue(q)(channel).queue_declare(passive=True)[1] for q in queues.WORK_QUEUES}
    except Exception:  # noqa: BLE001 - the broker being down is itself shown
        return None


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """The operator's one screen: per retailer the last scan, files by status, the oldest pending file,
    follow-ups, dead letters and recent failures with their reasons."""
    with open_pool(settings.database_url) as db, db.bound():
        reads = PgReadModel(db)
        files = reads.files_by_status()
        pending = reads.pending_files()
        scans = reads.last_scans()
        unmoved = reads.unmoved_files()
        leftovers = reads.listing_leftovers()
        failures = reads.recent_failures(args.failures)
        followups = reads.followups()
        checks = reads.config_checks()
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


def cmd_metrics(settings: Settings, args: argparse.Namespace) -> int:
    from worker.monitoring.metrics import serve

    serve(args.port, args.address)
    return 0


def cmd_flower(settings: Settings, args: argparse.Namespace) -> int:
    """Flower with basic auth from the environment, persistent state and the RabbitMQ management API."""
    import ipaddress
    import os

    flower = FlowerSettings.from_env()
    env = dict(os.environ)  # Flower inherits our environment (and reads its own FLOWER_* options from it)
    if flower.user and flower.password:
        env["FLOWER_BASIC_AUTH"] = f"{flower.user}:{flower.password}"  # by environment: never on the command line
    elif args.insecure_local:
        try:
            loopback = ipaddress.ip_address(args.address).is_loopback
        except ValueError:
            loopback = args.address == "localhost"
        if not loopback:
            console.print("[red]--insecure-local only listens on a loopback address[/red]")
            return 2
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
    else:
        console.print("[red]set FLOWER_USER and FLOWER_PASSWORD (or --insecure-local on 127.0.0.1)[/red]")
        return 2
    cmd = [
        sys.executable,
        "-m",
        "worker.monitoring.flower",
        f"--port={args.port}",
        f"--address={args.address}",
        "--persistent=True",
        f"--db={args.db}",
        "--purge_offline_workers=300",
    ]
    if flower.broker_api:
        env["FLOWER_BROKER_API"] = flower.broker_api  # it holds RabbitMQ's password: not on the command line
    # Flower would otherwise broadcast enable_events every 5 s, turning task events on in every worker started
    # without -E (one more publish per task state): that is the operator's choice, made with -E or here.
    env["FLOWER_ENABLE_EVENTS"] = "true" if args.enable_events else "false"
    os.execve(sys.executable, cmd, env)  # noqa: S606 - become Flower, no shell involved
    return 0  # not reached


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


def cmd_replay_file(settings: Settings, args: argparse.Namespace) -> int:
    """Reprocess a fixed file from error_dir through the normal path (here: claim and move; a worker ingests)."""
    from tasks.ingest import ingest_tlog
    from tasks.routing import apply_variance_file
    from worker.adapters.postgres.ledger import PgFileLedger
    from worker.adapters.sftp import SftpSource
    from worker.services.feeds import orders_feed, variance_feed
    from worker.services.replay import ReplayRefused, replay_file

    retailer = known_retailer(settings, args.retailer)
    feed = variance_feed(retailer) if args.variance else orders_feed(retailer)
    if feed is None:
        console.print(f"[red]{args.retailer} has no variance feed[/red]")
        return 2
    source = SftpSource(retailer.sftp, settings.sftp_timeout_seconds)
    with open_pool(settings.database_url) as db:
        try:
            row = replay_file(retailer.retailer_id, feed, args.file, source, PgFileLedger(db))
        except ReplayRefused as exc:
            console.print(f"[red]{exc}[/red]")
            return 1
        finally:
            source.close()
        task = apply_variance_file if args.variance else ingest_tlog
        task.apply_async((retailer.retailer_id, row.id, row.file_name))
        console.print(f"{args.file}: back in {feed.directory} as ledger row {row.id}; ingest enqueued")
        if not args.wait:
            return 0
        outcome = _wait_files(PgReadModel(db), [row.id], args.timeout)
    console.print(outcome)
    return 1 if "timeout" in outcome else 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """The daily audit on demand, optionally reconciled against the ERP's export."""
    from datetime import date

    from worker.adapters.postgres.audit import PgAudit
    from worker.adapters.sftp import SftpSource
    from worker.core.audit import ErpFileError, parse_erp_csv, reconcile
    from worker.core.money import cents
    from worker.services.audit import run_audit

    retailer = known_retailer(settings, args.retailer)
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        console.print(f"[red]--date {args.date!r}: expected YYYY-MM-DD[/red]")
        return 2
    erp = None
    if args.compare:
        try:
            erp = parse_erp_csv(open(args.compare, encoding="utf-8").read())  # noqa: SIM115
        except (OSError, ErpFileError) as exc:
            console.print(f"[red]{args.compare}: {exc}[/red]")
            return 2
    source = SftpSource(retailer.sftp, settings.sftp_timeout_seconds) if retailer.sftp.audit_dir and args.sftp else None
    try:
        with open_pool(settings.database_url) as db:
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


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from worker.demo.run import run_demo

    return run_demo(files=args.files, timeout=args.timeout)


def redact(dsn: str) -> str:
    """A connection string fit for a log: the password replaced."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable connection string)"
    if info.get("password"):
        info["password"] = "***"  # noqa: S105 - the mask, not a password
    return psycopg.conninfo.make_conninfo("", **info)


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
