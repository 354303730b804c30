"""The files ledger on PostgreSQL: claims, attempts, final statuses, moves and scan runs. A file's order,
return or variances are written by their own repositories inside the transaction that makes it final."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import class_row

from worker.adapters.postgres.auditcols import FACTS_SET, facts_params
from worker.adapters.postgres.inventory import PgStock
from worker.adapters.postgres.lifecycle import PgLifecycle
from worker.adapters.postgres.orders import PgOrders
from worker.adapters.postgres.pool import Database, describe_db_error, storable, transient_db_errors
from worker.adapters.postgres.rows import ROW_COLUMNS, ROW_COLUMNS_T, ledger_row
from worker.core.errors import TransientError, bounded
from worker.services.ingest import content_checked, return_stored_before, variance_file_final
from worker.services.ports import (
    CLAIMED,
    DUPLICATE,
    FAILED,
    PROCESSED,
    Claim,
    FinalStatus,
    LedgerRow,
    OpenRow,
    Outcome,
    Recorded,
)
from worker.services.scan import ScanResult

log = logging.getLogger(__name__)


# What a file's values can make the database (or psycopg, adapting them) refuse: SQLSTATE class 22 and the
# errors of encoding a parameter. Any of them while recording a file fails that file.
VALUE_REFUSED: tuple[type[Exception], ...] = (psycopg.DataError, UnicodeEncodeError, OverflowError, ValueError)


def refused_reason(outcome: Outcome, exc: Exception) -> str:
    """Why a file failed when the database refused one of its values: the order (or return) and the kind of
    error, the column when the server names it; never the database's message, which quotes the value. A
    failure whose own reason was refused (it quotes an unstorable id) keeps that reason, escaped."""
    if outcome.status == FAILED and outcome.error and outcome.order is None and outcome.ret is None:
        return storable(outcome.error)
    if outcome.order is not None:
        what = f"order {_shown(outcome.order.external_id)}"
    elif outcome.ret is not None:
        what = f"return {_shown(outcome.ret.external_id)}"
    elif outcome.variance is not None:
        what = "variance file"
    else:
        what = "the file"
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return f"{what}: PostgreSQL refused a value: {describe_db_error(exc)}; the value is not repeated here"
    if isinstance(exc, psycopg.DataError) and "NUL" in str(exc):
        kind = "a text holds a NUL character"
    else:
        kind = type(exc).__name__
    return f"{what}: a value could not be sent to PostgreSQL ({kind}); the value is not repeated here"


def _shown(external_id: str) -> str:
    # an id is shown to name the file's record; one that is itself unstorable is shown escaped
    return storable(bounded(external_id, 100))


def scan_lock_key(retailer_id: str) -> int:
    """A stable 64-bit advisory lock key, one per retailer: its scans (all feeds) and replays take turns on it."""
    digest = hashlib.blake2b(f"tlogsync.scan:{retailer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class LockedRow(LedgerRow):
    same_content: int | None = None


class PgScanTransaction:
    def __init__(self, conn: psycopg.Connection[Any], retailer_id: str, feed: str):
        self.conn, self.retailer_id, self.feed = conn, retailer_id, feed

    def latest_rows(self, names: Sequence[str]) -> dict[str, LedgerRow]:
        with self.conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(
                f"SELECT DISTINCT ON (file_name) {ROW_COLUMNS} FROM tlog_files"
                " WHERE retailer_id = %(r)s AND feed = %(f)s AND file_name = ANY(%(names)s)"
                " ORDER BY file_name, id DESC",
                {"r": self.retailer_id, "f": self.feed, "names": list(names)},
            )
            return {row.file_name: row for row in cur}

    def open_rows(self) -> list[OpenRow]:
        with self.conn.cursor(row_factory=class_row(OpenRow)) as cur:
            cur.execute(
                f"SELECT {ROW_COLUMNS}, next_move_at FROM tlog_files"
                " WHERE retailer_id = %(r)s AND feed = %(f)s AND (status = 'claimed' OR moved_at IS NULL)"
                " ORDER BY id",
                {"r": self.retailer_id, "f": self.feed},
            )
            return cur.fetchall()

    def in_flight(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM tlog_files WHERE retailer_id = %(r)s AND feed = %(f)s AND status = 'claimed'",
            {"r": self.retailer_id, "f": self.feed},
        ).fetchone()
        return int(row[0]) if row else 0

    def claim(self, claims: Sequence[Claim]) -> list[LedgerRow]:
        if not claims:
            return []
        live = [c for c in claims if c.status == CLAIMED]
        dups = [c for c in claims if c.status == DUPLICATE]
        inserted: list[LedgerRow] = []
        with self.conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            if live:
                cur.execute(
                    "INSERT INTO tlog_files (retailer_id, feed, file_name, remote_path, size, mtime)"
                    " SELECT %(r)s, %(f)s, n, p, s, to_timestamp(m)"
                    " FROM unnest(%(n)s::text[], %(p)s::text[], %(s)s::bigint[], %(m)s::float8[]) AS t(n, p, s, m)"
                    " ON CONFLICT (retailer_id, feed, file_name) WHERE status <> 'duplicate' AND replayed_by IS NULL"
                    " DO NOTHING"
                    f" RETURNING {ROW_COLUMNS}",
                    {
                        "r": self.retailer_id,
                        "f": self.feed,
                        "n": [c.file_name for c in live],
                        "p": [c.remote_path for c in live],
                        "s": [c.size for c in live],
                        "m": [c.mtime for c in live],
                    },
                )
                inserted += cur.fetchall()
            if dups:
                cur.execute(
                    "INSERT INTO tlog_files (retailer_id, feed, file_name, remote_path, size, mtime, status, error,"
                    " finished_at, duplicate_of)"
                    " SELECT %(r)s, %(f)s, n, p, s, to_timestamp(m), 'duplicate', e, now(),"
                    "   (SELECT max(id) FROM tlog_files WHERE retailer_id = %(r)s AND feed = %(f)s AND file_name = n)"
                    " FROM unnest(%(n)s::text[], %(p)s::text[], %(s)s::bigint[], %(m)s::float8[], %(e)s::text[])"
                    "   AS t(n, p, s, m, e)"
                    f" RETURNING {ROW_COLUMNS}",
                    {
                        "r": self.retailer_id,
                        "f": self.feed,
                        "n": [c.file_name for c in dups],
                        "p": [c.remote_path for c in dups],
                        "s": [c.size for c in dups],
                        "m": [c.mtime for c in dups],
                        "e": [c.error for c in dups],
                    },
                )
                inserted += cur.fetchall()
        return inserted

    def claim_again(self, old: LedgerRow, remote_path: str) -> LedgerRow:
        # not marked dispatched: the scan marks it once its message is out
        return claim_again(self.conn, self.retailer_id, self.feed, old, remote_path, dispatched=False)


class PgReplay:
    def __init__(self, conn: psycopg.Connection[Any], retailer_id: str, feed: str):
        self.conn, self.retailer_id, self.feed = conn, retailer_id, feed

    def latest(self, file_name: str) -> LedgerRow | None:
        with self.conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(
                f"SELECT {ROW_COLUMNS} FROM tlog_files WHERE retailer_id = %s AND feed = %s"
                " AND file_name = %s ORDER BY id DESC LIMIT 1",
                (self.retailer_id, self.feed, file_name),
            )
            return cur.fetchone()

    def row(self, file_id: int) -> LedgerRow | None:
        with self.conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(
                f"SELECT {ROW_COLUMNS} FROM tlog_files WHERE id = %s AND retailer_id = %s AND feed = %s",
                (file_id, self.retailer_id, self.feed),
            )
            return cur.fetchone()

    def claim_again(self, old: LedgerRow, remote_path: str) -> LedgerRow:
        # marked dispatched at once: a replay publishes outside the scan lock, so only the timer resends it
        return claim_again(self.conn, self.retailer_id, self.feed, old, remote_path, dispatched=True)


def claim_again(
    conn: psycopg.Connection[Any], retailer_id: str, feed: str, old: LedgerRow, remote_path: str, dispatched: bool
) -> LedgerRow:
    """A new claimed row for the same name; the old one keeps its status and points at the new."""
    with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
        conn.execute("UPDATE tlog_files SET replayed_by = -1 WHERE id = %s", (old.id,))
        cur.execute(
            "INSERT INTO tlog_files (retailer_id, feed, file_name, remote_path, size, mtime, dispatched_at)"
            f" VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) RETURNING {ROW_COLUMNS}",
            (retailer_id, feed, old.file_name, remote_path, old.size, old.mtime, dispatched),
        )
        new = cur.fetchone()
        assert new is not None
        conn.execute("UPDATE tlog_files SET replayed_by = %s WHERE id = %s", (new.id, old.id))
        return new


class PgScanLease:
    """The scan lock held by a transaction of its own, on a connection the server ends once it has been idle
    in that transaction for the lease's length; each renewal is a round trip that starts the idle time again."""

    def __init__(self, conn: psycopg.Connection[Any], retailer_id: str, held: bool, seconds: float):
        self.conn, self.retailer_id, self.held, self.seconds = conn, retailer_id, held, seconds
        self.lost = False

    def renew(self) -> None:
        if self.held and not self.lost:
            self._touch("SELECT 1")

    def release(self) -> None:
        self._touch("ROLLBACK")  # nothing was written on this connection: ending its transaction frees the lock

    def _touch(self, statement: str) -> None:
        if self.lost:
            return
        try:
            self.conn.execute(statement)
        except (psycopg.OperationalError, errors.IdleInTransactionSessionTimeout) as exc:
            # ended by the server (the lease ran out: IdleInTransactionSessionTimeout) or the connection lost
            self.lost = True
            if self.held:
                log.warning(
                    "the scan lock of %s ended before its scan did (not renewed within %.0f s, or the connection"
                    " was lost: %s); another scan of the retailer may have run meanwhile, which is harmless",
                    self.retailer_id,
                    self.seconds,
                    type(exc).__name__,
                )


