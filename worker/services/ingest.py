"""The ingestion use cases: scan a retailer's folder, ingest one claimed file, finish its move."""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.core.errors import FileMissing, FileTooLarge, GaveUp, NotFound
from worker.core.inventory import InputError, parse_variance_file
from worker.core.oms import to_order
from worker.core.retailers import Retailer
from worker.core.returns import has_both, is_return, to_return
from worker.core.routing import followups_for
from worker.core.tlog import TLogError, decode, validate_sale
from worker.services.ports import (
    CLAIMED,
    DUPLICATE,
    FAILED,
    PROCESSED,
    SKIPPED,
    Claim,
    FileSource,
    Ledger,
    LedgerRow,
    Outcome,
    RemoteFile,
)

ORDERS_FEED, VARIANCE_FEED = "orders", "variance"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ ()+=@,-]{0,254}$")


@dataclass(frozen=True)
class Feed:
    """One inbound folder of a retailer and where its files go afterwards."""

    name: str
    directory: str
    archive_dir: str
    error_dir: str
    pattern: str
    min_age_seconds: float


def orders_feed(retailer: Retailer) -> Feed:
    s = retailer.sftp
    return Feed(ORDERS_FEED, s.orders_dir, s.archive_dir, s.error_dir, s.pattern, s.min_age_seconds)


def variance_feed(retailer: Retailer) -> Feed | None:
    """The retailer's inventory variance feed, or None when it has none (no variance_dir)."""
    s = retailer.sftp
    if not s.variance_dir or not s.variance_archive_dir or not s.variance_error_dir:
        return None
    return Feed(VARIANCE_FEED, s.variance_dir, s.variance_archive_dir, s.variance_error_dir, s.variance_pattern,
                s.min_age_seconds)


def feeds(retailer: Retailer) -> list[Feed]:
    """Every feed a scan of this retailer covers."""
    return [orders_feed(retailer)] + [f for f in (variance_feed(retailer),) if f is not None]


def unsafe_name_reason(name: str) -> str | None:
    """Why a remote file name cannot be trusted in a path, or None when it can."""
    if "/" in name or "\\" in name or "\x00" in name:
        return "file name contains a path separator or NUL"
    if name in (".", "..") or name.startswith(".."):
        return "file name is a relative path component"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "file name contains control characters"
    if not SAFE_NAME.match(name):
        return "file name has characters outside letters, digits and ._ ()+=@,-"
    return None


def safe_local_name(name: str) -> str:
    """A name safe to use as a path component anywhere: unsafe characters become '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "unnamed"
    return cleaned[:200]


def join(directory: str, name: str) -> str:
    """Join a trusted directory and a file name that must stay inside it."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"refusing to join {name!r}: not a plain file name")
    return posixpath.join(directory, name)


# ---------------------------------------------------------------- scan


@dataclass(frozen=True)
class ScanPlan:
    claims: tuple[Claim, ...]
    reclaims: tuple[LedgerRow, ...]  # failed files uploaded again under the same name: read again
    redispatch: tuple[int, ...]  # ledger ids whose ingest message is sent again
    watch: tuple[int, ...]  # ledger ids already in flight from an earlier dispatch
    deferred: int  # new files left for a later scan because of the in-flight cap


@dataclass
class ScanResult:
    retailer_id: str
    feed: str
    listed: int = 0
    too_young: int = 0
    ignored: int = 0
    dispatch: list[tuple[int, str]] = field(default_factory=list)  # (ledger id, file name) to send now
    watch: list[int] = field(default_factory=list)
    deferred: int = 0
    busy: bool = False

    def merge(self, other: ScanResult) -> ScanResult:
        """One scan run's totals over several feeds."""
        return ScanResult(self.retailer_id, f"{self.feed}+{other.feed}", self.listed + other.listed,
                          self.too_young + other.too_young, self.ignored + other.ignored,
                          self.dispatch + other.dispatch, self.watch + other.watch, self.deferred + other.deferred)

    @property
    def pending_ids(self) -> list[int]:
        """Every ledger id this scan saw unfinished: what `scan --wait` waits for."""
        return [file_id for file_id, _ in self.dispatch] + self.watch


def select_candidates(entries: Sequence[RemoteFile], pattern: str, min_age_seconds: float,
                      listed_at: float) -> tuple[list[RemoteFile], int, int]:
    """Regular files matching the pattern and old enough, oldest first; plus the too-young and ignored counts."""
    candidates, young, ignored = [], 0, 0
    for entry in entries:
        if not entry.is_file or not fnmatch.fnmatchcase(entry.name, pattern):
            ignored += 1
        elif listed_at - entry.mtime < min_age_seconds:
            young += 1  # a writer may still be appending: its mtime keeps moving
        else:
            candidates.append(entry)
    candidates.sort(key=lambda e: (e.mtime, e.name))
    return candidates, young, ignored


