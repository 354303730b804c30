"""The scan use case: list a feed's folder, plan what to claim, send again or watch, and claim it."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.core.retailers import Retailer
from worker.services.feeds import Feed, join
from worker.services.ports import CLAIMED, DUPLICATE, FAILED, Claim, FileLedger, FileSource, LedgerRow, RemoteFile


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
        return ScanResult(
            self.retailer_id,
            f"{self.feed}+{other.feed}",
            self.listed + other.listed,
            self.too_young + other.too_young,
            self.ignored + other.ignored,
            self.dispatch + other.dispatch,
            self.watch + other.watch,
            self.deferred + other.deferred,
        )

    @property
    def pending_ids(self) -> list[int]:
        """Every ledger id this scan saw unfinished: what `scan --wait` waits for."""
        return [file_id for file_id, _ in self.dispatch] + self.watch


def select_candidates(
    entries: Sequence[RemoteFile], pattern: str, min_age_seconds: float, listed_at: float
) -> tuple[list[RemoteFile], int, int]:
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
) -> ScanResult:
    """List a feed's folder and claim what is new, under the per-retailer scan lock."""
    result = ScanResult(retailer.retailer_id, feed.name)
    listed_at = ledger.now()
    entries = source.list(feed.directory)
    result.listed = len(entries)
    candidates, result.too_young, result.ignored = select_candidates(
        entries, feed.pattern, feed.min_age_seconds, listed_at.timestamp()
    )
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
