"""The ingest use case: read, decide and record one claimed file, then move it out of the inbound folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from worker.core.errors import FileMissing, FileTooLarge, GaveUp, NotFound, Permanent, WrongFeed, WrongRetailer
from worker.core.inventory import InputError, VarianceFileApplied, parse_variance_file
from worker.core.lifecycle import parse_fulfillment_file
from worker.core.oms import to_order
from worker.core.retailers import Retailer
from worker.core.returns import Return, has_both, is_return, to_return
from worker.core.routing import followups_for
from worker.core.salefacts import partial_facts, return_facts, sale_facts, salvage_facts
from worker.core.tlog import TLogError, decode, validate_sale
from worker.services.feeds import Feed, join, safe_local_name, unsafe_name_reason
from worker.services.ports import (
    CLAIMED,
    CONFLICT,
    DUPLICATE,
    FAILED,
    PROCESSED,
    SKIPPED,
    FileLedger,
    FileSource,
    FinalStatus,
    LedgerRow,
    Outcome,
)


@dataclass(frozen=True)
class IngestResult:
    file_id: int
    file_name: str
    status: str
    error: str | None = None
    order_id: int | None = None
    order_type: str | None = None
    moved_to: str | None = None
    followups: tuple[str, ...] = ()  # to publish now that the order is committed
    records_applied: int | None = None
    records_rejected: int | None = None
    move_error: str | None = None  # the move out of the inbound folder failed: tried again later, with backoff
    runs: tuple[str, ...] = ()  # the routing runs to start now the order is committed (none was pending)


@dataclass(frozen=True)
class Committed:
    """A file's ingest as committed, before its move: what may be published now."""

    row: LedgerRow
    result: IngestResult
    gave_up: bool = False


@dataclass(frozen=True)
class MoveBackoff:
    """How long a final file whose move failed waits for the next try: min(cap, base * 2**failures)."""

    base_seconds: float = 2.0
    cap_seconds: float = 300.0


class UnknownFile(NotFound):
    """The ledger has no such row: the message does not belong to this database."""


def decide(data: bytes, retailer: Retailer) -> Outcome:
    """Pure: what a TLog file's bytes become (an order to store, a skip or a failure), with the facts the audit
    keeps in the ledger (business day, store, register, what was sold)."""
    digest = hashlib.sha256(data).hexdigest()
    document = None
    try:
        document = decode(data)
        if has_both(document):
            raise TLogError(
                "orderProductList and returnProductList both hold items; an exchange comes as a sale"
                " file and a return file",
                str(document.get("orderId")),
            )
        if is_return(document):
            ret = to_return(document, retailer)
            facts = return_facts(document, ret)
            return Outcome(PROCESSED, digest, len(data), ret=ret, restock=retailer.sales_lower_stock, facts=facts)
        sale = validate_sale(document)
        facts = sale_facts(document, sale)
        order = to_order(sale, retailer)
    except TLogError as exc:
        facts = partial_facts(document) if document is not None else salvage_facts(data)
        return Outcome(FAILED, digest, len(data), str(exc), facts=facts)
    if order.order_type == "IN_STORE" and not retailer.order_master:
        return Outcome(
            SKIPPED,
            digest,
            len(data),
            f"order {order.external_id}: in-store sale and retailer is not the order master;"
            " inventory comes from the variance feed",
            facts=facts,
        )
    return Outcome(PROCESSED, digest, len(data), order=order, followups=followups_for(order, retailer), facts=facts)


def decide_variance(data: bytes, retailer: Retailer | None = None) -> Outcome:
    """Pure: a variance file's bytes become records to apply, or a failure of the whole file. For a retailer whose
    in-store sales lower stock, the feed's POS_SALE records are ignored (counted, never applied): one source of
    truth for in-store decrements."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        parsed = parse_variance_file(data)
    except InputError as exc:
        return Outcome(FAILED, digest, len(data), str(exc))
    if retailer is not None and retailer.sales_lower_stock:
        kept = tuple(r for r in parsed.records if r.reason_id != "POS_SALE")
        parsed = replace(parsed, records=kept, ignored=len(parsed.records) - len(kept))
    return Outcome(PROCESSED, digest, len(data), variance=parsed)


def decide_fulfillment(data: bytes) -> Outcome:
    """Pure: a fulfilment file's bytes (CSV or JSON, told apart by content) become records, or a failure."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        parsed = parse_fulfillment_file(data)
    except InputError as exc:
        return Outcome(FAILED, digest, len(data), str(exc))
    return Outcome(PROCESSED, digest, len(data), fulfillment=parsed)


