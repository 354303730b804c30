"""The replay use case: a file someone fixed in error_dir goes back through the normal path."""

from __future__ import annotations

from worker.services.feeds import Feed, join, unsafe_name_reason
from worker.services.ports import FAILED, FileLedger, FileSource, LedgerRow


class ReplayRefused(Exception):
    """replay-file cannot take this file (not failed, not in error_dir, unsafe name)."""


def replay_file(retailer_id: str, feed: Feed, file_name: str, source: FileSource, ledger: FileLedger) -> LedgerRow:
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
            raise ReplayRefused(
                f"{file_name}: ledger row {old.id} is {old.status}; only failed files that were"
                " moved to error_dir are replayed"
            )
        inbound = join(feed.directory, file_name)
        new = tx.claim_again(old, inbound)
        if not source.move(join(feed.error_dir, file_name), inbound):
            raise ReplayRefused(f"{file_name} is not in {feed.error_dir}")
    return new
