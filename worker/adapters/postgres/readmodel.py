"""What operators read, in one place: the status screen, `scan --wait`, the metrics' database figures and the
demo's summary. Read only; errors are the callers' to show (no retry: a person or a scraper is waiting)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from psycopg.rows import class_row

from worker.adapters.postgres.pool import Database

_T = TypeVar("_T")

# ---------------------------------------------------------------- rows


@dataclass(frozen=True)
class FileCount:
    retailer_id: str
    feed: str
    status: str
    count: int


@dataclass(frozen=True)
class PendingFiles:
    """A retailer's files not yet final (or final but not moved), and the oldest of them."""

    retailer_id: str
    oldest: datetime  # its mtime, else when it was claimed
    oldest_age_seconds: Decimal
    files: int


@dataclass(frozen=True)
class LastScan:
    retailer_id: str
    finished_at: datetime
    age_seconds: Decimal
    requested_by: str
    listed: int
    dispatched: int
    deferred: int
    error: str | None
    note: str | None = None  # why it did nothing: another scan of the retailer was running


@dataclass(frozen=True)
class UnmovedFiles:
    """A retailer's final files still in the inbound folder (their move failed or is under way)."""

    retailer_id: str
    files: int
    oldest_age_seconds: Decimal  # since the oldest of them became final
    move_attempts: int  # failed moves, all files together
    last_error: str | None  # why the latest failed move failed


@dataclass(frozen=True)
class ListingLeftovers:
    """What the retailer's latest listing matched but could not take: files too young (mtime under
    min_age_seconds ago, or in the future) and entries that are not regular files."""

    retailer_id: str
    finished_at: datetime
    too_young: int
    ignored: int
    oldest_too_young_s: Decimal | None  # negative: that file's mtime is in the future


@dataclass(frozen=True)
class FailedFile:
    retailer_id: str
    file_name: str
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class FollowupCount:
    retailer_id: str
    kind: str
    status: str
    count: int


@dataclass(frozen=True)
class ConfigCheck:
    """Whether a configuration file was valid when a process last looked, and what the processes use."""

    source: str
    valid: bool
    error: str | None
    sha256: str | None
    invalid_since: datetime | None
    in_use_sha256: str | None
    in_use_loaded_at: datetime | None
    checked_at: datetime
    checked_by: str


@dataclass(frozen=True)
class ScanRun:
    """What `scan --wait` polls: the files a scan saw unfinished, or why it failed."""

    pending_ids: list[int]
    error: str | None
    will_retry: bool
    note: str | None = None  # it did nothing: another scan of the retailer was running


@dataclass(frozen=True)
class StatusProgress:
    status: str
    moved: int
    files: int


@dataclass(frozen=True)
class Progress:
    """The demo's progress: files seen, files final and moved, follow-ups not done."""

    files: int
    final: int
    pending_followups: int


@dataclass(frozen=True)
class FeedCount:
    retailer_id: str
    feed: str
    count: int


@dataclass(frozen=True)
class OrderTypeCount:
    retailer_id: str
    order_type: str
    count: int


@dataclass(frozen=True)
class FacilityCount:
    retailer_id: str
    facility_id: str
    count: int


@dataclass(frozen=True)
class ReasonCount:
    retailer_id: str
    reason_id: str
    count: int


@dataclass(frozen=True)
class RetailerCount:
    retailer_id: str
    count: int


@dataclass(frozen=True)
class StatusTotal:
    retailer_id: str
    status: str
    files: int


@dataclass(frozen=True)
class OrdersStored:
    retailer_id: str
    order_type: str
    status_id: str
    orders: int
    grand_total: Decimal


@dataclass(frozen=True)
class NotImported:
    retailer_id: str
    file_name: str
    status: str
    error: str | None


@dataclass(frozen=True)
class BrokeredLines:
    retailer_id: str
    rule: str
    facility_id: str
    lines: int
    units: int


@dataclass(frozen=True)
class FacilityId:
    facility_id: str


@dataclass(frozen=True)
class StockCell:
    product_id: str
    facility_id: str
    quantity_on_hand: int
    reserved: int


@dataclass(frozen=True)
class VariancesApplied:
    retailer_id: str
    source: str  # what applied them: order (a sale), file (the variance feed), return
    reason_id: str
    records: int
    units: int


@dataclass(frozen=True)
class VarianceFileResult:
    file_name: str
    records_applied: int | None
    records_rejected: int | None
    error: str | None


@dataclass(frozen=True)
class DemoSummary:
    files: list[StatusTotal]
    orders: list[OrdersStored]
    not_imported: list[NotImported]  # the first 12: failed, then duplicates, then skipped
    brokered: list[BrokeredLines]
    facilities: list[str]  # of the retailer whose stock is shown
    stock: list[StockCell]
    variances: list[VariancesApplied]
    variance_files: list[VarianceFileResult]


# ---------------------------------------------------------------- statements

