"""The replay use case: a file someone fixed in error_dir goes back through the normal path."""

from __future__ import annotations

import posixpath
import re

from worker.services.feeds import Feed, join, unsafe_name_reason
from worker.services.ports import CONFLICT, FAILED, FileLedger, FileSource, LedgerRow, ReplayTransaction

# A failed file lies in error_dir as `<ledger id>-<name>`.
ERROR_NAME = re.compile(r"^(\d{1,18})-")


class ReplayRefused(Exception):
    """replay-file cannot take this file (not failed, not in error_dir, unsafe name)."""


def replay_file(retailer_id: str, feed: Feed, file_name: str, source: FileSource, ledger: FileLedger) -> LedgerRow:
    """Put a file someone fixed in error_dir back through the normal path; returns its new ledger row.

    file_name is the name of the file in error_dir: `<ledger id>-<name>` as ingest put it there, or the name the
    file arrived under (its latest row is taken; a fixed copy put in error_dir under that name is the one
    replayed, else its `<ledger id>-<name>`). The file goes back into the inbound folder under the name it
    arrived with.
    The old row keeps its failed status and points at the new one (replayed_by). The claim and the move
    back happen under the scan lock, so no scan takes the file for a reappearance; the move never replaces
    a file of that name in the inbound folder.
    """
    reason = unsafe_name_reason(file_name)
    if reason:
        raise ReplayRefused(f"{file_name!r}: {reason}")
    with ledger.replay_transaction(retailer_id, feed.name) as tx:
        old = _find(tx, file_name)
        if old is None:
            raise ReplayRefused(f"{file_name}: no such file in the {feed.name} ledger of {retailer_id}")
        latest = tx.latest(old.file_name)
        if latest is not None and latest.id != old.id:
            raise ReplayRefused(
                f"{file_name}: ledger row {old.id} was taken again already, as row {latest.id} ({latest.status})"
            )
        if old.status not in (FAILED, CONFLICT) or old.moved_at is None:
            raise ReplayRefused(
                f"{file_name}: ledger row {old.id} is {old.status}; only failed files that were"
                " moved to error_dir (and conflicts) are replayed"
            )
        reason = unsafe_name_reason(old.file_name)
        if reason:
            raise ReplayRefused(
                f"{file_name}: it arrived as {old.file_name!r}: {reason}; upload it again under a safe name"
            )
        # the file named first; for the arrival name, else where ingest put it
        names = [file_name]
        if old.moved_to and posixpath.basename(old.moved_to) != file_name:
            names.append(posixpath.basename(old.moved_to))
        inbound = join(feed.directory, old.file_name)
        new = tx.claim_again(old, inbound)
        try:
            moved = any(source.move(join(feed.error_dir, name), inbound) for name in names)
        except FileExistsError:
            raise ReplayRefused(f"{old.file_name} is in {feed.directory} already; it is not replaced") from None
        if not moved:
            raise ReplayRefused(f"{' or '.join(names)} is not in {feed.error_dir}")
    return new


def _find(tx: ReplayTransaction, file_name: str) -> LedgerRow | None:
    """The row of a name in error_dir (`<ledger id>-<name>`), else the latest row of the name it arrived under."""
    match = ERROR_NAME.match(file_name)
    if match:
        row = tx.row(int(match.group(1)))
        if row is not None and row.moved_to and posixpath.basename(row.moved_to) == file_name:
            return row
    return tx.latest(file_name)