class PgFileLedger:
    """The files ledger on a connection pool (one pool per worker process). scan_lease_seconds: how long a
    scan may go without renewing its lock before the server ends it (TLOGSYNC_SCAN_LEASE)."""

    def __init__(self, db: Database, scan_lease_seconds: float = 60.0):
        self.db = db
        self.scan_lease_seconds = scan_lease_seconds

    def now(self) -> datetime:
        with transient_db_errors(), self.db.connection() as conn:
            row = conn.execute("SELECT now()").fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

    @contextmanager
    def scan_lock(self, retailer_id: str) -> Iterator[PgScanLease]:
        """The retailer's advisory lock, tried once, held by a transaction kept open for the whole scan on a
        connection of its own (the scan's work runs on the task's connection). The end of that transaction,
        however it ends (rolled back at the end, a killed process, the server ending it when the lease was not
        renewed in time), releases it; PgBouncer in transaction mode keeps it on one server connection."""
        ms = max(1, int(self.scan_lease_seconds * 1000))
        with self.db.pool.connection() as conn:
            with transient_db_errors():
                conn.execute("BEGIN")
                row = conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', %s, true), pg_try_advisory_xact_lock(%s)",
                    (str(ms), scan_lock_key(retailer_id)),
                ).fetchone()
            lease = PgScanLease(conn, retailer_id, bool(row and row[1]), self.scan_lease_seconds)
            try:
                yield lease
            finally:
                lease.release()

    @contextmanager
    def scan_transaction(self, retailer_id: str, feed: str) -> Iterator[PgScanTransaction]:
        """The claims of a scan, in one transaction; the caller holds the retailer's scan lock (scan_lock)."""
        with transient_db_errors(), self.db.connection() as conn, conn.transaction():
            yield PgScanTransaction(conn, retailer_id, feed)

    def get(self, file_id: int) -> LedgerRow | None:
        with transient_db_errors(), self.db.connection() as conn, conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(f"SELECT {ROW_COLUMNS} FROM tlog_files WHERE id = %s", (file_id,))
            return cur.fetchone()

    def start_attempt(self, file_id: int, retailer_id: str, feed: str) -> LedgerRow | None:
        # One round trip: the row counted, or, when it belongs to another retailer or feed, the row as it is
        # (untouched: the statement's snapshot is from before the UPDATE, which matched nothing).
        with transient_db_errors(), self.db.connection() as conn, conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(
                "WITH counted AS (UPDATE tlog_files SET attempts = attempts + (status = 'claimed')::int"
                "  WHERE id = %(id)s AND retailer_id = %(r)s AND feed = %(f)s"
                f"  RETURNING {ROW_COLUMNS})"
                " SELECT * FROM counted"
                f" UNION ALL SELECT {ROW_COLUMNS} FROM tlog_files WHERE id = %(id)s"
                "  AND NOT EXISTS (SELECT 1 FROM counted)",
                {"id": file_id, "r": retailer_id, "f": feed},
            )
            return cur.fetchone()

    def forgive_attempt(self, file_id: int) -> None:
        """A transient failure was handled cleanly: it does not count toward the poison-message bound."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE tlog_files SET attempts = greatest(attempts - 1, 0) WHERE id = %s AND status = 'claimed'",
                (file_id,),
            )

    @contextmanager
    def replay_transaction(self, retailer_id: str, feed: str) -> Iterator[PgReplay]:
        """Under the scan lock: a scan cannot mistake a file being replayed for a reappearing one. A replay
        waits for a running scan to finish (a scan that starts meanwhile gives up: the lock is taken)."""
        with transient_db_errors(), self.db.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '60s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (scan_lock_key(retailer_id),))
            yield PgReplay(conn, retailer_id, feed)

    def rows(self, ids: Sequence[int]) -> Iterator[LedgerRow]:
        with transient_db_errors(), self.db.connection() as conn, conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(f"SELECT {ROW_COLUMNS} FROM tlog_files WHERE id = ANY(%s) ORDER BY id", (list(ids),))
            yield from cur

    def record(self, file_id: int, outcome: Outcome) -> Recorded:
        with transient_db_errors():
            for _ in range(3):
                try:
                    return self._record_once(file_id, outcome)
                except errors.UniqueViolation:
                    # Another file with the same content or order won a race; the next pass sees it.
                    continue
                except VALUE_REFUSED as exc:
                    # A value the file carried passed validation but not the database (out of a column's
                    # range, a NUL, a lone surrogate): the file's failure, not the task's. Rolled back, then
                    # the file is failed in a fresh transaction.
                    reason = refused_reason(outcome, exc)
                    log.warning("ledger row %s: %s", file_id, reason)
                    kept = replace(outcome.facts, totals=None) if outcome.facts else None
                    return self._record_once(file_id, Outcome(FAILED, outcome.sha256, outcome.size, reason, facts=kept))
            raise TransientError(f"ledger row {file_id}: repeated unique violations")

    def _record_once(self, file_id: int, outcome: Outcome) -> Recorded:
        """A sale: one statement (PgOrders.store_order locks the row, looks for the same content, stores the
        order, its parts and follow-ups and makes the row final), and in the same transaction, when its orderId
        is stored already, the lifecycle's judgement of the new version. Anything else: lock the row and look
        for the same content, then store and make the row final, in one transaction."""
        if outcome.status == PROCESSED and outcome.order is not None:
            with self.db.connection() as conn, conn.transaction():
                recorded, by_order_id = PgOrders(conn).store_claimed(file_id, outcome)
                if by_order_id:
                    # the orderId is stored: a corrected, voided or conflicting version (docs/order-lifecycle.md)
                    recorded = PgLifecycle(conn, recorded.row.retailer_id).correction(
                        recorded.row, recorded, outcome.order, outcome.followups
                    )
                return recorded
        # No pipeline: each statement's answer is needed before the next is sent, so a pipeline would only
        # add its own bookkeeping (measured: more client CPU per transaction, not less).
        with self.db.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=class_row(LockedRow))
            locked = cur.execute(
                f"SELECT {ROW_COLUMNS_T},"
                " (SELECT x.id FROM tlog_files x WHERE x.retailer_id = t.retailer_id AND x.feed = t.feed"
                "  AND x.sha256 = %(sha)s AND x.status IN ('processed', 'skipped') LIMIT 1) AS same_content"
                " FROM tlog_files t WHERE t.id = %(id)s FOR UPDATE OF t",
                {"id": file_id, "sha": outcome.sha256},
            ).fetchone()
            assert locked is not None
            row = ledger_row(locked)
            if row.status != CLAIMED:
                # Another delivery of the same message got here first: nothing more to do.
                return Recorded(row)
            final = content_checked(outcome, locked.same_content)
            return_id = None
            triggered: tuple[str, ...] = ()
            if final.status == PROCESSED and outcome.ret is not None:
                refused = PgLifecycle(conn, row.retailer_id).check_return(outcome.ret)
                stored = PgOrders(conn).store_return(row, outcome.ret) if refused is None else None
                return_id = stored.return_id if stored else None
                if refused is not None:
                    final = FinalStatus(FAILED, refused)
                elif return_id is None:
                    final = return_stored_before(outcome.ret, stored.first_file_id if stored else None)
                else:
                    PgLifecycle(conn, row.retailer_id).link_return(outcome.ret, return_id, outcome.restock)
                    if outcome.restock:
                        PgStock(conn, row.retailer_id).restock_return(outcome.ret, return_id)
            applied = rejected = None
            if final.status == PROCESSED and outcome.fulfillment is not None:
                done = PgLifecycle(conn, row.retailer_id).apply_fulfillment_file(row.id, outcome.fulfillment)
                final = FinalStatus(FAILED if done.failed else PROCESSED, done.summary)
                applied, rejected = done.applied, len(done.rejected)
                triggered = ("brokering",) if done.reorder else ()
            if final.status == PROCESSED and outcome.variance is not None:
                result = PgStock(conn, row.retailer_id).apply_variance_file(row.id, outcome.variance)
                final, applied, rejected = variance_file_final(result), result.applied, len(result.rejected)
            updated = (
                conn.cursor(row_factory=class_row(LedgerRow))
                .execute(
                    "UPDATE tlog_files SET status = %(st)s, error = %(e)s, sha256 = %(sha)s,"
                    " size = coalesce(%(size)s, size), duplicate_of = %(dup)s, finished_at = now(),"
                    f" records_applied = %(ap)s, records_rejected = %(rj)s, {FACTS_SET}"
                    f" WHERE id = %(id)s RETURNING {ROW_COLUMNS}",
                    {
                        "st": final.status,
                        "e": final.error,
                        "sha": outcome.sha256,
                        "size": outcome.size,
                        "dup": final.duplicate_of,
                        "id": file_id,
                        "ap": applied,
                        "rj": rejected,
                        **facts_params(outcome.facts),
                    },
                )
                .fetchone()
            )
            assert updated is not None
            return Recorded(
                updated,
                return_id if final.status == PROCESSED and outcome.ret else None,
                applied,
                rejected,
                triggered,
            )

    def mark_moved(self, file_id: int, moved_to: str | None) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE tlog_files SET moved_at = now(), moved_to = %s, next_move_at = NULL"
                " WHERE id = %s AND moved_at IS NULL",
                (moved_to, file_id),
            )

    def move_failed(self, file_id: int, error: str, base_seconds: float, cap_seconds: float) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE tlog_files SET move_attempts = move_attempts + 1, move_error = %(e)s,"
                " next_move_at = now() + make_interval(secs => least(%(cap)s::float8,"
                "   %(base)s::float8 * power(2, least(move_attempts, 40))))"
                " WHERE id = %(id)s AND moved_at IS NULL",
                {"id": file_id, "e": error, "base": base_seconds, "cap": cap_seconds},
            )

    def mark_dispatched(self, ids: Sequence[int], hold_seconds: float) -> None:
        if not ids:
            return
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "UPDATE tlog_files SET dispatched_at = now(),"
                " next_move_at = CASE WHEN status <> 'claimed' AND moved_at IS NULL"
                "   AND (next_move_at IS NULL OR next_move_at <= now())"
                "   THEN now() + make_interval(secs => %(hold)s::float8) ELSE next_move_at END"
                " WHERE id = ANY(%(ids)s)",
                {"ids": list(ids), "hold": hold_seconds},
            )

    def record_scan(
        self,
        run_id: str,
        retailer_id: str,
        requested_by: str,
        started_at: datetime,
        result: ScanResult | None = None,
        error: str | None = None,
        will_retry: bool = False,
    ) -> None:
        """Upsert the scan run (a retried scan keeps its id): what `scan --wait` and `status` read."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO scan_runs (id, retailer_id, requested_by, started_at, listed, too_young, dispatched,"
                " deferred, pending_ids, error, will_retry, ignored, oldest_too_young_s, note)"
                " VALUES (%(id)s, %(r)s, %(by)s, %(at)s, %(l)s, %(y)s, %(d)s, %(df)s, %(p)s, %(e)s, %(w)s,"
                " %(ig)s, %(oy)s, %(n)s)"
                " ON CONFLICT (id) DO UPDATE SET finished_at = now(), listed = EXCLUDED.listed,"
                " too_young = EXCLUDED.too_young, dispatched = EXCLUDED.dispatched, deferred = EXCLUDED.deferred,"
                " pending_ids = EXCLUDED.pending_ids, error = EXCLUDED.error, will_retry = EXCLUDED.will_retry,"
                " ignored = EXCLUDED.ignored, oldest_too_young_s = EXCLUDED.oldest_too_young_s, note = EXCLUDED.note",
                {
                    "id": run_id,
                    "r": retailer_id,
                    "by": requested_by,
                    "at": started_at,
                    "l": result.listed if result else 0,
                    "y": result.too_young if result else 0,
                    "d": len(result.dispatch) if result else 0,
                    "df": result.deferred if result else 0,
                    "p": result.pending_ids if result else [],
                    "e": error,
                    "w": will_retry,
                    "ig": result.ignored if result else 0,
                    "oy": result.oldest_too_young_s if result else None,
                    "n": result.note if result else None,
                },
            )
