"""The ports the use cases talk through: a place files come from, the file ledger, the dead letters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from worker.core.inventory import VarianceFile
from worker.core.lifecycle import FulfillmentFile
from worker.core.oms import Order
from worker.core.returns import Return
from worker.core.salefacts import LedgerFacts

CLAIMED, PROCESSED, FAILED, SKIPPED, DUPLICATE = "claimed", "processed", "failed", "skipped", "duplicate"
CONFLICT = "conflict"  # a TLog for a stored orderId, other content, not newer: kept with its diff, to error_dir
FINAL_STATUSES = (PROCESSED, FAILED, SKIPPED, DUPLICATE, CONFLICT)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    mtime: float  # seconds since the epoch, as the server reports it
    is_file: bool = True


class FileSource(Protocol):
    """A place TLog files come from (an SFTP folder in production)."""

    def list(self, directory: str) -> Sequence[RemoteFile]: ...

    def read(self, path: str, max_bytes: int, size_hint: int | None = None) -> bytes:
        """The whole file; FileTooLarge past max_bytes, FileMissing if absent. size_hint: the listed size."""
        ...

    def move(self, src: str, dst: str) -> bool:
        """Rename src to dst, never replacing dst (FileExistsError when it exists); False when src does not exist."""
        ...

    def write(self, path: str, data: bytes) -> None: ...

    def exists(self, path: str) -> bool: ...


@dataclass(frozen=True)
class LedgerRow:
    id: int
    retailer_id: str
    feed: str
    file_name: str
    remote_path: str
    size: int | None
    mtime: datetime | None
    status: str
    error: str | None
    attempts: int
    dispatched_at: datetime | None
    finished_at: datetime | None
    moved_at: datetime | None
    moved_to: str | None


@dataclass(frozen=True)
class OpenRow(LedgerRow):
    """A row not yet done with: claimed, or final but still in the inbound folder (when to try its move)."""

    next_move_at: datetime | None = None


@dataclass(frozen=True)
class Claim:
    """A file the scan claims: a new row in the ledger."""

    file_name: str
    remote_path: str
    size: int
    mtime: float
    status: str = CLAIMED  # or DUPLICATE for a reappearing name
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What ingest decided for a claimed file, applied in one transaction."""

    status: str
    sha256: str | None = None
    size: int | None = None
    error: str | None = None
    order: Order | None = None
    followups: tuple[str, ...] = ()  # downstream work for the stored order (routing.followups_for)
    variance: VarianceFile | None = None  # a variance file's parsed records, applied in the same transaction
    ret: Return | None = None  # a return file: stored against its sale, restocked in the same transaction
    restock: bool = False  # put returned merchandise back at the store (the retailer is the order master)
    facts: LedgerFacts | None = None  # the audit's columns of the ledger row, set with its final status
    fulfillment: FulfillmentFile | None = None  # a fulfilment file's records (SHIPPED / REJECTED)


@dataclass(frozen=True)
class FinalStatus:
    """A claimed file's final word in the ledger, as the record transaction writes it."""

    status: str
    error: str | None = None
    duplicate_of: int | None = None  # the ledger row that holds the same content, order or return


@dataclass(frozen=True)
class Recorded:
    """What the ledger holds after ingest's transaction."""

    row: LedgerRow
    order_id: int | None = None  # the stored order (or return), if this file stored one
    records_applied: int | None = None  # variance files
    records_rejected: int | None = None
    triggered: tuple[str, ...] = ()  # routing runs (inventory, brokering) this commit asked for


@dataclass(frozen=True)
class TakenFollowups:
    """The follow-ups a routing run took from the outbox, and those it gave up (started too often)."""

    order_ids: tuple[int, ...]
    given_up: tuple[int, ...] = ()


class ScanTransaction(Protocol):
    def latest_rows(self, names: Sequence[str]) -> dict[str, LedgerRow]: ...

    def open_rows(self) -> list[OpenRow]:
        """The feed's claimed rows and its final rows not yet moved: bounded by the in-flight cap, not the folder."""
        ...

    def claim(self, claims: Sequence[Claim]) -> list[LedgerRow]:
        """Insert claims (ON CONFLICT DO NOTHING); returns the rows actually inserted."""
        ...

    def claim_again(self, old: LedgerRow, remote_path: str) -> LedgerRow:
        """A fresh claim for a name whose latest row is kept as it is and points at the new one."""
        ...