def content_checked(outcome: Outcome, same_content: int | None) -> FinalStatus:
    """A processed or skipped file whose bytes an earlier row already holds is a duplicate of that row;
    otherwise the file is what ingest decided. same_content: that earlier row, if any."""
    if same_content and outcome.status in (PROCESSED, SKIPPED):
        return FinalStatus(DUPLICATE, f"same content as ledger row {same_content}; not imported again", same_content)
    return FinalStatus(outcome.status, outcome.error)


def return_stored_before(ret: Return, first_file: int | None) -> FinalStatus:
    """A return whose id is stored already is a duplicate of the file that stored it."""
    return FinalStatus(DUPLICATE, f"return {ret.external_id} already stored from ledger row {first_file}", first_file)


def variance_file_final(applied: VarianceFileApplied) -> FinalStatus:
    """A variance file fails when none of its records was applied; its error lists the rejected ones."""
    return FinalStatus(FAILED if applied.failed else PROCESSED, applied.summary)


def ingest_file(
    file_id: int,
    feed: Feed,
    source: FileSource,
    ledger: FileLedger,
    max_bytes: int,
    decide_outcome: Callable[[bytes], Outcome],
    max_attempts: int = 25,
    backoff: MoveBackoff = MoveBackoff(),
    *,
    retailer_id: str,
) -> IngestResult:
    """Read, decide and record one claimed file in one transaction, then move it out of the inbound folder
    (record_file, then move_file; a caller with routing runs to start calls the two itself, publishing between)."""
    committed = record_file(
        file_id, feed, source, ledger, max_bytes, decide_outcome, max_attempts, retailer_id=retailer_id
    )
    return move_file(committed, feed, source, ledger, backoff)


def record_file(
    file_id: int,
    feed: Feed,
    source: FileSource,
    ledger: FileLedger,
    max_bytes: int,
    decide_outcome: Callable[[bytes], Outcome],
    max_attempts: int = 25,
    *,
    retailer_id: str,
) -> Committed:
    """Read, decide and record one claimed file in one transaction; the result as committed, not yet moved.

    Safe to run any number of times for the same file: a row that is already final is returned as it is.
    A file whose task keeps dying (max_attempts starts) is failed with that reason (move_file then raises
    GaveUp after the move, so the message is dead-lettered instead of looping). A row of another retailer or
    feed than the message's is refused (WrongRetailer, WrongFeed) before anything is counted, read or moved.
    """
    row = ledger.start_attempt(file_id, retailer_id, feed.name)
    if row is None:
        raise UnknownFile(f"no ledger row {file_id}")
    refuse_foreign(row, retailer_id, feed)
    order_id = order_type = None
    followups: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    applied = rejected = None
    gave_up = row.status == CLAIMED and row.attempts > max_attempts
    if gave_up:
        reason = f"gave up after {row.attempts - 1} attempts: the task crashed, timed out or kept failing on this file"
        row = ledger.record(file_id, Outcome(FAILED, error=reason)).row
    elif row.status == CLAIMED:
        outcome = read_and_decide(row, source, max_bytes, decide_outcome)
        recorded = ledger.record(file_id, outcome)
        row, order_id = recorded.row, recorded.order_id
        applied, rejected = recorded.records_applied, recorded.records_rejected
        if outcome.order and order_id:
            order_type, followups, runs = outcome.order.order_type, outcome.followups, recorded.triggered
        elif outcome.fulfillment is not None:
            runs = recorded.triggered  # a line rejected back to the brokering queue
    result = IngestResult(
        row.id, row.file_name, row.status, row.error, order_id, order_type, row.moved_to, followups, applied, rejected
    )
    result = replace(result, runs=runs)
    return Committed(row, result, gave_up)


