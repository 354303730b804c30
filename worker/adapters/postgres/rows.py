"""The ledger row as the statements return it: shared by the files ledger and the orders written with it."""

from __future__ import annotations

from dataclasses import fields

from worker.services.ports import LedgerRow

ROW_COLUMNS = (
    "id, retailer_id, feed, file_name, remote_path, size, mtime, status, error, attempts,"
    " dispatched_at, finished_at, moved_at, moved_to"
)
ROW_COLUMNS_T = ", ".join(f"t.{c.strip()}" for c in ROW_COLUMNS.split(","))


def ledger_row(row: LedgerRow) -> LedgerRow:
    """The plain ledger row of a row type that carries more columns."""
    return LedgerRow(**{f.name: getattr(row, f.name) for f in fields(LedgerRow)})