class ReplayTransaction(Protocol):
    def latest(self, file_name: str) -> LedgerRow | None: ...

    def row(self, file_id: int) -> LedgerRow | None:
        """The row with this id, if it belongs to the transaction's retailer and feed."""
        ...

    def claim_again(self, old: LedgerRow, remote_path: str) -> LedgerRow: ...


class ScanLease(Protocol):
    """A retailer's scan lock as one scan holds it."""

    @property
    def held(self) -> bool:
        """True when this scan took the lock (False: another scan of the retailer holds it)."""
        ...

    def renew(self) -> None:
        """The scan is still making progress: the lease starts again. A lease that already ended (it was not
        renewed in time, so another scan may have run meanwhile) is logged, never an error."""
        ...


class FileLedger(Protocol):
    """The ledger of files (PostgreSQL): claims, attempts, final statuses and moves. A file's order, return or
    variances are stored inside the transaction that makes it final."""

    def now(self) -> datetime: ...

    def scan_lock(self, retailer_id: str) -> AbstractContextManager[ScanLease]:
        """The retailer's scan lock for a whole scan, if no other scan holds it (never waits): a lease, held
        when taken, not held when another scan of the retailer is running. A lease not renewed for its length
        (a process frozen or stuck mid-scan) ends by itself, so the retailer's next scan can run."""
        ...

    def scan_transaction(self, retailer_id: str, feed: str) -> AbstractContextManager[ScanTransaction]:
        """A transaction holding the per-retailer, per-feed scan lock."""
        ...

    def get(self, file_id: int) -> LedgerRow | None: ...

    def start_attempt(self, file_id: int, retailer_id: str, feed: str) -> LedgerRow | None:
        """Count one more attempt at a claimed file of this retailer and feed (committed at once, so a crash
        still counts); the row. A row of another retailer or feed is returned as it is, not counted."""
        ...

    def record(self, file_id: int, outcome: Outcome) -> Recorded:
        """Apply an ingest outcome if the row is still claimed; return the row as it now stands."""
        ...

    def mark_moved(self, file_id: int, moved_to: str | None) -> None: ...

    def move_failed(self, file_id: int, error: str, base_seconds: float, cap_seconds: float) -> None:
        """The move of a final file failed: count it and set when to try again, min(cap, base * 2**n) from now."""
        ...

    def mark_dispatched(self, ids: Sequence[int], hold_seconds: float) -> None:
        """Their messages are published. A final file sent again to finish its move is not sent again for
        hold_seconds (its ingest sets the next try if the move fails again)."""
        ...

    def replay_transaction(self, retailer_id: str, feed: str) -> AbstractContextManager[ReplayTransaction]: ...

    def rows(self, ids: Sequence[int]) -> Iterator[LedgerRow]: ...


@dataclass(frozen=True)
class DeadLetterReason:
    task_id: str
    reason: str
    created_at: datetime


class DeadLetters(Protocol):
    """Why each dead-lettered message was given up (the broker only says 'rejected')."""

    def record(
        self, task_id: str, task_name: str, queue: str, args: Any, kwargs: Any, reason: str, retailer_id: str | None
    ) -> None: ...

    def reasons(self, task_ids: Sequence[str]) -> dict[str, DeadLetterReason]: ...

    def mark_replayed(self, task_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class ConfigSnapshot:
    """A configuration file's text as some process last loaded it valid."""

    source: str  # the file's path, as the processes name it
    sha256: str
    content: str
    file_mtime: datetime | None
    loaded_at: datetime


class ConfigSnapshots(Protocol):
    """The last valid configuration, kept where every process can read it, and whether the file is valid now.

    Every method raises TransientError when the store cannot be reached.
    """

    def store_valid(self, source: str, content: str, sha256: str, file_mtime: datetime | None) -> None:
        """Keep content as source's newest valid configuration, and record the file valid."""

    def latest_valid(self, source: str) -> ConfigSnapshot | None: ...

    def record_invalid(self, source: str, error: str, sha256: str | None, in_use_sha256: str | None) -> None:
        """Record that source cannot be used (why), and which configuration is used meanwhile."""
