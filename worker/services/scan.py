"""The scan use case: list a feed's folder, plan what to claim, send again or watch, and claim it."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from worker.core.retailers import Retailer
from worker.services.feeds import Feed, join
from worker.services.ports import (
    CLAIMED,
    CONFLICT,
    DUPLICATE,
    FAILED,
    Claim,
    FileLedger,
    FileSource,
    LedgerRow,
    OpenRow,
    RemoteFile,
)


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
    oldest_too_young_s: float | None = None  # listing time minus the oldest too-young mtime (< 0: in the future)
    looked_up: int = 0  # names looked up in the ledger: what the scan's database work grows with
    note: str | None = None  # why the scan did nothing (another scan of the retailer is running)

    def merge(self, other: ScanResult) -> ScanResult:
        """One scan run's totals over several feeds."""
        ages = [a for a in (self.oldest_too_young_s, other.oldest_too_young_s) if a is not None]
        return ScanResult(
            self.retailer_id,
            f"{self.feed}+{other.feed}",
            self.listed + other.listed,
            self.too_young + other.too_young,
            self.ignored + other.ignored,
            self.dispatch + other.dispatch,
            self.watch + other.watch,
            self.deferred + other.deferred,
            self.busy or other.busy,
            max(ages) if ages else None,
            self.looked_up + other.looked_up,
            self.note or other.note,
        )

    @property
    def pending_ids(self) -> list[int]:
        """Every ledger id this scan saw unfinished: what `scan --wait` waits for."""
        return [file_id for file_id, _ in self.dispatch] + self.watch


class Selection(NamedTuple):
    """What a listing holds for the scan: the candidates, oldest first, and what it leaves and why."""

    candidates: list[RemoteFile]
    too_young: int  # matching files whose mtime is under min_age_seconds ago (or in the future)
    ignored: int  # matching entries that are not regular files: symlinks, FIFOs, directories
    oldest_too_young_s: float | None  # the age of the oldest too-young file at listing time


def select_candidates(
    entries: Sequence[RemoteFile], pattern: str, min_age_seconds: float, listed_at: float
) -> Selection:
    """Regular files matching the pattern and old enough, oldest first; what matches but is not taken is
    counted (too young, or not a regular file), so a stuck file shows in the status and the metrics.
    Entries that do not match the pattern are not the scan's business and are not counted."""
    candidates, young, ignored = [], 0, 0
    oldest: float | None = None
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, pattern):
            continue
        if not entry.is_file:
            ignored += 1
        elif listed_at - entry.mtime < min_age_seconds:
            young += 1  # a writer may still be appending: its mtime keeps moving
            oldest = entry.mtime if oldest is None else min(oldest, entry.mtime)
        else:
            candidates.append(entry)
    candidates.sort(key=lambda e: (e.mtime, e.name))
    return Selection(candidates, young, ignored, None if oldest is None else round(listed_at - oldest, 1))


def plan_open(
    open_rows: Sequence[OpenRow], listed_at: datetime, redispatch_after: timedelta
) -> tuple[list[int], list[int]]:
    """Of the rows in flight or not yet moved: which to send again now and which only to watch.

    A claimed row with no dispatched mark was claimed by a scan that died before publishing its message
    (the caller holds the scan lock, so no scan is publishing now): it is sent at once. A claimed row sent
    longer than redispatch_after ago lost its message. A final row still in the folder is sent to finish
    its move when its next-move time has come (set after a failed move, with backoff, or when it was last
    sent); without one, when it finished longer than redispatch_after ago.
    """
    redispatch: list[int] = []
    watch: list[int] = []
    for row in open_rows:
        if row.status == CLAIMED:
            due = row.dispatched_at is None or listed_at - row.dispatched_at >= redispatch_after
        elif row.next_move_at is not None:
            due = row.next_move_at <= listed_at
        else:
            # normally its ingest is moving it right now; only when that has not happened for a while is
            # the move lost, and ingest is sent to finish it
            due = row.finished_at is None or listed_at - row.finished_at >= redispatch_after
        (redispatch if due else watch).append(row.id)
    return redispatch, watch