def plan_claims(candidates: Sequence[RemoteFile], latest: dict[str, LedgerRow], feed: Feed,
                listed_at: datetime, in_flight: int, max_in_flight: int,
                redispatch_after: timedelta) -> ScanPlan:
    """Decide, for each listed file, whether to claim it, send it again, or only watch it."""
    claims: list[Claim] = []
    reclaims: list[LedgerRow] = []
    redispatch: list[int] = []
    watch: list[int] = []
    budget = max(0, max_in_flight - in_flight)
    deferred = 0
    for entry in candidates:
        row = latest.get(entry.name)
        path = join(feed.directory, entry.name)
        if row is None:
            if len(claims) >= budget:
                deferred += 1
                continue
            claims.append(Claim(entry.name, path, entry.size, entry.mtime))
        elif row.status == CLAIMED:
            stale = row.dispatched_at is None or listed_at - row.dispatched_at >= redispatch_after
            (redispatch if stale else watch).append(row.id)
        elif row.moved_at is None:
            # Final in the ledger but still in the folder: normally its ingest is moving it right now; only
            # when that has not happened for a while is the move lost, and ingest is sent to finish it.
            if row.finished_at is None or listed_at - row.finished_at >= redispatch_after:
                redispatch.append(row.id)
            else:
                watch.append(row.id)
        elif row.moved_at < listed_at and row.status == FAILED:
            reclaims.append(row)  # someone fixed a failed file and uploaded it again: read it again
        elif row.moved_at < listed_at:
            claims.append(Claim(entry.name, path, entry.size, entry.mtime, DUPLICATE,
                                f"file name already processed as ledger row {row.id} ({row.status}); not imported"))
        # else: our listing predates the move, the file is gone already
    return ScanPlan(tuple(claims), tuple(reclaims), tuple(redispatch), tuple(watch), deferred)


def scan_feed(retailer: Retailer, feed: Feed, source: FileSource, ledger: Ledger,
              max_in_flight: int, redispatch_after: timedelta) -> ScanResult:
    """List a feed's folder and claim what is new, under the per-retailer scan lock."""
    result = ScanResult(retailer.retailer_id, feed.name)
    listed_at = ledger.now()
    entries = source.list(feed.directory)
    result.listed = len(entries)
    candidates, result.too_young, result.ignored = select_candidates(
        entries, feed.pattern, feed.min_age_seconds, listed_at.timestamp())
    if not candidates:
        return result
    with ledger.scan_transaction(retailer.retailer_id, feed.name) as tx:
        latest = tx.latest_rows([c.name for c in candidates])
        plan = plan_claims(candidates, latest, feed, listed_at, tx.in_flight(), max_in_flight, redispatch_after)
        inserted = tx.claim(plan.claims)
        inserted += [tx.claim_again(old, old.remote_path) for old in plan.reclaims]
        send = [(row.id, row.file_name) for row in inserted]
        by_id = {row.id: row for row in latest.values()}
        send += [(file_id, by_id[file_id].file_name) for file_id in plan.redispatch]
        tx.mark_dispatched([file_id for file_id, _ in send])
    result.dispatch = send
    result.watch = list(plan.watch)
    result.deferred = plan.deferred
    return result


# ---------------------------------------------------------------- ingest


@dataclass(frozen=True)
class IngestResult:
    file_id: int
    file_name: str
    status: str
    error: str | None = None
    order_id: int | None = None
    order_type: str | None = None
    moved_to: str | None = None
    followups: tuple[str, ...] = ()  # to publish now that the order is committed
    records_applied: int | None = None
    records_rejected: int | None = None


class ReplayRefused(Exception):
    """replay-file cannot take this file (not failed, not in error_dir, unsafe name)."""


class UnknownFile(NotFound):
    """The ledger has no such row: the message does not belong to this database."""


def decide(data: bytes, retailer: Retailer) -> Outcome:
    """Pure: what a TLog file's bytes become (an order to store, a skip or a failure)."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        document = decode(data)
        if has_both(document):
            raise TLogError("orderProductList and returnProductList both hold items; an exchange comes as a sale"
                            " file and a return file", str(document.get("orderId")))
        if is_return(document):
            ret = to_return(document, retailer)
            return Outcome(PROCESSED, digest, len(data), ret=ret, restock=retailer.order_master)
        sale = validate_sale(document)
        order = to_order(sale, retailer)
    except TLogError as exc:
        return Outcome(FAILED, digest, len(data), str(exc))
    if order.order_type == "IN_STORE" and not retailer.order_master:
        return Outcome(SKIPPED, digest, len(data),
                       f"order {order.external_id}: in-store sale and retailer is not the order master;"
                       " inventory comes from the variance feed")
    return Outcome(PROCESSED, digest, len(data), order=order, followups=followups_for(order, retailer))


def decide_variance(data: bytes) -> Outcome:
    """Pure: a variance file's bytes become records to apply, or a failure of the whole file."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        parsed = parse_variance_file(data)
    except InputError as exc:
        return Outcome(FAILED, digest, len(data), str(exc))
    return Outcome(PROCESSED, digest, len(data), variance=parsed)


