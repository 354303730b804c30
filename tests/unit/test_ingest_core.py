"""Scan planning and the ingest use case, on in-memory fakes of our own ports."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.fakes import FakeLedger, FakeSource
from tests.unit.helpers import retailer
from worker.core.inventory import Rejected, VarianceFileApplied
from worker.core.returns import to_return
from worker.demo.tlogfactory import dumps, make_return, make_sale, sample_bytes
from worker.services.feeds import ORDERS_FEED, Feed, orders_feed, safe_local_name, unsafe_name_reason
from worker.services.ingest import (
    UnknownFile,
    content_checked,
    decide,
    ingest_file,
    return_stored_before,
    variance_file_final,
)
from worker.services.ports import DUPLICATE, FAILED, PROCESSED, SKIPPED, FinalStatus, Outcome, RemoteFile
from worker.services.scan import plan_claims, scan_feeds, select_candidates

FEED = Feed(ORDERS_FEED, "/in", "/in/archive", "/in/error", "*.json", 5)
HOUR = timedelta(hours=1)


def publish_nothing(feed, files):
    """What the scan task's publisher does, minus the broker: each file counts as sent."""
    return [file_id for file_id, _ in files]


def scan(source, ledger, max_in_flight=100, r=None):
    return scan_feeds(r or retailer(), [FEED], source, ledger, max_in_flight, timedelta(minutes=15), publish_nothing)


def ingest(file_id, source, ledger, r=None, max_bytes=1_000_000):
    r = r or retailer()
    return ingest_file(
        file_id, FEED, source, ledger, max_bytes, lambda data: decide(data, r), retailer_id=r.retailer_id
    )


def old_source(files):
    return FakeSource(files, mtime=FakeLedger().clock.timestamp() - 60)


def test_candidates_skip_directories_other_patterns_and_young_files():
    entries = [
        RemoteFile("a.json", 10, 100.0),
        RemoteFile("b.txt", 10, 100.0),
        RemoteFile("archive", 0, 0, False),
        RemoteFile("young.json", 10, 198.0),
        RemoteFile("old.json", 10, 50.0),
    ]
    chosen, young, ignored, oldest_young = select_candidates(entries, "*.json", 5, listed_at=200.0)
    assert [e.name for e in chosen] == ["old.json", "a.json"]  # oldest first
    # b.txt and the archive folder do not match the pattern: not the scan's business, not counted
    assert (young, ignored, oldest_young) == (1, 0, 2.0)


def test_file_exactly_min_age_old_is_taken_by_this_scan():
    chosen, young, _, _ = select_candidates([RemoteFile("a.json", 1, 195.0)], "*.json", 5, listed_at=200.0)
    assert [e.name for e in chosen] == ["a.json"] and young == 0


def test_scan_claims_each_new_file_once():
    source, ledger = old_source({"/in/a.json": b"{}", "/in/b.json": b"{}"}), FakeLedger()
    first = scan(source, ledger)
    assert sorted(name for _, name in first.dispatch) == ["a.json", "b.json"]
    second = scan(source, ledger)
    assert second.dispatch == [] and sorted(second.watch) == sorted(i for i, _ in first.dispatch)


def test_scan_caps_files_in_flight():
    files = {f"/in/{i:03d}.json": b"{}" for i in range(10)}
    source, ledger = old_source(files), FakeLedger()
    result = scan(source, ledger, max_in_flight=4)
    assert len(result.dispatch) == 4 and result.deferred == 6
    again = scan(source, ledger, max_in_flight=4)
    assert again.dispatch == [] and again.deferred == 6  # nothing more until some finish


