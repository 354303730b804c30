"""Losing nothing when names collide, moves fail, folders are huge and scans die: the use cases on fakes of
our own ports (the same behaviour against sshd and PostgreSQL: tests/integration/test_moves_and_scans.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.fakes import FakeLedger, FakeSource
from tests.unit.helpers import retailer
from tests.unit.test_ingest_core import FEED, ingest, old_source, scan
from worker.demo.tlogfactory import dumps, make_sale, sample_bytes
from worker.services.ingest import MoveBackoff, decide, ingest_file, move_file, record_file
from worker.services.ports import FAILED, PROCESSED, RemoteFile
from worker.services.replay import ReplayRefused, replay_file
from worker.services.scan import scan_feed, scan_feeds, select_candidates

MINUTE = timedelta(minutes=1)


def test_names_that_sanitise_alike_go_to_distinct_error_files_each_with_its_own_note():
    names = ["café.json", "cafè.json", "x;y.json", "x_y.json"]
    files = {f"/in/{name}": f"broken {i} {{".encode() for i, name in enumerate(names)}
    source, ledger = old_source(files), FakeLedger()
    ids = dict((name, file_id) for file_id, name in scan(source, ledger).dispatch)
    for name in names:
        assert ingest(ids[name], source, ledger).status == FAILED
    errors = {path: data for path, data in source.files.items() if path.startswith("/in/error/")}
    moved = [path for path in errors if not path.endswith(".error.txt")]
    assert len(moved) == 4 and len(errors) == 8  # four files, four notes: nothing replaced
    for name in names:
        [path] = [p for p in moved if p.startswith(f"/in/error/{ids[name]}-")]
        assert errors[path] == files[f"/in/{name}"]  # each file's own bytes
        assert errors[f"{path}.error.txt"].startswith(f"{name}: ".encode())  # and its own reason


def test_a_file_already_at_the_destination_is_never_replaced():
    source, ledger = old_source({"/in/a.json": sample_bytes("inStoreOrdersSample.json")}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    source.files[f"/in/archive/{file_id}-a.json"] = b"someone else's file"
    result = ingest(file_id, source, ledger)
    assert result.status == PROCESSED and result.moved_to is None
    assert "refusing to replace an existing file" in (result.move_error or "")
    assert source.files[f"/in/archive/{file_id}-a.json"] == b"someone else's file"
    assert "/in/a.json" in source.files and ledger.rows[file_id].moved_at is None


class RefusingSource(FakeSource):
    """A folder that refuses renames, as an unwritable archive folder does."""

    refuse = True

    def move(self, src: str, dst: str) -> bool:
        if self.refuse:
            raise PermissionError(13, "Permission denied")
        return super().move(src, dst)


def test_a_failed_move_is_retried_by_one_message_once_its_backoff_has_passed_not_by_every_scan():
    data = sample_bytes("sendSaleOrdersSample.json")
    source = RefusingSource({"/in/a.json": data}, mtime=FakeLedger().clock.timestamp() - 60)
    ledger = FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    backoff = MoveBackoff(base_seconds=60, cap_seconds=600)
    first = ingest_file(
        file_id,
        FEED,
        source,
        ledger,
        10**6,
        lambda d: decide(d, retailer()),
        backoff=backoff,
        retailer_id=retailer().retailer_id,
    )
    assert first.status == PROCESSED and first.order_id is not None and first.move_error
    assert "Permission denied" in first.move_error and ledger.rows[file_id].moved_at is None
    for _ in range(3):  # scans within the backoff send nothing
        ledger.clock += timedelta(seconds=15)
        again = scan(source, ledger)
        assert again.dispatch == [] and again.watch == [file_id]
    ledger.clock += MINUTE
    assert scan(source, ledger).dispatch == [(file_id, "a.json")]  # its time has come: one message
    assert scan(source, ledger).dispatch == []  # and not one per scan while it is on its way
    ingest_file(
        file_id,
        FEED,
        source,
        ledger,
        10**6,
        lambda d: decide(d, retailer()),
        backoff=backoff,
        retailer_id=retailer().retailer_id,
    )
    assert ledger.next_move[file_id] == ledger.clock + 2 * MINUTE  # the second failure waits twice as long
    source.refuse = False
    ledger.clock += 2 * MINUTE
    [(resent, _)] = scan(source, ledger).dispatch
    done = ingest_file(
        resent,
        FEED,
        source,
        ledger,
        10**6,
        lambda d: decide(d, retailer()),
        backoff=backoff,
        retailer_id=retailer().retailer_id,
    )
    assert done.moved_to == f"/in/archive/{file_id}-a.json" and done.move_error is None
    assert source.files[done.moved_to] == data and len(ledger.orders) == 1
    assert scan(source, ledger).dispatch == [] and len(ledger.move_errors[file_id]) == 2


def test_the_committed_result_carries_the_follow_ups_before_any_move_is_tried():
    source = RefusingSource({"/in/a.json": sample_bytes("sendSaleOrdersSample.json")}, mtime=0)
    ledger = FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    committed = record_file(
        file_id, FEED, source, ledger, 10**6, lambda d: decide(d, retailer()), retailer_id=retailer().retailer_id
    )
    assert committed.result.order_id is not None and committed.result.followups == ("brokering",)
    assert "/in/a.json" in source.files  # nothing moved yet: the task publishes, then moves
    moved = move_file(committed, FEED, source, ledger, MoveBackoff())
    assert moved.followups == ("brokering",) and moved.move_error


def test_a_scan_that_finds_another_scan_of_the_retailer_running_gives_up_at_once_and_says_so():
    source, ledger = old_source({"/in/a.json": b"{}"}), FakeLedger()
    ledger.locked.add("acme")
    busy = scan(source, ledger)
    assert busy.busy and busy.note == "another scan of acme is running"
    assert busy.dispatch == [] and ledger.rows == {} and ledger.looked_up == []


def test_a_scan_renews_its_lock_after_listing_after_claiming_and_every_500_messages_published():
    files = {f"/in/{i:04d}.json": b"{}" for i in range(1200)}
    source, ledger = old_source(files), FakeLedger()
    out = scan_feeds(
        retailer(), [FEED], source, ledger, 2000, timedelta(minutes=15), lambda _f, ids: (i for i, _ in ids)
    )
    assert len(out.dispatch) == 1200
    [lease] = ledger.leases
    assert lease.held and lease.renewals == 1 + 1 + 2 + 1  # listed, claimed, 500 and 1,000 sent, all marked


def test_a_scan_of_a_big_folder_looks_up_only_as_many_names_as_it_has_room_for_oldest_first():
    files = {f"/in/{i:05d}.json": b"{}" for i in range(5000)}
    source, ledger = FakeSource(files), FakeLedger()
    for i in range(5000):
        source.mtimes[f"/in/{i:05d}.json"] = ledger.clock.timestamp() - 10_000 + i
    first = scan(source, ledger, max_in_flight=100)
    assert [name for _, name in first.dispatch] == [f"{i:05d}.json" for i in range(100)]
    assert len(ledger.looked_up) == 100 and first.looked_up == 100 and first.deferred == 4900
    ledger.looked_up.clear()
    full = scan(source, ledger, max_in_flight=100)  # no room: the folder is listed, the ledger not asked
    assert full.dispatch == [] and ledger.looked_up == [] and len(full.watch) == 100


def test_claims_whose_messages_were_never_published_are_sent_by_the_next_scan_at_once():
    source, ledger = old_source({"/in/a.json": b"{}", "/in/b.json": b"{}"}), FakeLedger()
    # a scan that committed its claims and died before publishing: the claim step alone
    died = scan_feed(retailer(), FEED, source, ledger, 100, timedelta(minutes=15))
    assert len(died.dispatch) == 2 and all(r.dispatched_at is None for r in ledger.rows.values())
    ledger.clock += timedelta(seconds=5)  # long before the redispatch timer
    after = scan(source, ledger)
    assert sorted(after.dispatch) == sorted(died.dispatch)
    assert scan(source, ledger).dispatch == []  # once sent, the timer looks after them


def test_a_publish_that_fails_half_way_leaves_the_rest_for_the_next_scan_at_once():
    source, ledger = old_source({f"/in/{n}.json": b"{}" for n in "abc"}), FakeLedger()

    def two_then_broker_down(feed, files):
        for file_id, _ in files[:2]:
            yield file_id
        raise ConnectionError("broker went away")

    with pytest.raises(ConnectionError):
        scan_feeds(retailer(), [FEED], source, ledger, 100, timedelta(minutes=15), two_then_broker_down)
    assert sum(1 for r in ledger.rows.values() if r.dispatched_at is None) == 1
    ledger.clock += timedelta(seconds=5)
    [(left, _)] = scan(source, ledger).dispatch
    assert ledger.rows[left].dispatched_at == ledger.clock


def test_matching_entries_that_are_not_regular_files_and_future_dated_files_are_counted():
    entries = [
        RemoteFile("link.json", 10, 100.0, False),  # a symlink (SFTP lists it by lstat)
        RemoteFile("fifo.json", 0, 100.0, False),
        RemoteFile("folder.json", 0, 100.0, False),
        RemoteFile("archive", 0, 0.0, False),  # not matching: not counted
        RemoteFile("future.json", 10, 3800.0),  # the SFTP server's clock is an hour ahead
        RemoteFile("writing.json", 10, 198.0),
        RemoteFile("ok.json", 10, 50.0),
    ]
    chosen = select_candidates(entries, "*.json", 5, listed_at=200.0)
    assert [e.name for e in chosen.candidates] == ["ok.json"]
    assert (chosen.too_young, chosen.ignored, chosen.oldest_too_young_s) == (2, 3, 2.0)
    only_future = select_candidates(entries[4:5], "*.json", 5, listed_at=200.0)
    assert only_future.oldest_too_young_s == -3600.0  # negative: a clock ahead of ours


def test_replay_file_takes_the_name_as_it_is_in_the_error_folder_or_the_name_it_arrived_under():
    sale = make_sale(1, "SEND_SALE")
    source, ledger = old_source({"/in/fixme.json": b"{broken", "/in/other.json": b"{broken"}), FakeLedger()
    ids = {name: file_id for file_id, name in scan(source, ledger).dispatch}
    for file_id in ids.values():
        ingest(file_id, source, ledger)
    in_error = f"{ids['fixme.json']}-fixme.json"
    source.files[f"/in/error/{in_error}"] = dumps(sale)  # fixed in place
    new = replay_file("acme", FEED, in_error, source, ledger)
    assert new.file_name == "fixme.json" and source.files["/in/fixme.json"] == dumps(sale)
    with pytest.raises(ReplayRefused, match="taken again already"):
        replay_file("acme", FEED, in_error, source, ledger)
    source.files["/in/other.json"] = b"uploaded again meanwhile"
    with pytest.raises(ReplayRefused, match="not replaced"):
        replay_file("acme", FEED, "other.json", source, ledger)  # the arrival name works too
    assert source.files["/in/other.json"] == b"uploaded again meanwhile"


def test_a_fixed_copy_put_in_the_error_folder_under_its_arrival_name_is_the_file_replayed():
    sale = make_sale(2, "IN_STORE")
    source, ledger = old_source({"/in/fixme.json": b"{broken"}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    ingest(file_id, source, ledger)
    source.files["/in/error/fixme.json"] = dumps(sale)  # the fix, beside the failed original
    replay_file("acme", FEED, "fixme.json", source, ledger)
    assert source.files["/in/fixme.json"] == dumps(sale)
    assert source.files[f"/in/error/{file_id}-fixme.json"] == b"{broken"  # the original is left as it was
