"""`tlogsync scan` and `tlogsync replay-file`, with their waits."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from contextlib import ExitStack
from typing import Any, TextIO

import click

from worker.adapters.postgres.readmodel import PgReadModel
from worker.app.settings import Settings
from worker.cli.common import (
    LOOK,
    OK,
    USAGE,
    console,
    database,
    error,
    known_retailer,
    option,
    retailer_argument,
    stderr_console,
    with_settings,
)
from worker.services.ports import FAILED, FINAL_STATUSES


class WaitProgress:
    """How a wait shows its progress on stderr (stdout stays for the outcome, JSON with --json): files final of
    those dispatched, the files deferred by the in-flight cap, the rate and the time left. On a terminal one line
    rewritten in place; elsewhere (a log, CI) a line every `every` seconds and at the end."""

    def __init__(self, label: str, stream: TextIO | None = None, every: float = 5.0, quiet: bool = False):
        self.label, self.stream, self.every, self.quiet = label, stream or sys.stderr, every, quiet
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._first_final: int | None = None
        self._shown_at: float | None = None
        self._last = ""

    def line(self, final: int, total: int, deferred: int = 0, failed: int = 0) -> str:
        elapsed = time.monotonic() - self.started
        if self._first_final is None:
            self._first_final = final  # files final before the wait began say nothing about the rate
        done_here = final - self._first_final
        rate = done_here / elapsed if elapsed > 0 else 0.0
        parts = [f"{final}/{total} final", f"{total} dispatched"]
        if deferred:
            parts.append(f"{deferred} deferred (in-flight cap)")
        if failed:
            parts.append(f"{failed} failed")
        parts.append(f"{rate:.1f} files/s")
        if final < total:
            parts.append(f"ETA {_duration((total - final) / rate)}" if rate > 0 else "ETA ?")
        return f"{self.label}: " + ", ".join(parts)

    def show(self, final: int, total: int, deferred: int = 0, failed: int = 0, force: bool = False) -> None:
        text = self.line(final, total, deferred, failed)
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + text.ljust(len(self._last)))
            self.stream.flush()
        elif force or self._shown_at is None or now - self._shown_at >= self.every:
            if text != self._last or force:
                self.stream.write(text + "\n")
                self.stream.flush()
            self._shown_at = now
        self._last = text

    def note(self, text: str) -> None:
        """A line of its own (a scan's state), not overwritten."""
        if self.quiet:
            return
        if self.tty and self._last:
            self.stream.write("\n")
            self._last = ""
        self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._last = ""


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def wait_for_scan(
    reads: PgReadModel, scan_id: str, timeout: float, poll: float = 0.2, progress: WaitProgress | None = None
) -> dict[str, Any]:
    """Block until the scan ran and every file it dispatched is final and moved. The outcome: files and their
    counts per status, and `deferred` when the in-flight cap left new files in the folder; or why not
    (`error`, `busy`, `timeout`)."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        run = reads.scan_run(scan_id)
        if run is not None and run.error and not run.will_retry:
            return {"error": run.error}
        if run is not None and run.note:
            return {"busy": run.note}  # it gave up at once: the scan that is running does the work
        if run is not None and not run.error:
            break
        if run is not None and run.error and progress is not None and not announced:
            progress.note(f"the scan failed and will be retried: {run.error}")
            announced = True
        if time.monotonic() > deadline:
            return {"timeout": "the scan did not run in time (is a worker consuming tlog.scan?)"}
        time.sleep(poll)
    if progress is not None:
        progress.note(
            f"listed {run.listed} entries, dispatched {run.dispatched}"
            + (f", deferred {run.deferred} (in-flight cap reached)" if run.deferred else "")
        )
    outcome = wait_for_files(
        reads, list(run.pending_ids), max(0.0, deadline - time.monotonic()), poll, progress, run.deferred
    )
    if run.deferred:
        outcome["deferred"] = run.deferred
    return outcome


def wait_for_files(
    reads: PgReadModel,
    ids: list[int],
    timeout: float,
    poll: float = 0.2,
    progress: WaitProgress | None = None,
    deferred: int = 0,
) -> dict[str, Any]:
    """Block until every ledger row in ids is final and moved; counts per status."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            rows = reads.files_progress(ids)
            final = sum(row.moved for row in rows if row.status in FINAL_STATUSES)
            counts = {row.status: row.files for row in rows}
            if progress is not None:
                progress.show(final, len(ids), deferred, counts.get(FAILED, 0), force=final == len(ids))
            if final == len(ids):
                return {"files": len(ids), "statuses": counts}
            if time.monotonic() > deadline:
                return {"timeout": f"{len(ids) - final} of {len(ids)} files not final", "statuses": counts}
            time.sleep(poll)
    finally:
        if progress is not None:
            progress.close()


def merge_outcomes(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The outcome of several scans of one wait (--drain): files and statuses added up, the last one's state."""
    if len(outcomes) == 1:
        return outcomes[0]
    merged: dict[str, Any] = {"files": 0, "statuses": {}}
    for outcome in outcomes:
        merged["files"] += outcome.get("files", 0)
        for status, count in outcome.get("statuses", {}).items():
            merged["statuses"][status] = merged["statuses"].get(status, 0) + count
    last = outcomes[-1]
    for key in ("deferred", "timeout", "error", "busy"):
        if key in last:
            merged[key] = last[key]
    merged["scans"] = len(outcomes)
    return merged


def scan_exit_code(outcome: dict[str, Any]) -> int:
    """0: the scan ran and every file it took is final (failed files are a result, counted; `tlogsync status`
    says why each failed). 1: something to look at: the scan failed or gave way to a running one, the wait
    timed out, or the in-flight cap left files in the folder that this wait does not cover."""
    if any(key in outcome for key in ("timeout", "error", "busy", "deferred")):
        return LOOK
    return OK


def scan_and_wait(
    settings: Settings,
    retailer_id: str,
    wait: bool,
    timeout: float,
    as_json: bool = False,
    drain: bool = False,
    quiet: bool = False,
) -> int:
    """`tlogsync scan`: enqueue a scan; with wait, follow it (progress on stderr) and print its outcome on stdout,
    JSON alone with as_json; with drain, scan again while the in-flight cap left files behind. The exit code."""
    from tasks.scan import scan_retailer

    known_retailer(settings, retailer_id)
    deadline = time.monotonic() + timeout
    outcomes: list[dict[str, Any]] = []
    with ExitStack() as stack:
        reads: PgReadModel | None = None
        while True:
            scan_id = f"cli-{uuid.uuid4()}"
            scan_retailer.apply_async((retailer_id,), {"scan_id": scan_id, "requested_by": "cli"})
            enqueued = f"scan {scan_id} enqueued for {retailer_id}"
            if not wait:  # that is the command's outcome: on stdout
                if as_json:
                    print(json.dumps({"scan_id": scan_id, "retailer": retailer_id}))
                else:
                    console.print(enqueued, highlight=False)
                return OK
            stderr_console.print(enqueued, highlight=False)  # progress of a wait: on stderr
            if reads is None:
                db = stack.enter_context(database(settings))
                stack.enter_context(db.bound())
                reads = PgReadModel(db)
            progress = WaitProgress(f"scan {retailer_id}", quiet=quiet)
            outcome = wait_for_scan(reads, scan_id, max(0.0, deadline - time.monotonic()), progress=progress)
            outcomes.append(outcome)
            if not (drain and "deferred" in outcome and set(outcome) <= {"files", "statuses", "deferred"}):
                break
            if time.monotonic() >= deadline:
                break
    outcome = merge_outcomes(outcomes)
    _report_scan(outcome, retailer_id, settings, as_json)
    return scan_exit_code(outcome)


def _report_scan(outcome: dict[str, Any], retailer_id: str, settings: Settings, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome))
    else:  # as it always printed it: scripts read it
        console.print(outcome)
    failed = outcome.get("statuses", {}).get(FAILED, 0)
    if failed:
        stderr_console.print(f"{failed} file(s) failed: `tlogsync status` shows why", highlight=False)
    if "deferred" in outcome:
        error(
            f"{outcome['deferred']} new file(s) of {retailer_id} held back by the in-flight cap"
            f" (TLOGSYNC_MAX_IN_FLIGHT={settings.max_in_flight_per_retailer}): the next scans take them"
            " (--drain waits for them too)"
        )
    for key in ("error", "busy", "timeout"):
        if key in outcome:
            error(f"scan {retailer_id}: {outcome[key]}")


def replay_and_wait(
    settings: Settings,
    retailer_id: str,
    file: str,
    variance: bool,
    wait: bool,
    timeout: float,
    as_json: bool = False,
    quiet: bool = False,
    fulfillment: bool = False,
) -> int:
    """`tlogsync replay-file`: claim the fixed file again and enqueue its ingest; with wait, follow it and exit 1
    when it fails again (its reason on stderr) or is not final in time. The exit code."""
    from tasks.ingest import ingest_tlog
    from tasks.routing import apply_variance_file
    from worker.adapters.postgres.ledger import PgFileLedger
    from worker.adapters.sftp import SftpSource
    from worker.services.feeds import fulfillment_feed, orders_feed, variance_feed
    from worker.services.replay import ReplayRefused, replay_file

    retailer = known_retailer(settings, retailer_id)
    feed = fulfillment_feed(retailer) if fulfillment else variance_feed(retailer) if variance else orders_feed(retailer)
    if feed is None:
        error(f"{retailer_id} has no {'fulfilment' if fulfillment else 'variance'} feed")
        return USAGE
    source = SftpSource(retailer.sftp, settings.sftp_timeout_seconds)
    with database(settings) as db:
        try:
            row = replay_file(retailer.retailer_id, feed, file, source, PgFileLedger(db))
        except ReplayRefused as exc:
            error(str(exc))
            return LOOK
        finally:
            source.close()
        task = apply_variance_file if variance else ingest_tlog
        if fulfillment:
            from tasks.lifecycle import apply_fulfillment_file

            task = apply_fulfillment_file
        task.apply_async((retailer.retailer_id, row.id, row.file_name))
        stderr_console.print(
            f"{file}: back in {feed.directory} as ledger row {row.id}; ingest enqueued", highlight=False
        )
        if not wait:
            if as_json:
                print(json.dumps({"file": file, "ledger_id": row.id, "enqueued": True}))
            return OK
        with db.bound():
            reads = PgReadModel(db)
            outcome = wait_for_files(reads, [row.id], timeout, progress=WaitProgress(f"replay {file}", quiet=quiet))
            final = reads.file_outcome(row.id)
    result: dict[str, Any] = {"file": file, "ledger_id": row.id, **outcome}
    if final is not None and "timeout" not in outcome:
        result["status"] = final.status
        if final.error:
            result["error"] = final.error
    if as_json:
        print(json.dumps(result))
    else:
        console.print(
            f"{file}: {result.get('status', 'not final')}" + (f": {result['error']}" if "error" in result else ""),
            highlight=False,
            soft_wrap=True,
        )
    if "timeout" in outcome:
        error(f"replay {file}: {outcome['timeout']} after {timeout:g}s")
        return LOOK
    if result.get("status") == FAILED:
        error(f"replay {file}: failed again: {result.get('error') or 'see tlogsync status'}")
        return LOOK
    return OK


@click.command("scan", help="Enqueue a scan of RETAILER's SFTP folders now (and optionally wait for its files).")
@retailer_argument
@option("--wait", is_flag=True, help="Block until every file the scan dispatched is final; progress on stderr.")
@option("--timeout", type=click.FloatRange(min=0), default=300.0, help="Seconds to wait with --wait.")
@option("--json", is_flag=True, help="With --wait: print the outcome as JSON on stdout (and nothing else there).")
@option(
    "--drain",
    is_flag=True,
    help="With --wait: while the in-flight cap left new files in the folder, scan again and wait for those too.",
)
@option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@with_settings
def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    return scan_and_wait(
        settings, args.retailer, args.wait, args.timeout, as_json=args.json, drain=args.drain, quiet=args.quiet
    )


@click.command("replay-file", help="Reprocess FILE, fixed in RETAILER's error_dir, through the normal path.")
@retailer_argument
@click.argument("file")
@option("--variance", is_flag=True, help="The file belongs to the variance feed.")
@option("--fulfillment", is_flag=True, help="The file belongs to the fulfilment feed.")
@option("--wait", is_flag=True, help="Block until the file is final again; exit 1 if it failed again.")
@option("--timeout", type=click.FloatRange(min=0), default=120.0, help="Seconds to wait with --wait.")
@option("--json", is_flag=True, help="Print the outcome as JSON on stdout (and nothing else there).")
@option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@with_settings
def cmd_replay_file(settings: Settings, args: argparse.Namespace) -> int:
    """Reprocess a fixed file from error_dir through the normal path (here: claim and move; a worker ingests)."""
    return replay_and_wait(
        settings,
        args.retailer,
        args.file,
        args.variance,
        args.wait,
        args.timeout,
        as_json=args.json,
        quiet=args.quiet,
        fulfillment=args.fulfillment,
    )