def test_stale_claim_is_dispatched_again():
    source, ledger = old_source({"/in/a.json": b"{}"}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    ledger.clock += HOUR
    assert scan(source, ledger).dispatch == [(file_id, "a.json")]


def test_final_file_still_in_the_folder_is_sent_to_finish_its_move_once_the_move_is_overdue():
    source, ledger = old_source({"/in/a.json": sample_bytes("inStoreOrdersSample.json")}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    ledger.record(file_id, __import__("worker.services.ports", fromlist=["Outcome"]).Outcome(FAILED, error="x"))
    just_finished = scan(source, ledger)
    assert just_finished.dispatch == [] and just_finished.watch == [file_id]  # its ingest is moving it now
    ledger.clock += HOUR
    assert scan(source, ledger).dispatch == [(file_id, "a.json")]


def test_reappearing_name_is_recorded_as_duplicate_and_archived():
    data = sample_bytes("inStoreOrdersSample.json")
    source, ledger = old_source({"/in/a.json": data}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    assert ingest(file_id, source, ledger).status == PROCESSED
    ledger.clock += HOUR
    source.files["/in/a.json"] = data
    [(dup_id, _)] = scan(source, ledger).dispatch
    assert ledger.rows[dup_id].status == DUPLICATE
    result = ingest(dup_id, source, ledger)
    assert result.status == DUPLICATE and result.moved_to == f"/in/archive/{dup_id}-a.json.duplicate"
    assert "/in/a.json" not in source.files and len(ledger.orders) == 1


def test_listing_older_than_the_move_is_not_a_reappearance():
    rows = {}
    plan = plan_claims([RemoteFile("a.json", 1, 0.0)], rows, FEED, FakeLedger().clock, 0, 10, HOUR)
    assert len(plan.claims) == 1
    ledger = FakeLedger()
    [row] = ledger.claim(plan.claims)
    ledger.record(row.id, __import__("worker.services.ports", fromlist=["Outcome"]).Outcome(PROCESSED))
    ledger.clock += HOUR
    ledger.mark_moved(row.id, "/in/archive/a.json")
    stale_listing_time = ledger.clock - timedelta(seconds=1)
    plan = plan_claims(
        [RemoteFile("a.json", 1, 0.0)], {"a.json": ledger.rows[row.id]}, FEED, stale_listing_time, 0, 10, HOUR
    )
    assert plan.claims == () and plan.redispatch == ()


def test_ingest_stores_the_order_and_archives_the_file():
    source, ledger = old_source({"/in/a.json": sample_bytes("sendSaleOrdersSample.json")}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    result = ingest(file_id, source, ledger)
    archived = f"/in/archive/{file_id}-a.json"
    assert (result.status, result.order_type, result.moved_to) == (PROCESSED, "SEND_SALE", archived)
    assert archived in source.files and "/in/a.json" not in source.files


def test_ingest_twice_is_harmless():
    source, ledger = old_source({"/in/a.json": sample_bytes("sendSaleOrdersSample.json")}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    ingest(file_id, source, ledger)
    again = ingest(file_id, source, ledger)
    assert again.status == PROCESSED and again.order_id is None and len(ledger.orders) == 1


def test_bad_file_goes_to_error_dir_with_its_reason_beside_it():
    source, ledger = old_source({"/in/bad.json": b"{not json"}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    result = ingest(file_id, source, ledger)
    assert result.status == FAILED and result.moved_to == f"/in/error/{file_id}-bad.json"
    assert b"invalid JSON at line 1 column 2" in source.files[f"/in/error/{file_id}-bad.json.error.txt"]


def test_oversize_file_fails_without_being_read():
    source, ledger = old_source({"/in/big.json": b"x" * 2000}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    result = ingest(file_id, source, ledger, max_bytes=1000)
    assert result.status == FAILED and "over the 1000-byte limit" in (result.error or "")


def test_in_store_sale_is_skipped_when_not_order_master():
    source, ledger = old_source({"/in/a.json": sample_bytes("inStoreOrdersSample.json")}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    result = ingest(file_id, source, ledger, r=retailer(order_master=False))
    assert result.status == SKIPPED and "not the order master" in (result.error or "")
    assert result.moved_to == f"/in/archive/{file_id}-a.json" and ledger.orders == {}


def test_mixed_cart_is_stored_even_when_not_order_master():
    source, ledger = old_source({"/in/a.json": dumps(make_sale(1, "MIXED", lines=2))}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    assert ingest(file_id, source, ledger, r=retailer(order_master=False)).status == PROCESSED


def test_same_order_under_another_name_is_a_duplicate():
    data = sample_bytes("inStoreOrdersSample.json")
    source, ledger = old_source({"/in/a.json": data, "/in/b.json": data + b"\n"}), FakeLedger()
    ids = [i for i, _ in scan(source, ledger).dispatch]
    statuses = sorted(ingest(i, source, ledger).status for i in ids)
    assert statuses == [DUPLICATE, PROCESSED]


def test_file_removed_before_reading_is_failed_not_retried_forever():
    source, ledger = old_source({"/in/a.json": b"{}"}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    del source.files["/in/a.json"]
    result = ingest(file_id, source, ledger)
    assert result.status == FAILED and "disappeared" in (result.error or "") and result.moved_to is None
    assert list(source.files) == []  # no note about a file that is not in error_dir


def test_a_failed_file_moved_by_a_delivery_that_died_before_its_note_gets_the_note_from_the_next():
    source, ledger = old_source({"/in/bad.json": b"{"}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    row = ledger.record(file_id, decide(b"{", retailer())).row
    moved = f"/in/error/{file_id}-bad.json"
    source.move("/in/bad.json", moved)  # the first delivery moved it, then its worker was killed
    result = ingest(file_id, source, ledger)
    assert result.moved_to == moved and row.status == FAILED
    assert source.files[f"{moved}.error.txt"].startswith(b"bad.json: invalid JSON")


def test_unknown_ledger_row_is_permanent():
    with pytest.raises(UnknownFile):
        ingest(999, FakeSource(), FakeLedger())


@pytest.mark.parametrize("name", ["..\\..\\evil.json", "a\nb.json", "\u202eevil.json", ".hidden.json", "-rf.json"])
def test_path_trick_names_are_failed_and_moved_under_a_safe_name(name):
    source, ledger = old_source({f"/in/{name}": sample_bytes("inStoreOrdersSample.json")}), FakeLedger()
    [(file_id, _)] = scan(source, ledger).dispatch
    result = ingest(file_id, source, ledger)
    assert result.status == FAILED and "file name" in (result.error or "")
    assert result.moved_to == f"/in/error/{file_id}-{safe_local_name(name)}"
    assert "/" not in safe_local_name(name) and not safe_local_name(name).startswith(".")


def test_ordinary_vendor_names_are_safe():
    assert unsafe_name_reason("dolcevita_OrderTLog_2023-12-20-00_46_40_660.json") is None


def test_orders_feed_comes_from_the_retailer():
    feed = orders_feed(retailer())
    assert (feed.directory, feed.archive_dir, feed.error_dir) == ("/in", "/in/archive", "/in/error")


def test_a_failed_file_uploaded_again_under_its_name_is_read_again():
    source, ledger = old_source({"/in/a.json": b"{broken"}), FakeLedger()
    [(first, _)] = scan(source, ledger).dispatch
    assert ingest(first, source, ledger).status == FAILED
    ledger.clock += HOUR
    source.files["/in/a.json"] = sample_bytes("inStoreOrdersSample.json")  # fixed and uploaded again
    [(second, _)] = scan(source, ledger).dispatch
    assert second != first and ledger.replayed[first] == second
    assert ingest(second, source, ledger).status == PROCESSED


def test_a_file_whose_bytes_were_stored_before_is_a_duplicate_of_that_row():
    processed, skipped, failed = Outcome(PROCESSED), Outcome(SKIPPED, error="not ours"), Outcome(FAILED, error="bad")
    assert content_checked(processed, 7) == FinalStatus(
        DUPLICATE, "same content as ledger row 7; not imported again", 7
    )
    assert content_checked(skipped, 7).status == DUPLICATE
    assert content_checked(failed, 7) == FinalStatus(FAILED, "bad")
    assert content_checked(skipped, None) == FinalStatus(SKIPPED, "not ours")


def test_a_return_stored_before_and_a_variance_file_get_their_final_status():
    ret = to_return(make_return(1), retailer())
    assert return_stored_before(ret, 3) == FinalStatus(
        DUPLICATE, f"return {ret.external_id} already stored from ledger row 3", 3
    )
    none_applied = VarianceFileApplied(0, (Rejected(2, "line 2: x"),), True, "1 of 1 records rejected: line 2: x")
    assert variance_file_final(none_applied) == FinalStatus(FAILED, "1 of 1 records rejected: line 2: x")
    assert variance_file_final(VarianceFileApplied(2, (), False, None)) == FinalStatus(PROCESSED)
