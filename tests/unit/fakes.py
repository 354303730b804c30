"""In-memory fakes for the ports we own (FileSource, FileLedger, ConfigSnapshots), for unit tests of the core only."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from worker.core.errors import FileMissing, FileTooLarge, TransientError
from worker.services.ports import CLAIMED, ConfigSnapshot, LedgerRow, OpenRow, Outcome, Recorded, RemoteFile


class FakeSource:
    def __init__(self, files: dict[str, bytes] | None = None, mtime: float = 0.0):
        self.files = dict(files or {})
        self.mtimes = {path: mtime for path in self.files}
        self.dirs: set[str] = set()

    def list(self, directory: str) -> Sequence[RemoteFile]:
        out = []
        for path, data in self.files.items():
            head, _, name = path.rpartition("/")
            if head == directory:
                out.append(RemoteFile(name, len(data), self.mtimes.get(path, 0.0)))
        out += [RemoteFile(d.rpartition("/")[2], 0, 0.0, False) for d in self.dirs if d.rpartition("/")[0] == directory]
        return out

    def read(self, path: str, max_bytes: int, size_hint: int | None = None) -> bytes:
        if path not in self.files:
            raise FileMissing(path)
        if len(self.files[path]) > max_bytes:
            raise FileTooLarge(max_bytes)
        return self.files[path]

    def move(self, src: str, dst: str) -> bool:
        if src not in self.files:
            return False
        if dst in self.files:
            raise FileExistsError(17, "refusing to replace an existing file", dst)
        self.files[dst] = self.files.pop(src)
        return True

    def write(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def exists(self, path: str) -> bool:
        return path in self.files


@dataclass
class FakeLease:
    held: bool
    renewals: int = 0

    def renew(self) -> None:
        self.renewals += 1


class FakeLedger:
    def __init__(self, clock: datetime | None = None):
        self.rows: dict[int, LedgerRow] = {}
        self.orders: dict[str, int] = {}
        self.replayed: dict[int, int] = {}
        self.clock = clock or datetime(2026, 1, 1, tzinfo=UTC)
        self._ids = itertools.count(1)
        self.locked: set[str] = set()  # retailers whose scan lock another scan holds
        self.leases: list[FakeLease] = []  # every scan lock handed out, in order
        self.next_move: dict[int, datetime] = {}
        self.move_errors: dict[int, list[str]] = {}
        self.looked_up: list[str] = []

    def now(self) -> datetime:
        return self.clock

    @contextmanager
    def scan_lock(self, retailer_id: str) -> Iterator[FakeLease]:
        lease = FakeLease(retailer_id not in self.locked)
        self.leases.append(lease)
        if not lease.held:
            yield lease
            return
        self.locked.add(retailer_id)
        try:
            yield lease
        finally:
            self.locked.discard(retailer_id)

    @contextmanager
    def scan_transaction(self, retailer_id: str, feed: str) -> Iterator[FakeLedger]:
        yield self

    def open_rows(self) -> list[OpenRow]:
        return [
            OpenRow(**r.__dict__, next_move_at=self.next_move.get(r.id))
            for r in sorted(self.rows.values(), key=lambda r: r.id)
            if r.status == CLAIMED or r.moved_at is None
        ]

    def latest_rows(self, names: Sequence[str]) -> dict[str, LedgerRow]:
        self.looked_up += list(names)
        out: dict[str, LedgerRow] = {}
        for row in sorted(self.rows.values(), key=lambda r: r.id):
            if row.file_name in names:
                out[row.file_name] = row
        return out

    def in_flight(self) -> int:
        return sum(1 for r in self.rows.values() if r.status == CLAIMED)

    def claim(self, claims):  # type: ignore[no-untyped-def]
        inserted = []
        for c in claims:
            if c.status == CLAIMED and any(
                r.file_name == c.file_name and r.status != "duplicate" and r.id not in self.replayed
                for r in self.rows.values()
            ):
                continue
            row = LedgerRow(
                next(self._ids),
                "acme",
                "orders",
                c.file_name,
                c.remote_path,
                c.size,
                datetime.fromtimestamp(c.mtime, UTC),
                c.status,
                c.error,
                0,
                None,
                None if c.status == CLAIMED else self.clock,
                None,
                None,
            )
            self.rows[row.id] = row
            inserted.append(row)
        return inserted

    def mark_dispatched(self, ids: Sequence[int], hold_seconds: float = 900) -> None:
        for i in ids:
            row = self.rows[i] = replace(self.rows[i], dispatched_at=self.clock)
            due = self.next_move.get(i)
            if row.status != CLAIMED and row.moved_at is None and (due is None or due <= self.clock):
                self.next_move[i] = self.clock + timedelta(seconds=hold_seconds)

    def move_failed(self, file_id: int, error: str, base_seconds: float, cap_seconds: float) -> None:
        failures = self.move_errors.setdefault(file_id, [])
        self.next_move[file_id] = self.clock + timedelta(seconds=min(cap_seconds, base_seconds * 2 ** len(failures)))
        failures.append(error)

    def get(self, file_id: int) -> LedgerRow | None:
        return self.rows.get(file_id)

    def start_attempt(self, file_id: int, retailer_id: str, feed: str) -> LedgerRow | None:
        row = self.rows.get(file_id)
        if row is not None and row.status == CLAIMED and (row.retailer_id, row.feed) == (retailer_id, feed):
            row = self.rows[file_id] = replace(row, attempts=row.attempts + 1)
        return row

    @contextmanager
    def replay_transaction(self, retailer_id: str, feed: str) -> Iterator[FakeLedger]:
        snapshot = dict(self.rows)
        try:
            yield self
        except BaseException:
            self.rows = snapshot  # the transaction rolls back
            raise

    def row(self, file_id: int) -> LedgerRow | None:
        return self.rows.get(file_id)

    def latest(self, file_name: str) -> LedgerRow | None:
        rows = [r for r in self.rows.values() if r.file_name == file_name]
        return max(rows, key=lambda r: r.id) if rows else None

    def claim_again(self, old: LedgerRow, remote_path: str) -> LedgerRow:
        row = LedgerRow(
            next(self._ids),
            old.retailer_id,
            old.feed,
            old.file_name,
            remote_path,
            old.size,
            old.mtime,
            CLAIMED,
            None,
            0,
            self.clock,
            None,
            None,
            None,
        )
        self.rows[row.id] = row
        self.replayed[old.id] = row.id
        return row

    def record(self, file_id: int, outcome: Outcome) -> Recorded:
        row = self.rows[file_id]
        if row.status != CLAIMED:
            return Recorded(row)
        status, error, order_id = outcome.status, outcome.error, None
        if outcome.order is not None:
            if outcome.order.external_id in self.orders:
                status, error = "duplicate", "order already stored"
            else:
                order_id = self.orders[outcome.order.external_id] = len(self.orders) + 1
        row = replace(row, status=status, error=error, finished_at=self.clock)
        self.rows[file_id] = row
        return Recorded(row, order_id)

    def mark_moved(self, file_id: int, moved_to: str | None) -> None:
        self.rows[file_id] = replace(self.rows[file_id], moved_at=self.clock, moved_to=moved_to)
        self.next_move.pop(file_id, None)

    def rows_by_id(self, ids: Sequence[int]) -> list[LedgerRow]:
        return [self.rows[i] for i in ids]


class FakeConfigSnapshots:
    """ConfigSnapshots in memory; `down` makes every call fail as an unreachable database would."""

    def __init__(self) -> None:
        self.snapshots: dict[tuple[str, str], ConfigSnapshot] = {}
        self.checks: dict[str, dict[str, object]] = {}
        self.down = False
        self._tick = 0

    def _check_up(self) -> None:
        if self.down:
            raise TransientError("configuration snapshots: connection refused")

    def store_valid(self, source: str, content: str, sha256: str, file_mtime: datetime | None) -> None:
        self._check_up()
        self._tick += 1  # loaded_at: strictly increasing, as now() of successive transactions
        loaded_at = datetime(2024, 1, 1, tzinfo=UTC).replace(microsecond=self._tick)
        self.snapshots[(source, sha256)] = ConfigSnapshot(source, sha256, content, file_mtime, loaded_at)
        self.checks[source] = {"valid": True, "error": None, "sha256": sha256, "in_use": sha256}

    def latest_valid(self, source: str) -> ConfigSnapshot | None:
        self._check_up()
        mine = [s for (src, _), s in self.snapshots.items() if src == source]
        return max(mine, key=lambda s: s.loaded_at) if mine else None

    def record_invalid(self, source: str, error: str, sha256: str | None, in_use_sha256: str | None) -> None:
        self._check_up()
        self.checks[source] = {"valid": False, "error": error, "sha256": sha256, "in_use": in_use_sha256}