FILES_BY_STATUS = """
SELECT retailer_id, feed, status, count(*) AS count FROM tlog_files WHERE replayed_by IS NULL
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
PENDING_FILES = """
SELECT retailer_id, min(coalesce(mtime, claimed_at)) AS oldest,
       extract(epoch FROM now() - min(coalesce(mtime, claimed_at))) AS oldest_age_seconds, count(*) AS files
FROM tlog_files WHERE status = 'claimed' OR (moved_at IS NULL AND replayed_by IS NULL) GROUP BY 1
"""
LAST_SCANS = """
SELECT DISTINCT ON (retailer_id) retailer_id, finished_at, extract(epoch FROM now() - finished_at) AS age_seconds,
       requested_by, listed, dispatched, deferred, error, note
FROM scan_runs ORDER BY retailer_id, finished_at DESC
"""
UNMOVED_FILES = """
SELECT retailer_id, count(*) AS files, extract(epoch FROM now() - min(finished_at)) AS oldest_age_seconds,
       sum(move_attempts) AS move_attempts,
       (array_agg(move_error ORDER BY next_move_at DESC NULLS LAST)
        FILTER (WHERE move_error IS NOT NULL))[1] AS last_error
FROM tlog_files WHERE status <> 'claimed' AND moved_at IS NULL AND replayed_by IS NULL GROUP BY 1
"""
LISTING_LEFTOVERS = """
SELECT DISTINCT ON (retailer_id) retailer_id, finished_at, too_young, ignored, oldest_too_young_s
FROM scan_runs WHERE error IS NULL AND note IS NULL ORDER BY retailer_id, finished_at DESC
"""
RECENT_FAILURES = """
SELECT retailer_id, file_name, finished_at, error FROM tlog_files
WHERE status = 'failed' AND replayed_by IS NULL ORDER BY finished_at DESC NULLS LAST LIMIT %s
"""
FOLLOWUPS = """
SELECT retailer_id, kind, status, count(*) AS count FROM order_followups GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
CONFIG_CHECKS = """
SELECT c.source, c.valid, c.error, c.sha256, c.invalid_since, c.in_use_sha256, s.loaded_at AS in_use_loaded_at,
       c.checked_at, c.checked_by
FROM config_checks c LEFT JOIN config_snapshots s ON s.source = c.source AND s.sha256 = c.in_use_sha256
ORDER BY c.source
"""
SCAN_RUN = "SELECT pending_ids, error, will_retry, note FROM scan_runs WHERE id = %s"
FILES_PROGRESS = """
SELECT status, count(*) FILTER (WHERE moved_at IS NOT NULL) AS moved, count(*) AS files FROM tlog_files
WHERE id = ANY(%s) GROUP BY status
"""
PROGRESS = """
SELECT count(*) AS files, count(*) FILTER (WHERE status <> 'claimed' AND moved_at IS NOT NULL) AS final,
       (SELECT count(*) FROM order_followups WHERE status = 'pending') AS pending_followups
FROM tlog_files
"""
FILES_DISCOVERED = "SELECT retailer_id, feed, count(*) AS count FROM tlog_files GROUP BY 1, 2"
ORDERS_BY_TYPE = "SELECT retailer_id, order_type, count(*) AS count FROM orders GROUP BY 1, 2"
ALLOCATIONS = """
SELECT retailer_id, facility_id, count(*) AS count FROM order_facility_changes WHERE reason = 'BROKERED'
GROUP BY 1, 2
"""
UNFILLABLE = """
SELECT o.retailer_id, count(*) AS count FROM order_items i JOIN orders o ON o.id = i.order_id
WHERE i.facility_id = 'UNFILLABLE_PARKING' GROUP BY 1
"""
VARIANCES_BY_REASON = "SELECT retailer_id, reason_id, count(*) AS count FROM inventory_variances GROUP BY 1, 2"
NEGATIVE_STOCK = "SELECT retailer_id, count(*) AS count FROM inventory WHERE quantity_on_hand < 0 GROUP BY 1"

DEMO_FILES = "SELECT retailer_id, status, count(*) AS files FROM tlog_files GROUP BY 1, 2 ORDER BY 1, 2"
DEMO_ORDERS = """
SELECT retailer_id, order_type, status_id, count(*) AS orders, sum(grand_total) AS grand_total FROM orders
GROUP BY 1, 2, 3 ORDER BY 1, 2
"""
DEMO_NOT_IMPORTED = """
SELECT retailer_id, file_name, status, error FROM tlog_files
WHERE status IN ('failed', 'conflict', 'skipped', 'duplicate')
ORDER BY array_position(ARRAY['failed', 'conflict', 'duplicate', 'skipped'], status), id LIMIT 12
"""
DEMO_BROKERED = """
SELECT retailer_id, coalesce(rule, '(none)') AS rule, facility_id, count(*) AS lines, sum(quantity) AS units
FROM order_facility_changes GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
DEMO_FACILITIES = "SELECT facility_id FROM facilities WHERE retailer_id = %s ORDER BY facility_id"
DEMO_STOCK = """
SELECT product_id, facility_id, quantity_on_hand, reserved FROM inventory WHERE retailer_id = %s ORDER BY 1, 2
"""
DEMO_VARIANCES = """
SELECT retailer_id, split_part(source, ':', 1) AS source, reason_id, count(*) AS records,
       sum(available_delta) AS units
