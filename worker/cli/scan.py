"""`tlogsync scan` and `tlogsync replay-file`, with their waits."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import click

from worker.adapters.postgres.readmodel import PgReadModel
from worker.app.settings import Settings
from worker.cli.common import (
    console,
    database,
    error,
    known_retailer,
    option,
    retailer_argument,
    stderr_console,
    with_settings,
)
from worker.services.ports import FINAL_STATUSES


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


@click.command("scan", help="Enqueue a scan of RETAILER's SFTP folders now (and optionally wait for its files).")
@retailer_argument
@option("--wait", is_flag=True, help="Block until every file the scan saw is final.")
@option("--timeout", type=click.FloatRange(min=0), default=300.0, help="Seconds to wait with --wait.")
@option("--json", is_flag=True, help="With --wait: print the outcome as JSON on stdout.")
@with_settings
def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    known_retailer(settings, args.retailer)
    from tasks.scan import scan_retailer

    scan_id = f"cli-{uuid.uuid4()}"
    scan_retailer.apply_async((args.retailer,), {"scan_id": scan_id, "requested_by": "cli"})
    (stderr_console if args.json else console).print(f"scan {scan_id} enqueued for {args.retailer}")
    if not args.wait:
        return 0
    with database(settings) as db, db.bound():
        outcome = wait_for_scan(PgReadModel(db), scan_id, args.timeout)
    if args.json:
        print(json.dumps(outcome))
    else:
        console.print(outcome)
    if "timeout" in outcome or "error" in outcome or "busy" in outcome:
        return 1
    return 0


@click.command("replay-file", help="Reprocess FILE, fixed in RETAILER's error_dir, through the normal path.")
@retailer_argument
@click.argument("file")
@option("--variance", is_flag=True, help="The file belongs to the variance feed.")
@option("--fulfillment", is_flag=True, help="The file belongs to the fulfilment feed.")
@option("--wait", is_flag=True, help="Block until the file is final again.")
@option("--timeout", type=click.FloatRange(min=0), default=120.0, help="Seconds to wait with --wait.")
@with_settings
def cmd_replay_file(settings: Settings, args: argparse.Namespace) -> int:
    """Reprocess a fixed file from error_dir through the normal path (here: claim and move; a worker ingests)."""
    from tasks.ingest import ingest_tlog
    from tasks.routing import apply_variance_file
    from worker.adapters.postgres.ledger import PgFileLedger
    from worker.adapters.sftp import SftpSource
    from worker.services.feeds import fulfillment_feed, orders_feed, variance_feed
    from worker.services.replay import ReplayRefused, replay_file

    retailer = known_retailer(settings, args.retailer)
    feed = (
        fulfillment_feed(retailer)
        if args.fulfillment
        else variance_feed(retailer)
        if args.variance
        else orders_feed(retailer)
    )
    if feed is None:
        error(f"{args.retailer} has no {'fulfilment' if args.fulfillment else 'variance'} feed")
        return 2
    source = SftpSource(retailer.sftp, settings.sftp_timeout_seconds)
    with database(settings) as db:
        try:
            row = replay_file(retailer.retailer_id, feed, args.file, source, PgFileLedger(db))
        except ReplayRefused as exc:
            error(str(exc))
            return 1
        finally:
            source.close()
        task = apply_variance_file if args.variance else ingest_tlog
        if args.fulfillment:
            from tasks.lifecycle import apply_fulfillment_file

            task = apply_fulfillment_file
        task.apply_async((retailer.retailer_id, row.id, row.file_name))
        console.print(f"{args.file}: back in {feed.directory} as ledger row {row.id}; ingest enqueued")
        if not args.wait:
            return 0
        outcome = _wait_files(PgReadModel(db), [row.id], args.timeout)
    console.print(outcome)
    return 1 if "timeout" in outcome else 0
