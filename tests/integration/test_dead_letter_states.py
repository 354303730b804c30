"""Dead letters that mean something, on PostgreSQL: resolved when their work is done by another path, purged and
replayed marks, and what the unresolved count (the alert's series) includes."""

from __future__ import annotations

import secrets

from worker.adapters.postgres.deadletters import PgDeadLetters
from worker.adapters.postgres.operations import FILE_FAILED, GAVE_UP, PgOperations
from worker.services.ports import Claim, Outcome


def _retailer() -> str:
    return f"dl_{secrets.token_hex(3)}"


def _claim(ledger, retailer: str, name: str) -> int:
    with ledger.scan_transaction(retailer, "orders") as tx:
        [row] = tx.claim([Claim(name, f"/in/{name}", 1, 1.0)])
    return row.id


def _open(dead: PgDeadLetters, queue: str) -> int:
    return dict(dead.open_by_queue()).get(queue, 0)


def test_a_dead_ingest_is_resolved_once_its_file_is_finished_by_another_path(database, ledger, db):
    dead, retailer = PgDeadLetters(database), _retailer()
    file_id = _claim(ledger, retailer, "a.json")
    task = f"t-{secrets.token_hex(4)}"
    dead.record(task, "tlogsync.ingest_tlog", "tlog.ingest", (retailer, file_id, "a.json"), {}, "boom", retailer)
    before = _open(dead, "tlog.ingest")
    assert dead.resolve_done(retailer) == 0  # still claimed: nothing done yet
    assert dead.letters([task])[task].state == "dead"
    ledger.start_attempt(file_id, retailer, "orders")
    ledger.record(file_id, Outcome("skipped", "0" * 64, 1, "in-store, not the order master"))  # finished
    assert dead.resolve_done(retailer) == 1
    row = dead.letters([task])[task]
    assert row.state == "resolved" and f"ledger row {file_id}" in (row.resolution or "")
    assert _open(dead, "tlog.ingest") == before - 1
    # dead again (a replay that died): open again, the old resolution gone
    dead.record(task, "tlogsync.ingest_tlog", "tlog.ingest", (retailer, file_id, "a.json"), {}, "again", retailer)
    assert dead.letters([task])[task].state == "dead" and dead.letters([task])[task].resolution is None


def test_a_file_given_up_before_its_dead_letter_stays_unresolved(database, ledger):
    dead, retailer = PgDeadLetters(database), _retailer()
    file_id = _claim(ledger, retailer, "poison.json")
    ledger.start_attempt(file_id, retailer, "orders")
    ledger.record(file_id, Outcome("failed", error="gave up after 25 attempts"))  # then dead-lettered
    task = f"t-{secrets.token_hex(4)}"
    dead.record(task, "tlogsync.ingest_tlog", "tlog.ingest", (retailer, file_id, "poison.json"), {}, "GaveUp", retailer)
    dead.resolve_done(retailer)
    assert dead.letters([task])[task].state == "dead"  # ops must look at it (Replay file, then purge)


def test_forged_ids_never_match_and_never_break_the_sweep(database):
    dead, retailer = PgDeadLetters(database), _retailer()
    for args in ((retailer, "12; DROP TABLE x", "n"), (retailer, 10**30, "n"), (retailer, -1, "n"), (retailer,)):
        dead.record(f"t-{secrets.token_hex(4)}", "tlogsync.ingest_tlog", "tlog.ingest", args, {}, "x", retailer)
    assert dead.resolve_done(retailer) == 0


def test_a_scan_dead_letter_is_resolved_by_a_later_successful_scan(database, ledger):
    dead, retailer = PgDeadLetters(database), _retailer()
    task = f"t-{secrets.token_hex(4)}"
    dead.record(task, "tlogsync.scan_retailer", "tlog.scan", (retailer,), {}, "SftpConfigError: bad key", retailer)
    started = ledger.now()
    ledger.record_scan(f"s-{secrets.token_hex(4)}", retailer, "beat", started, error="still bad")
    assert dead.resolve_done(retailer) == 0
    ledger.record_scan(f"s-{secrets.token_hex(4)}", retailer, "beat", ledger.now())
    assert dead.resolve_done(retailer) == 1
    assert dead.letters([task])[task].resolution == "a later scan of the retailer succeeded"


def test_purged_and_replayed_letters_are_marked_and_not_counted(database):
    dead, retailer = PgDeadLetters(database), _retailer()
    purged, replayed = f"t-{secrets.token_hex(4)}", f"t-{secrets.token_hex(4)}"
    for task in (purged, replayed):
        dead.record(task, "tlogsync.run_brokering", "brokering", (retailer,), {}, "x", retailer)
    before = _open(dead, "brokering")
    assert dead.mark_purged([purged], "ops") == 1
    dead.mark_replayed([replayed], by="ops", replayed_as="t-new")
    rows = dead.letters([purged, replayed])
    assert (rows[purged].state, rows[purged].purged_by) == ("purged", "ops")
    assert (rows[replayed].state, rows[replayed].replayed_as) == ("replayed", "t-new")
    assert _open(dead, "brokering") == before - 2
    assert dead.mark_resolved(replayed, "its replay succeeded") and not dead.mark_resolved(replayed, "again")
    assert {r.task_id for r in dead.history(100)} >= {purged, replayed}


def test_failures_keep_their_arguments_and_given_up_scans_are_counted(database):
    ops, retailer = PgOperations(database), _retailer()
    ops.record_failure(
        "f-1-" + retailer,
        "tlogsync.ingest_tlog",
        "tlog.ingest",
        FILE_FAILED,
        [retailer, 7, "x.json"],
        {},
        "bad total",
        retailer,
        7,
    )
    ops.record_failure(
        "g-1-" + retailer,
        "tlogsync.scan_retailer",
        "tlog.scan",
        GAVE_UP,
        [retailer],
        {},
        "retries exhausted",
        retailer,
        None,
    )
    ops.record_failure(
        "g-2-" + retailer,
        "tlogsync.scan_retailer",
        "tlog.scan",
        GAVE_UP,
        [retailer, "x" * 5000],
        {},
        "retries exhausted",
        retailer,
        None,
    )
    failure = ops.failure("f-1-" + retailer)
    assert failure is not None and failure.args == [retailer, 7, "x.json"] and failure.file_id == 7
    assert "characters cut" in str(ops.failure("g-2-" + retailer).args)  # a forged argument stays small
    [given_up] = [g for g in ops.given_up() if g.retailer_id == retailer]
    assert (given_up.task_name, given_up.count) == ("tlogsync.scan_retailer", 2)
    action = ops.start_action("ops", "retry task", {"task_id": "g-1-" + retailer}, "127.0.0.1")
    assert ops.action(action).ok is None
    ops.finish_action(action, True, "sent")
    done = ops.action(action)
    assert (done.actor, done.ok, done.result) == ("ops", True, "sent") and done.finished_at is not None