FROM inventory_variances GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
DEMO_VARIANCE_FILES = """
SELECT file_name, records_applied, records_rejected, error FROM tlog_files WHERE feed = 'variance' ORDER BY id
"""


# The daily audit (issue 14): each retailer's latest audited business day, as status and the metrics show it.
@dataclass(frozen=True)
class LastAudit:
    retailer_id: str
    business_date: Any  # date
    consistent: bool
    differences: int
    created_at: datetime
    age_seconds: Decimal


LAST_AUDITS = """
SELECT DISTINCT ON (retailer_id) retailer_id, business_date, consistent, differences, created_at,
       extract(epoch FROM now() - created_at)::numeric AS age_seconds
FROM audit_reports ORDER BY retailer_id, business_date DESC
"""


class PgReadModel:
    def __init__(self, db: Database):
        self.db = db

    @contextmanager
    def session(self) -> Iterator[None]:
        """One connection for a screenful of reads."""
        with self.db.bound():
            yield

    def _rows(self, row_type: type[_T], query: str, params: Sequence[Any] | None = None) -> list[_T]:
        with self.db.connection() as conn, conn.cursor(row_factory=class_row(row_type)) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def now(self) -> datetime:
        with self.db.connection() as conn:
            row = conn.execute("SELECT now()").fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

    # -- the status screen (and the metrics: the same figures)
    def files_by_status(self) -> list[FileCount]:
        """Files by retailer, feed and status; a replayed file counts once, as its latest row."""
        return self._rows(FileCount, FILES_BY_STATUS)

    def pending_files(self) -> list[PendingFiles]:
        return self._rows(PendingFiles, PENDING_FILES)

    def last_scans(self) -> list[LastScan]:
        return self._rows(LastScan, LAST_SCANS)

    def unmoved_files(self) -> list[UnmovedFiles]:
        return self._rows(UnmovedFiles, UNMOVED_FILES)

    def listing_leftovers(self) -> list[ListingLeftovers]:
        """Per retailer, from its latest scan that listed its folders."""
        return self._rows(ListingLeftovers, LISTING_LEFTOVERS)

    def recent_failures(self, limit: int) -> list[FailedFile]:
        return self._rows(FailedFile, RECENT_FAILURES, (limit,))

    def followups(self) -> list[FollowupCount]:
        return self._rows(FollowupCount, FOLLOWUPS)

    def last_audits(self) -> list[LastAudit]:
        """Per retailer, the report of its latest audited business day."""
        return self._rows(LastAudit, LAST_AUDITS)

    def config_checks(self) -> list[ConfigCheck]:
        """Each retailers file the processes read: valid or why not, and the configuration they use."""
        return self._rows(ConfigCheck, CONFIG_CHECKS)

    # -- scan --wait, replay-file --wait
    def scan_run(self, scan_id: str) -> ScanRun | None:
        found = self._rows(ScanRun, SCAN_RUN, (scan_id,))
        return found[0] if found else None

    def files_progress(self, ids: Sequence[int]) -> list[StatusProgress]:
        """Of these ledger rows: how many have each status, and how many of those are moved."""
        return self._rows(StatusProgress, FILES_PROGRESS, (list(ids),))

    # -- the metrics' other database figures
    def files_discovered(self) -> list[FeedCount]:
        return self._rows(FeedCount, FILES_DISCOVERED)

    def orders_by_type(self) -> list[OrderTypeCount]:
        return self._rows(OrderTypeCount, ORDERS_BY_TYPE)

    def allocations(self) -> list[FacilityCount]:
        return self._rows(FacilityCount, ALLOCATIONS)

    def unfillable_lines(self) -> list[RetailerCount]:
        return self._rows(RetailerCount, UNFILLABLE)

    def variances_by_reason(self) -> list[ReasonCount]:
        return self._rows(ReasonCount, VARIANCES_BY_REASON)

    def negative_stock_rows(self) -> list[RetailerCount]:
        return self._rows(RetailerCount, NEGATIVE_STOCK)

    # -- the demo
    def progress(self) -> Progress:
        [found] = self._rows(Progress, PROGRESS)
        return found

    def demo_summary(self, stock_of: str) -> DemoSummary:
        """What the demo prints at the end; stock_of: the retailer whose inventory is shown."""
        with self.session():
            return DemoSummary(
                self._rows(StatusTotal, DEMO_FILES),
                self._rows(OrdersStored, DEMO_ORDERS),
                self._rows(NotImported, DEMO_NOT_IMPORTED),
                self._rows(BrokeredLines, DEMO_BROKERED),
                [row.facility_id for row in self._rows(FacilityId, DEMO_FACILITIES, (stock_of,))],
                self._rows(StockCell, DEMO_STOCK, (stock_of,)),
                self._rows(VariancesApplied, DEMO_VARIANCES),
                self._rows(VarianceFileResult, DEMO_VARIANCE_FILES),
            )