def ingest_file(file_id: int, feed: Feed, source: FileSource, ledger: Ledger, max_bytes: int,
                decide_outcome: Callable[[bytes], Outcome], max_attempts: int = 25) -> IngestResult:
    """Read, decide and record one claimed file in one transaction, then move it out of the inbound folder.

    Safe to run any number of times for the same file: a row that is already final is only moved.
    A file whose task keeps dying (max_attempts starts) is failed with that reason and GaveUp is raised
    after the move, so the message is dead-lettered instead of looping.
    """
    row = ledger.start_attempt(file_id)
    if row is None:
        raise UnknownFile(f"no ledger row {file_id}")
    order_id = order_type = None
    followups: tuple[str, ...] = ()
    applied = rejected = None
    gave_up = row.status == CLAIMED and row.attempts > max_attempts
    if gave_up:
        reason = (f"gave up after {row.attempts - 1} attempts: the task crashed, timed out or kept failing"
                  " on this file")
        row = ledger.record(file_id, Outcome(FAILED, error=reason)).row
    elif row.status == CLAIMED:
        outcome = read_and_decide(row, source, max_bytes, decide_outcome)
        recorded = ledger.record(file_id, outcome)
        row, order_id = recorded.row, recorded.order_id
        applied, rejected = recorded.records_applied, recorded.records_rejected
        if outcome.order and order_id:
            order_type, followups = outcome.order.order_type, outcome.followups
    moved_to = row.moved_to
    if row.moved_at is None:
        moved_to = finish_move(row, feed, source)
        ledger.mark_moved(row.id, moved_to)
    if gave_up:
        raise GaveUp(f"{row.file_name}: {row.error}")
    return IngestResult(row.id, row.file_name, row.status, row.error, order_id, order_type, moved_to, followups,
                        applied, rejected)


def read_and_decide(row: LedgerRow, source: FileSource, max_bytes: int,
                    decide_outcome: Callable[[bytes], Outcome]) -> Outcome:
    reason = unsafe_name_reason(row.file_name)
    if reason:
        return Outcome(FAILED, error=reason)
    if row.size is not None and row.size > max_bytes:
        return Outcome(FAILED, size=row.size, error=f"file is {row.size} bytes, over the {max_bytes}-byte limit")
    try:
        data = source.read(row.remote_path, max_bytes, row.size)
    except FileTooLarge as exc:
        return Outcome(FAILED, error=str(exc))
    except FileMissing:
        return Outcome(FAILED, error="file disappeared from the inbound folder before it was read")
    return decide_outcome(data)


def destination(row: LedgerRow, feed: Feed) -> str:
    """Where a final file goes: error_dir for failures, archive_dir otherwise."""
    name = safe_local_name(row.file_name) if unsafe_name_reason(row.file_name) else row.file_name
    if row.status == FAILED:
        return join(feed.error_dir, name)
    if row.status == DUPLICATE:
        return join(feed.archive_dir, f"{name}.duplicate-{row.id}")
    return join(feed.archive_dir, name)


def finish_move(row: LedgerRow, feed: Feed, source: FileSource) -> str | None:
    """Move a final file out of the inbound folder; the reason of a failure is written next to it."""
    assert row.status in (PROCESSED, FAILED, SKIPPED, DUPLICATE)
    dst = destination(row, feed)
    if row.status == FAILED:
        note = f"{row.file_name}: {row.error}\nledger row {row.id}, failed at {row.finished_at}\n"
        source.write(dst + ".error.txt", note.encode("utf-8", "replace"))
    if source.move(row.remote_path, dst):
        return dst
    # Not in the folder: an earlier delivery moved it, or someone removed it by hand.
    return dst if source.exists(dst) else None


def replay_file(retailer_id: str, feed: Feed, file_name: str, source: FileSource, ledger: Ledger) -> LedgerRow:
    """Put a file someone fixed in error_dir back through the normal path; returns its new ledger row.

    The old row keeps its failed status and points at the new one (replayed_by). The claim and the move
    back into the inbound folder happen under the scan lock, so no scan takes the file for a reappearance.
    """
    reason = unsafe_name_reason(file_name)
    if reason:
        raise ReplayRefused(f"{file_name!r}: {reason}")
    with ledger.replay_transaction(retailer_id, feed.name) as tx:
        old = tx.latest(file_name)
        if old is None:
            raise ReplayRefused(f"{file_name}: no such file in the {feed.name} ledger of {retailer_id}")
        if old.status != FAILED or old.moved_at is None:
            raise ReplayRefused(f"{file_name}: ledger row {old.id} is {old.status}; only failed files that were"
                                " moved to error_dir are replayed")
        inbound = join(feed.directory, file_name)
        new = tx.claim_again(old, inbound)
        if not source.move(join(feed.error_dir, file_name), inbound):
            raise ReplayRefused(f"{file_name} is not in {feed.error_dir}")
    return new
