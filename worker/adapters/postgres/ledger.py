"""The ledger and order store on PostgreSQL. All SQL of the ingestion path lives here."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from worker.adapters.postgres.inventory import apply_variance, apply_variance_records
from worker.adapters.postgres.pool import Database, transient_db_errors
from worker.core.errors import TransientError
from worker.core.inventory import VarianceFile
from worker.core.oms import json_default
from worker.core.returns import POS_RETURN
from worker.core.routing import Variance
from worker.services.ports import CLAIMED, DUPLICATE, FAILED, PROCESSED, SKIPPED, Claim, LedgerRow, Outcome, Recorded
from worker.services.scan import ScanResult

ROW_COLUMNS = ("id, retailer_id, feed, file_name, remote_path, size, mtime, status, error, attempts,"
               " dispatched_at, finished_at, moved_at, moved_to")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"))


def scan_lock_key(retailer_id: str, feed: str) -> int:
    """A stable 32-bit key for pg_advisory_xact_lock, one per retailer and feed."""
    return zlib.crc32(f"tlogsync.scan:{retailer_id}:{feed}".encode())


ROW_COLUMNS_T = ", ".join(f"t.{c.strip()}" for c in ROW_COLUMNS.split(","))


@dataclass(frozen=True)
class LockedRow(LedgerRow):
    same_content: int | None = None

    def row(self) -> LedgerRow:
        return LedgerRow(**{f.name: getattr(self, f.name) for f in fields(LedgerRow)})


@dataclass(frozen=True)
class StoredRow(LedgerRow):
    order_id: int | None = None

    def row(self) -> LedgerRow:
        return LedgerRow(**{f.name: getattr(self, f.name) for f in fields(LedgerRow)})


# Everything a stored sale writes, in one statement (one round trip). ON CONFLICT DO NOTHING on the
# order makes every dependent insert a no-op and the ledger row a duplicate pointing at the first file.
STORE_ORDER = f"""
WITH o AS (
    INSERT INTO orders (retailer_id, external_id, order_type, status_id, store_id, order_date, ordered_at,
                        currency, grand_total, oms_payload, tlog_file_id)
    VALUES (%(r)s, %(x)s, %(t)s, %(s)s, %(store)s, %(d)s, %(at)s, %(c)s, %(g)s, %(p)s, %(f)s)
    ON CONFLICT (retailer_id, external_id) DO NOTHING
    RETURNING id
), items AS (
    INSERT INTO order_items (order_id, item_seq, product_id, gtin, quantity, unit_price, tax, line_total,
                             fulfillment, status_id, facility_id)
    SELECT o.id, u.* FROM o, unnest(%(seq)s::int[], %(pid)s::text[], %(gtin)s::text[], %(q)s::int[],
        %(up)s::numeric[], %(tax)s::numeric[], %(lt)s::numeric[], %(ff)s::text[], %(st)s::text[],
        %(fac)s::text[]) AS u
), payments AS (
    INSERT INTO order_payments (order_id, seq, payment_method_type_id, pos_payment_method, amount, status_id)
    SELECT o.id, u.* FROM o, unnest(%(pseq)s::int[], %(pm)s::text[], %(ppm)s::text[], %(pa)s::numeric[],
        %(pst)s::text[]) AS u
), adjustments AS (
    INSERT INTO order_adjustments (order_id, seq, item_seq, adjustment_type, amount)
    SELECT o.id, u.* FROM o, unnest(%(aseq)s::int[], %(aitem)s::int[], %(at_)s::text[], %(aa)s::numeric[]) AS u
), followups AS (
    -- the outbox: written with the order, so a follow-up whose message is lost is found and sent again
    INSERT INTO order_followups (order_id, kind, retailer_id, sent_at)
    SELECT o.id, k, %(r)s, now() FROM o, unnest(%(k)s::text[]) AS k
), first_file AS (
    SELECT tlog_file_id FROM orders WHERE retailer_id = %(r)s AND external_id = %(x)s
), final AS (
    UPDATE tlog_files SET
        status = CASE WHEN EXISTS (SELECT 1 FROM o) THEN 'processed' ELSE 'duplicate' END,
        duplicate_of = CASE WHEN EXISTS (SELECT 1 FROM o) THEN NULL ELSE (SELECT tlog_file_id FROM first_file) END,
        error = CASE WHEN EXISTS (SELECT 1 FROM o) THEN NULL
                ELSE 'order ' || %(x)s || ' already stored from ledger row '
                     || coalesce((SELECT tlog_file_id FROM first_file)::text, 'another file') || '; not imported again'
                END,
        sha256 = %(sha)s, size = coalesce(%(size)s, size), finished_at = now()
    WHERE id = %(f)s
    RETURNING {ROW_COLUMNS}
)
SELECT final.*, (SELECT id FROM o) AS order_id FROM final
"""


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
                    {"r": self.retailer_id, "f": self.feed, "n": [c.file_name for c in live],
                     "p": [c.remote_path for c in live], "s": [c.size for c in live],
                     "m": [c.mtime for c in live]},
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
                    {"r": self.retailer_id, "f": self.feed, "n": [c.file_name for c in dups],
                     "p": [c.remote_path for c in dups], "s": [c.size for c in dups],
                     "m": [c.mtime for c in dups], "e": [c.error for c in dups]},
                )
                inserted += cur.fetchall()
        return inserted

    def claim_again(self, old: LedgerRow, remote_path: str) -> LedgerRow:
        return claim_again(self.conn, self.retailer_id, self.feed, old, remote_path)

    def mark_dispatched(self, ids: Sequence[int]) -> None:
        if ids:
            self.conn.execute("UPDATE tlog_files SET dispatched_at = now() WHERE id = ANY(%(ids)s)",
                              {"ids": list(ids)})


class PgReplay:
    def __init__(self, conn: psycopg.Connection[Any], retailer_id: str, feed: str):
        self.conn, self.retailer_id, self.feed = conn, retailer_id, feed

    def latest(self, file_name: str) -> LedgerRow | None:
        with self.conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(f"SELECT {ROW_COLUMNS} FROM tlog_files WHERE retailer_id = %s AND feed = %s"
                        " AND file_name = %s ORDER BY id DESC LIMIT 1", (self.retailer_id, self.feed, file_name))
            return cur.fetchone()

    def claim_again(self, old: LedgerRow, remote_path: str) -> LedgerRow:
        return claim_again(self.conn, self.retailer_id, self.feed, old, remote_path)


def claim_again(conn: psycopg.Connection[Any], retailer_id: str, feed: str, old: LedgerRow,
                remote_path: str) -> LedgerRow:
    """A new claimed row for the same name; the old one keeps its status and points at the new."""
    with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
        conn.execute("UPDATE tlog_files SET replayed_by = -1 WHERE id = %s", (old.id,))
        cur.execute("INSERT INTO tlog_files (retailer_id, feed, file_name, remote_path, size, mtime, dispatched_at)"
                    f" VALUES (%s, %s, %s, %s, %s, %s, now()) RETURNING {ROW_COLUMNS}",
                    (retailer_id, feed, old.file_name, remote_path, old.size, old.mtime))
        new = cur.fetchone()
        assert new is not None
        conn.execute("UPDATE tlog_files SET replayed_by = %s WHERE id = %s", (new.id, old.id))
        return new


class PgLedger:
    """Ledger and orders on a psycopg connection pool (one pool per worker process)."""

    def __init__(self, db: Database):
        self.db = db

    def now(self) -> datetime:
        with transient_db_errors(), self.db.connection() as conn:
            row = conn.execute("SELECT now()").fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

    @contextmanager
    def scan_transaction(self, retailer_id: str, feed: str) -> Iterator[PgScanTransaction]:
        with transient_db_errors(), self.db.connection() as conn, conn.transaction():
            # Two scans of one retailer at once (two beats, a manual scan) take turns here;
            # the second then sees the first one's claims and dispatches nothing twice.
            conn.execute("SET LOCAL lock_timeout = '60s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (scan_lock_key(retailer_id, feed),))
            yield PgScanTransaction(conn, retailer_id, feed)

    def get(self, file_id: int) -> LedgerRow | None:
        with transient_db_errors(), self.db.connection() as conn, \
                conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute(f"SELECT {ROW_COLUMNS} FROM tlog_files WHERE id = %s", (file_id,))
            return cur.fetchone()

    def start_attempt(self, file_id: int) -> LedgerRow | None:
        with transient_db_errors(), self.db.connection() as conn, \
                conn.cursor(row_factory=class_row(LedgerRow)) as cur:
            cur.execute("UPDATE tlog_files SET attempts = attempts + (status = 'claimed')::int WHERE id = %s"
                        f" RETURNING {ROW_COLUMNS}", (file_id,))
            return cur.fetchone()

    def forgive_attempt(self, file_id: int) -> None:
        """A transient failure was handled cleanly: it does not count toward the poison-message bound."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute("UPDATE tlog_files SET attempts = greatest(attempts - 1, 0) WHERE id = %s"
                         " AND status = 'claimed'", (file_id,))

    def record_dead_letter(self, task_id: str, task_name: str, queue: str, args: Any, kwargs: Any, reason: str,
                           retailer_id: str | None) -> None:
        """Keep why a message was dead-lettered (the broker only says 'rejected')."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO dead_letters (task_id, task_name, queue, args, kwargs, reason, retailer_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (task_id) DO UPDATE SET reason = EXCLUDED.reason,"
                " created_at = now(), replayed_at = NULL",
                (task_id, task_name, queue, Jsonb(list(args)), Jsonb(dict(kwargs)), reason, retailer_id))

    def dead_letter_reasons(self, task_ids: Sequence[str]) -> dict[str, tuple[str, datetime]]:
        with transient_db_errors(), self.db.connection() as conn:
            return {row[0]: (row[1], row[2]) for row in conn.execute(
                "SELECT task_id, reason, created_at FROM dead_letters WHERE task_id = ANY(%s)", (list(task_ids),))}

    def mark_replayed(self, task_ids: Sequence[str]) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE task_id = ANY(%s)", (list(task_ids),))

    @contextmanager
    def replay_transaction(self, retailer_id: str, feed: str) -> Iterator[PgReplay]:
        """Under the scan lock: a scan cannot mistake a file being replayed for a reappearing one."""
        with self.scan_transaction(retailer_id, feed) as tx:
            yield PgReplay(tx.conn, retailer_id, feed)

    def rows(self, ids: Sequence[int]) -> Iterator[LedgerRow]:
        with transient_db_errors(), self.db.connection() as conn, \
                conn.cursor(row_factory=class_row(LedgerRow)) as cur:
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
            raise TransientError(f"ledger row {file_id}: repeated unique violations")

    def _record_once(self, file_id: int, outcome: Outcome) -> Recorded:
        """Two statements and a commit, pipelined: lock the row and look for the same content, then store
        the order, its parts, its follow-ups and the ledger's final status in one statement."""
        with self.db.connection() as conn, conn.pipeline(), conn.transaction():
            cur = conn.cursor(row_factory=class_row(LockedRow))
            locked = cur.execute(
                f"SELECT {ROW_COLUMNS_T},"
                " (SELECT x.id FROM tlog_files x WHERE x.retailer_id = t.retailer_id AND x.feed = t.feed"
                "  AND x.sha256 = %(sha)s AND x.status IN ('processed', 'skipped') LIMIT 1) AS same_content"
                " FROM tlog_files t WHERE t.id = %(id)s FOR UPDATE OF t",
                {"id": file_id, "sha": outcome.sha256}).fetchone()
            assert locked is not None
            row = locked.row()
            if row.status != CLAIMED:
                # Another delivery of the same message got here first: nothing more to do.
                return Recorded(row)
            status, error, duplicate_of = outcome.status, outcome.error, None
            if locked.same_content and status in (PROCESSED, SKIPPED):
                status, duplicate_of = DUPLICATE, locked.same_content
                error = f"same content as ledger row {locked.same_content}; not imported again"
            if status == PROCESSED and outcome.order is not None:
                return self._store_order(conn, row, outcome)
            return_id = None
            if status == PROCESSED and outcome.ret is not None:
                return_id, existing = self._store_return(conn, row, outcome)
                if return_id is None:
                    status, duplicate_of = DUPLICATE, existing
                    error = f"return {outcome.ret.external_id} already stored from ledger row {existing}"
            applied = rejected = None
            if status == PROCESSED and outcome.variance is not None:
                status, error, applied, rejected = self._apply_variance_file(conn, row, outcome.variance)
            updated = conn.cursor(row_factory=class_row(LedgerRow)).execute(
                "UPDATE tlog_files SET status = %(st)s, error = %(e)s, sha256 = %(sha)s,"
                " size = coalesce(%(size)s, size), duplicate_of = %(dup)s, finished_at = now(),"
                " records_applied = %(ap)s, records_rejected = %(rj)s"
                f" WHERE id = %(id)s RETURNING {ROW_COLUMNS}",
                {"st": status, "e": error, "sha": outcome.sha256, "size": outcome.size, "dup": duplicate_of,
                 "id": file_id, "ap": applied, "rj": rejected},
            ).fetchone()
            assert updated is not None
            return Recorded(updated, return_id if status == PROCESSED and outcome.ret else None, applied, rejected)

    def _apply_variance_file(self, conn: psycopg.Connection[Any], row: LedgerRow,
                             parsed: VarianceFile) -> tuple[str, str | None, int, int]:
        """Apply what can be applied; record every rejected record with its reason. A file with none applied fails."""
        label = "record" if parsed.format == "json" else "line"
        applied, rejected = apply_variance_records(conn, row.retailer_id, row.id, parsed.records, label)
        rejected = sorted([(r.line, r.reason) for r in parsed.rejected] + rejected)
        if rejected:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO variance_rejections (tlog_file_id, line, reason) VALUES (%s, %s, %s)"
                                " ON CONFLICT DO NOTHING", [(row.id, line, reason) for line, reason in rejected])
        total = applied + len(rejected)
        summary = None
        if rejected:
            shown = "; ".join(reason for _, reason in rejected[:5])
            more = f"; and {len(rejected) - 5} more" if len(rejected) > 5 else ""
            summary = f"{len(rejected)} of {total} records rejected: {shown}{more}"
        status = FAILED if applied == 0 else PROCESSED
        return status, summary, applied, len(rejected)

    def _store_order(self, conn: psycopg.Connection[Any], row: LedgerRow, outcome: Outcome) -> Recorded:
        """One statement: the order, its lines, payments, adjustments and follow-ups, and the ledger row made
        final (processed, or duplicate when the order id is already stored)."""
        order = outcome.order
        assert order is not None
        ordered_at = (datetime.fromtimestamp(order.ordered_at_ms / 1000, UTC)
                      if order.ordered_at_ms is not None else None)
        lines, pays, adj = order.lines, order.payments, order.adjustments
        found = conn.cursor(row_factory=class_row(StoredRow)).execute(
            STORE_ORDER,
            {"r": row.retailer_id, "x": order.external_id, "t": order.order_type, "s": order.status_id,
             "store": order.store_id, "d": order.order_date, "at": ordered_at, "c": order.currency,
             "g": order.grand_total, "p": Jsonb(order.payload, dumps=_dumps), "f": row.id,
             "seq": [x.item_seq for x in lines], "pid": [x.product_id for x in lines],
             "gtin": [x.gtin for x in lines], "q": [x.quantity for x in lines],
             "up": [x.unit_price for x in lines], "tax": [x.tax for x in lines],
             "lt": [x.line_total for x in lines], "ff": [x.fulfillment for x in lines],
             "st": [x.status_id for x in lines], "fac": [x.facility_id for x in lines],
             "pseq": [p.seq for p in pays], "pm": [p.payment_method_type_id for p in pays],
             "ppm": [p.pos_payment_method for p in pays], "pa": [p.amount for p in pays],
             "pst": [p.status_id for p in pays],
             "aseq": [a.seq for a in adj], "aitem": [a.item_seq for a in adj],
             "at_": [a.adjustment_type for a in adj], "aa": [a.amount for a in adj],
             "k": list(outcome.followups), "sha": outcome.sha256, "size": outcome.size}).fetchone()
        assert found is not None
        return Recorded(found.row(), found.order_id)

    def _store_return(self, conn: psycopg.Connection[Any], row: LedgerRow,
                      outcome: Outcome) -> tuple[int | None, int | None]:
        """The return, its items and refunds, linked to its sale when that is stored; returned merchandise
        back on the store's shelf (one POS_RETURN variance per line, once). (return id, None) or (None, the
        ledger row that stored it first)."""
        ret = outcome.ret
        assert ret is not None
        returned_at = (datetime.fromtimestamp(ret.ordered_at_ms / 1000, UTC)
                       if ret.ordered_at_ms is not None else None)
        found = conn.execute(
            "INSERT INTO returns (retailer_id, external_id, original_external_id, original_order_id, store_id,"
            " return_date, returned_at, currency, refund_total, discount, tax, tlog_file_id)"
            " VALUES (%(r)s, %(x)s, %(ox)s, (SELECT id FROM orders WHERE retailer_id = %(r)s AND external_id = %(ox)s),"
            " %(store)s, %(d)s, %(at)s, %(c)s, %(total)s, %(disc)s, %(tax)s, %(f)s)"
            " ON CONFLICT (retailer_id, external_id) DO NOTHING RETURNING id",
            {"r": row.retailer_id, "x": ret.external_id, "ox": ret.original_order_id, "store": ret.store_id,
             "d": ret.return_date, "at": returned_at, "c": ret.currency, "total": ret.refund_total,
             "disc": ret.discount, "tax": ret.tax, "f": row.id}).fetchone()
        if found is None:
            first = conn.execute("SELECT tlog_file_id FROM returns WHERE retailer_id = %s AND external_id = %s",
                                 (row.retailer_id, ret.external_id)).fetchone()
            return None, first[0] if first else None
        return_id = int(found[0])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO return_items (return_id, item_seq, product_id, gtin, quantity, unit_price, tax,"
                " line_total, original_external_id, restock, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s)", [(return_id, x.item_seq, x.product_id, x.gtin, x.quantity, x.unit_price, x.tax, x.line_total,
                          x.original_order_id, x.restock, x.reason) for x in ret.lines])
            if ret.refunds:
                cur.executemany(
                    "INSERT INTO return_refunds (return_id, seq, payment_method_type_id, pos_payment_method, amount)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [(return_id, r.seq, r.payment_method_type_id, r.pos_payment_method, r.amount)
                     for r in ret.refunds])
        if outcome.restock:
            for line in ret.lines:
                if not line.restock:
                    continue
                product_id = conn.execute(
                    "SELECT product_id FROM inventory WHERE retailer_id = %s AND gtin = %s"
                    " ORDER BY (facility_id = %s) DESC LIMIT 1", (row.retailer_id, line.gtin, ret.store_id)).fetchone()
                variance = Variance(ret.store_id, "UPCA", line.gtin, line.quantity, POS_RETURN,
                                    f"return:{return_id}:{line.item_seq}", line.product_id,
                                    comments=f"POS return {ret.external_id}")
                apply_variance(conn, row.retailer_id, variance,
                               product_id[0] if product_id else (line.product_id or line.gtin))
        return return_id, None

    def mark_moved(self, file_id: int, moved_to: str | None) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute("UPDATE tlog_files SET moved_at = now(), moved_to = %s WHERE id = %s AND moved_at IS NULL",
                         (moved_to, file_id))

    def clear_dispatched(self, ids: Sequence[int]) -> None:
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute("UPDATE tlog_files SET dispatched_at = NULL WHERE id = ANY(%s) AND status = 'claimed'",
                         (list(ids),))

    def record_scan(self, run_id: str, retailer_id: str, requested_by: str, started_at: datetime,
                    result: ScanResult | None = None, error: str | None = None, will_retry: bool = False) -> None:
        """Upsert the scan run (a retried scan keeps its id): what `scan --wait` and `status` read."""
        with transient_db_errors(), self.db.connection() as conn:
            conn.execute(
                "INSERT INTO scan_runs (id, retailer_id, requested_by, started_at, listed, too_young, dispatched,"
                " deferred, pending_ids, error, will_retry)"
                " VALUES (%(id)s, %(r)s, %(by)s, %(at)s, %(l)s, %(y)s, %(d)s, %(df)s, %(p)s, %(e)s, %(w)s)"
                " ON CONFLICT (id) DO UPDATE SET finished_at = now(), listed = EXCLUDED.listed,"
                " too_young = EXCLUDED.too_young, dispatched = EXCLUDED.dispatched, deferred = EXCLUDED.deferred,"
                " pending_ids = EXCLUDED.pending_ids, error = EXCLUDED.error, will_retry = EXCLUDED.will_retry",
                {"id": run_id, "r": retailer_id, "by": requested_by, "at": started_at,
                 "l": result.listed if result else 0, "y": result.too_young if result else 0,
                 "d": len(result.dispatch) if result else 0, "df": result.deferred if result else 0,
                 "p": result.pending_ids if result else [], "e": error, "w": will_retry},
            )

    def status_counts(self) -> list[tuple[str, str, str, int]]:
        """(retailer, feed, status, count) for the operator's status view."""
        with transient_db_errors(), self.db.connection() as conn:
            return conn.execute(
                "SELECT retailer_id, feed, status, count(*) FROM tlog_files GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).fetchall()