def plan_claims(
    candidates: Sequence[RemoteFile],
    latest: dict[str, LedgerRow],
    feed: Feed,
    listed_at: datetime,
    in_flight: int,
    max_in_flight: int,
    redispatch_after: timedelta,
) -> ScanPlan:
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
        takes_a_slot = row is None or (row.moved_at is not None and row.moved_at < listed_at)
        if takes_a_slot and len(claims) + len(reclaims) >= budget:
            deferred += 1  # a new claim, a reclaim or a duplicate: each is a message to send
            continue
        if row is None:
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
        elif row.moved_at < listed_at and row.status in (FAILED, CONFLICT):
            reclaims.append(row)  # someone fixed a failed (or conflicting) file and uploaded it again: read it again
        elif row.moved_at < listed_at:
            claims.append(
                Claim(
                    entry.name,
                    path,
                    entry.size,
                    entry.mtime,
                    DUPLICATE,
                    f"file name already processed as ledger row {row.id} ({row.status}); not imported",
                )
            )
        # else: our listing predates the move, the file is gone already
    return ScanPlan(tuple(claims), tuple(reclaims), tuple(redispatch), tuple(watch), deferred)


def scan_feed(
    retailer: Retailer,
    feed: Feed,
    source: FileSource,
    ledger: FileLedger,
    max_in_flight: int,
    redispatch_after: timedelta,
    renew: Callable[[], None] = lambda: None,
) -> ScanResult:
    """List a feed's folder and claim what is new; the caller holds the retailer's scan lock (scan_feeds)
    and publishes result.dispatch, then marks it dispatched.

    The listing is read whole (SFTP has no other way), but the ledger is asked only about the rows in flight
    or not yet moved and about the oldest candidates the in-flight headroom has room for, in batches: the
    database work follows what is dispatched, not the size of the folder.
    """
    result = ScanResult(retailer.retailer_id, feed.name)
    listed_at = ledger.now()
    entries = source.list(feed.directory)
    renew()  # a long listing is progress: the scan lock's lease starts again
    result.listed = len(entries)
    chosen = select_candidates(entries, feed.pattern, feed.min_age_seconds, listed_at.timestamp())
    result.too_young, result.ignored = chosen.too_young, chosen.ignored
    result.oldest_too_young_s = chosen.oldest_too_young_s
    with ledger.scan_transaction(retailer.retailer_id, feed.name) as tx:
        open_rows = tx.open_rows()
        redispatch, watch = plan_open(open_rows, listed_at, redispatch_after)
        again = set(redispatch)
        send = [(row.id, row.file_name) for row in open_rows if row.id in again]
        budget = max(0, max_in_flight - sum(1 for row in open_rows if row.status == CLAIMED))
        # A name with an open row is taken care of above; the rest of the listing is mostly new files.
        known = {row.file_name for row in open_rows}
        fresh = [entry for entry in chosen.candidates if entry.name not in known]
        while fresh and budget > 0:
            batch, fresh = fresh[:budget], fresh[budget:]
            latest = tx.latest_rows([entry.name for entry in batch])
            result.looked_up += len(batch)
            plan = plan_claims(batch, latest, feed, listed_at, 0, budget, redispatch_after)
            inserted = tx.claim(plan.claims)
            inserted += [tx.claim_again(old, old.remote_path) for old in plan.reclaims]
            send += [(row.id, row.file_name) for row in inserted]
            watch += [*plan.redispatch, *plan.watch]  # open since the read above: not expected under the lock
            budget -= len(inserted)
        result.deferred = len(fresh)
    result.dispatch = send
    result.watch = watch
    return result


# A scan publishing a long dispatch renews its lock's lease after this many messages.
RENEW_EVERY = 500

# Publishes one feed's messages, yielding each ledger id once its message is out (the scan marks those).
Send = Callable[[str, Sequence[tuple[int, str]]], Iterable[int]]


def scan_feeds(
    retailer: Retailer,
    feeds: Sequence[Feed],
    source: FileSource,
    ledger: FileLedger,
    max_in_flight: int,
    redispatch_after: timedelta,
    send: Send,
) -> ScanResult:
    """One scan of a retailer: every feed, under the retailer's scan lock, each feed's messages published
    and then marked dispatched. A scan that finds another scan of the retailer running gives up at once."""
    with ledger.scan_lock(retailer.retailer_id) as lease:
        if not lease.held:
            return ScanResult(
                retailer.retailer_id,
                "+".join(feed.name for feed in feeds),
                busy=True,
                note=f"another scan of {retailer.retailer_id} is running",
            )
        total: ScanResult | None = None
        for feed in feeds:
            result = scan_feed(retailer, feed, source, ledger, max_in_flight, redispatch_after, lease.renew)
            lease.renew()
            sent: list[int] = []
            try:
                for file_id in send(feed.name, result.dispatch):
                    sent.append(file_id)
                    if len(sent) % RENEW_EVERY == 0:
                        lease.renew()
            finally:
                # what went out is marked, what did not is sent by the next scan at once (never dispatched)
                ledger.mark_dispatched(sent, redispatch_after.total_seconds())
            lease.renew()
            total = result if total is None else total.merge(result)
        assert total is not None
        return total
