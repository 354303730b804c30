"""Moves that never overwrite, scans that give way and stay cheap, claims that are never orphaned: the scan
and ingest use cases against the real PostgreSQL and OpenSSH sshd (no workers; the e2e twin runs them)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests import conftest
from tests.unit.fakes import FakeSource
from worker.adapters.postgres.ledger import PgFileLedger
from worker.adapters.postgres.pool import open_pool
from worker.adapters.sftp import SftpSource
from worker.core.retailers import Retailer, load_retailers
from worker.demo.tlogfactory import dumps, make_sale
from worker.services.feeds import Feed, orders_feed
from worker.services.ingest import MoveBackoff, decide, ingest_file
from worker.services.ports import FAILED, PROCESSED
from worker.services.scan import scan_feed, scan_feeds

TIMER = timedelta(minutes=15)


def configured(r: conftest.RetailerDirs) -> tuple[Retailer, Feed]:
    retailer = load_retailers(conftest.RETAILERS_PATH)[r.retailer_id]
    return retailer, orders_feed(retailer)


@pytest.fixture
def sftp():
    opened: list[SftpSource] = []

    def connect(retailer: Retailer) -> SftpSource:
        opened.append(SftpSource(retailer.sftp))
        return opened[-1]

    yield connect
    for source in opened:
        source.close()


def sent(feed: str, files):
    """Publishing, minus the broker: every file counts as sent."""
    return [file_id for file_id, _ in files]


def ingest_all(ids, feed, source, ledger, retailer):
    return [
        ingest_file(i, feed, source, ledger, 10**6, lambda d: decide(d, retailer), retailer_id=retailer.retailer_id)
        for i in ids
    ]


def test_names_that_sanitise_alike_end_up_as_distinct_files_each_with_its_note_bytes_intact(
    make_retailer, ledger, sftp
):
    r = make_retailer()
    names = ["café.json", "cafè.json", "x;y.json", "x_y.json"]
    data = {name: f'{{"broken": {i}'.encode() for i, name in enumerate(names)}
    for name in names:
        r.put(name, data[name])
    retailer, feed = configured(r)
    source = sftp(retailer)
    scanned = scan_feeds(retailer, [feed], source, ledger, 100, TIMER, sent)
    ids = {name: file_id for file_id, name in scanned.dispatch}
    assert sorted(ids) == sorted(names)
    results = ingest_all(ids.values(), feed, source, ledger, retailer)
    assert {x.status for x in results} == {FAILED} and len({x.moved_to for x in results}) == 4
    in_error = sorted(p.name for p in r.error.iterdir())
    assert len(in_error) == 8, in_error  # four files and four notes: nothing replaced
    for name, file_id in ids.items():
        [moved] = [p for p in r.error.iterdir() if p.name.startswith(f"{file_id}-") and p.suffix == ".json"]
        assert moved.read_bytes() == data[name]
        note = r.error / f"{moved.name}.error.txt"
        assert note.read_text().startswith(f"{name}: ") and f"ledger row {file_id}" in note.read_text()
    assert r.inbound_names() == []


def test_a_move_never_replaces_a_file_already_at_the_destination(make_retailer, ledger, db, sftp):
    r = make_retailer()
    r.put("a.json", b"the file being moved")
    (r.archive / "taken.json").write_bytes(b"already here")
    retailer, feed = configured(r)
    source = sftp(retailer)
    with pytest.raises(FileExistsError, match="refusing to replace an existing file"):
        source.move(str(r.inbound / "a.json"), str(r.archive / "taken.json"))
    assert (r.archive / "taken.json").read_bytes() == b"already here"
    assert (r.inbound / "a.json").read_bytes() == b"the file being moved"

    # through ingest: a file planted where the ledger row's file goes stays; the move is retried later
    r.put("sale.json", dumps(make_sale(1, "SEND_SALE", order_prefix=f"X{r.retailer_id[-6:].upper()}")))
    dispatched = dict(scan_feeds(retailer, [feed], source, ledger, 100, TIMER, sent).dispatch)
    [file_id] = [i for i, name in dispatched.items() if name == "sale.json"]
    planted = r.archive / f"{file_id}-sale.json"
    planted.write_bytes(b"planted")
    [result] = ingest_all([file_id], feed, source, ledger, retailer)
    assert result.status == PROCESSED and result.moved_to is None
    assert "refusing to replace an existing file" in result.move_error
    assert planted.read_bytes() == b"planted" and (r.inbound / "sale.json").exists()
    attempts, error, next_move, moved = db.execute(
        "SELECT move_attempts, move_error, next_move_at > now(), moved_at FROM tlog_files WHERE id = %s",
        (file_id,),
    ).fetchone()
    assert (attempts, next_move, moved) == (1, True, None) and "refusing to replace" in error


class GatedSource:
    """A real SFTP source whose listing waits until the test lets it go: a scan caught mid-run."""

    def __init__(self, inner: SftpSource):
        self.inner, self.listing, self.go = inner, threading.Event(), threading.Event()

    def list(self, directory: str):
        self.listing.set()
        assert self.go.wait(30)
        return self.inner.list(directory)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_second_scan_of_a_retailer_returns_at_once_saying_another_runs_and_no_file_is_claimed_twice(
    make_retailer, ledger, db, sftp
):
    r = make_retailer()
    for i in range(30):
        r.put(f"{i:02d}.json", b"{}")
    retailer, feed = configured(r)
    gated = GatedSource(sftp(retailer))
    first: list[Any] = []
    running = threading.Thread(
        target=lambda: first.append(scan_feeds(retailer, [feed], gated, ledger, 100, TIMER, sent))
    )
    running.start()
    try:
        assert gated.listing.wait(30)
        started = time.monotonic()
        second = scan_feeds(retailer, [feed], sftp(retailer), ledger, 100, TIMER, sent)
        took = time.monotonic() - started
    finally:
        gated.go.set()
        running.join(60)
    assert second.busy and second.note == f"another scan of {r.retailer_id} is running"
    assert second.dispatch == [] and second.listed == 0 and took < 2.0
    assert len(first[0].dispatch) == 30 and not first[0].busy
    claims = db.execute(
        "SELECT count(*), count(DISTINCT file_name) FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone()
    assert claims == (30, 30)
    ledger.record_scan("busy-" + r.retailer_id, r.retailer_id, "test", ledger.now(), second)
    assert db.execute("SELECT note FROM scan_runs WHERE id = %s", ("busy-" + r.retailer_id,)).fetchone() == (
        f"another scan of {r.retailer_id} is running",
    )
    third = scan_feeds(retailer, [feed], sftp(retailer), ledger, 100, TIMER, sent)  # the lock was let go
    assert not third.busy and third.dispatch == [] and len(third.watch) == 30


class CountingCursor(psycopg.Cursor):
    """Counts the statements a scan sends, and the longest list (of names, of ids) any of them carries."""

    statements = 0
    longest = 0

    def execute(self, query, params=None, **kwargs):
        CountingCursor.statements += 1
        for value in params.values() if isinstance(params, dict) else params or ():
            if isinstance(value, list):
                CountingCursor.longest = max(CountingCursor.longest, len(value))
        return super().execute(query, params, **kwargs)


def test_with_5000_listed_files_and_a_headroom_of_100_the_scan_asks_the_ledger_about_100_names(pg_dsn, db):
    rid = f"big_{time.monotonic_ns()}"
    feed = Feed("orders", f"/{rid}", f"/{rid}/archive", f"/{rid}/error", "*.json", 0)
    source = FakeSource({f"/{rid}/{i:05d}.json": b"{}" for i in range(5000)})
    retailer = plain_retailer(rid)
    with open_pool(pg_dsn, max_size=2, cursor_factory=CountingCursor) as counted:
        ledger = PgFileLedger(counted)
        CountingCursor.statements = CountingCursor.longest = 0
        result = scan_feed(retailer, feed, source, ledger, 100, TIMER)
        statements, longest = CountingCursor.statements, CountingCursor.longest
    assert result.listed == 5000 and len(result.dispatch) == 100 and result.deferred == 4900
    assert longest == 100, f"a statement carried {longest} names for 100 claims"
    assert statements <= 8, statements
    assert db.execute("SELECT count(*) FROM tlog_files WHERE retailer_id = %s", (rid,)).fetchone() == (100,)


def plain_retailer(rid: str) -> Retailer:
    from tests.unit.helpers import retailer

    r = retailer()
    return type(r)(**{**r.__dict__, "retailer_id": rid})


def test_claims_committed_by_a_scan_that_died_before_publishing_are_sent_by_the_next_scan_at_once(ledger, db):
    rid = f"orphan_{time.monotonic_ns()}"
    feed = Feed("orders", f"/{rid}", f"/{rid}/archive", f"/{rid}/error", "*.json", 0)
    source = FakeSource({f"/{rid}/{n}.json": b"{}" for n in "abcd"})
    retailer = plain_retailer(rid)
    died = scan_feed(retailer, feed, source, ledger, 100, TIMER)  # the claim step, then the process died
    assert len(died.dispatch) == 4
    assert db.execute(
        "SELECT count(*) FROM tlog_files WHERE retailer_id = %s AND dispatched_at IS NULL", (rid,)
    ).fetchone() == (4,)
    published: list[int] = []

    def publish(feed_name, files):
        for file_id, _ in files:
            published.append(file_id)
            yield file_id

    after = scan_feeds(retailer, [feed], source, ledger, 100, TIMER, publish)
    assert sorted(published) == sorted(i for i, _ in died.dispatch) and after.watch == []
    assert db.execute(
        "SELECT count(*) FROM tlog_files WHERE retailer_id = %s AND dispatched_at IS NOT NULL", (rid,)
    ).fetchone() == (4,)
    published.clear()
    again = scan_feeds(retailer, [feed], source, ledger, 100, TIMER, publish)
    assert published == [] and len(again.watch) == 4  # sent once; the timer is for lost messages


def test_a_failed_move_backs_off_in_the_ledger_and_a_move_clears_it(make_retailer, ledger, db, sftp):
    r = make_retailer()
    r.put("a.json", b"{")
    retailer, feed = configured(r)
    source = sftp(retailer)
    [(file_id, _)] = scan_feeds(retailer, [feed], source, ledger, 100, TIMER, sent).dispatch
    (r.error).rename(r.root / "error-gone")  # the error folder disappears: a configuration problem
    backoff = MoveBackoff(base_seconds=30, cap_seconds=100)
    for _ in range(4):
        result = ingest_file(
            file_id,
            feed,
            source,
            ledger,
            10**6,
            lambda d: decide(d, retailer),
            backoff=backoff,
            retailer_id=retailer.retailer_id,
        )
        assert result.status == FAILED and "does not exist" in result.move_error
    attempts, wait = db.execute(
        "SELECT move_attempts, round(extract(epoch FROM next_move_at - now())) FROM tlog_files WHERE id = %s",
        (file_id,),
    ).fetchone()
    assert attempts == 4 and 95 <= wait <= 100  # 30, 60, 120 capped at 100
    (r.root / "error-gone").rename(r.error)
    result = ingest_file(
        file_id,
        feed,
        source,
        ledger,
        10**6,
        lambda d: decide(d, retailer),
        backoff=backoff,
        retailer_id=retailer.retailer_id,
    )
    assert result.moved_to == str(r.error / f"{file_id}-a.json") and result.move_error is None
    assert db.execute(
        "SELECT moved_at IS NOT NULL, next_move_at FROM tlog_files WHERE id = %s", (file_id,)
    ).fetchone() == (True, None)


def test_a_scan_lock_not_renewed_within_its_lease_ends_by_itself_and_a_renewed_one_holds(database, caplog):
    leased = PgFileLedger(database, scan_lease_seconds=1.0)
    rid = f"lease-{uuid.uuid4().hex[:8]}"
    with leased.scan_lock(rid) as kept:
        assert kept.held
        for _ in range(5):  # 2.5 s in all, renewed every 0.5 s
            time.sleep(0.5)
            kept.renew()
        with leased.scan_lock(rid) as other:
            assert not other.held  # a renewed lease outlives its length
    # a scan whose process stopped (no renewal); leaving it afterwards does not fail either
    with caplog.at_level(logging.WARNING, logger="worker.adapters.postgres.ledger"), leased.scan_lock(rid) as frozen:
        assert frozen.held
        time.sleep(2.5)
        with leased.scan_lock(rid) as next_scan:
            assert next_scan.held  # the server ended the stuck one's transaction, so its lock
        frozen.renew()  # the stuck scan resumes: a warning, not an error
    assert any(f"the scan lock of {rid} ended before its scan did" in r.getMessage() for r in caplog.records)
    with leased.scan_lock(rid) as again:  # the pool replaced the ended connection
        assert again.held