def move_file(
    committed: Committed, feed: Feed, source: FileSource, ledger: FileLedger, backoff: MoveBackoff
) -> IngestResult:
    """Move a recorded file out of the inbound folder, if it is not moved yet.

    A move the folders refuse (permission denied, a file already at the destination, no such folder) is not
    a task failure: the row stays final and unmoved, the failure is counted in the ledger with the time of
    the next try (exponential backoff), and a later scan sends the file once that time has come.
    """
    row, moved_to, move_error = committed.row, committed.row.moved_to, None
    if row.moved_at is None:
        try:
            moved_to = finish_move(row, feed, source)
        except (OSError, Permanent) as exc:
            move_error = f"{row.file_name}: cannot move to {destination(row, feed)}: {describe(exc)}"
            ledger.move_failed(row.id, move_error, backoff.base_seconds, backoff.cap_seconds)
            moved_to = None
        else:
            ledger.mark_moved(row.id, moved_to)
    if committed.gave_up:
        raise GaveUp(f"{row.file_name}: {row.error}")
    return replace(committed.result, moved_to=moved_to, move_error=move_error)


def refuse_foreign(row: LedgerRow, retailer_id: str, feed: Feed) -> None:
    """A message's ids must be of the retailer (and feed) it names: under another's rules a file would be
    judged wrongly and moved into the other's folders, and its owner would find it final."""
    if row.retailer_id != retailer_id:
        raise WrongRetailer(f"ledger row {row.id} belongs to retailer {row.retailer_id}, not {retailer_id}")
    if row.feed != feed.name:
        raise WrongFeed(f"ledger row {row.id} is {_a(row.feed)} file, not {_a(feed.name)} file")


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def describe(exc: BaseException) -> str:
    """An error as operators read it: its kind and message (an OSError's strerror and path, not its errno)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def read_and_decide(
    row: LedgerRow, source: FileSource, max_bytes: int, decide_outcome: Callable[[bytes], Outcome]
) -> Outcome:
    reason = unsafe_name_reason(row.file_name)
    if reason:
        return Outcome(FAILED, error=reason)
    if row.size is not None and row.size > max_bytes:
        return Outcome(FAILED, size=row.size, error=f"file is {row.size} bytes, over the {max_bytes}-byte limit")
    try:
        data = source.read(row.remote_path, max_bytes, row.size)
    except FileTooLarge as exc:
        return Outcome(FAILED, error=str(exc))
    except FileMissing:
        return Outcome(FAILED, error="file disappeared from the inbound folder before it was read")
    return decide_outcome(data)


def destination(row: LedgerRow, feed: Feed) -> str:
    """Where a final file goes: error_dir for failures, archive_dir otherwise, as `<ledger id>-<name>`.

    The ledger id makes every destination unique: two names that sanitise alike (`café.json`, `cafè.json`),
    or a file uploaded again under a processed name, never meet in a folder.
    """
    name = safe_local_name(row.file_name) if unsafe_name_reason(row.file_name) else row.file_name[:200]
    stem = f"{row.id}-{name}"
    if row.status in (FAILED, CONFLICT):
        return join(feed.error_dir, stem)
    if row.status == DUPLICATE:
        return join(feed.archive_dir, f"{stem}.duplicate")
    return join(feed.archive_dir, stem)


def finish_move(row: LedgerRow, feed: Feed, source: FileSource) -> str | None:
    """Move a final file out of the inbound folder, never over an existing file; the reason of a failure is
    written next to it (`<ledger id>-<name>.error.txt`)."""
    assert row.status in (PROCESSED, FAILED, SKIPPED, DUPLICATE, CONFLICT)
    dst = destination(row, feed)
    # The note is written once the file is there: a file that disappeared leaves no note about nothing.
    if source.move(row.remote_path, dst):
        write_note(row, dst, source)
        return dst
    # Not in the folder: an earlier delivery moved it (and died before its note?), or someone removed it.
    if not source.exists(dst):
        return None
    if row.status in (FAILED, CONFLICT) and not source.exists(dst + ".error.txt"):
        write_note(row, dst, source)
    return dst


def write_note(row: LedgerRow, dst: str, source: FileSource) -> None:
    if row.status in (FAILED, CONFLICT):
        note = f"{row.file_name}: {row.error}\nledger row {row.id}, failed at {row.finished_at}\n"
        source.write(dst + ".error.txt", note.encode("utf-8", "replace"))
