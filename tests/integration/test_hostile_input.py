"""Hostile input against the real PostgreSQL and OpenSSH sshd: values the database refuses, messages naming
another retailer's rows, files that vanish, dead letters of forged arguments. Nothing is lost, nothing crashes,
and no value a file or a message carried is copied into a reason."""

from __future__ import annotations

import dataclasses
import json
import secrets
from decimal import Decimal

import pytest

from tests.unit.fakes import FakeSource
from tests.unit.helpers import retailer as retailer_config
from worker.adapters.postgres.deadletters import PgDeadLetters
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.sftp import SftpSource
from worker.core.errors import WrongFeed, WrongRetailer
from worker.core.inventory import VARIANCE_COLUMNS
from worker.core.retailers import SftpConfig
from worker.core.routing import BROKERING, INVENTORY
from worker.demo.tlogfactory import dumps, make_return, make_sale, sample_bytes
from worker.services.feeds import Feed
from worker.services.ingest import decide, decide_variance, ingest_file
from worker.services.ports import CLAIMED, FAILED, PROCESSED, Claim
from worker.services.replay import ReplayRefused, replay_file

SECRET = "jane.doe.secret@example.com"


def rid(tag: str) -> str:
    return f"{tag}_{secrets.token_hex(4)}"


def config(retailer_id: str, **changes):
    return dataclasses.replace(retailer_config(**changes), retailer_id=retailer_id)


def feed_of(retailer_id: str, name: str = "orders") -> Feed:
    base = f"/{retailer_id}/{name}"
    return Feed(name, base, f"{base}/archive", f"{base}/error", "*", 0)


def claim(ledger, retailer_id: str, file_name: str, feed: str = "orders"):
    path = f"{feed_of(retailer_id, feed).directory}/{file_name}"
    with ledger.scan_transaction(retailer_id, feed) as tx:
        [row] = tx.claim([Claim(file_name, path, 10, 1.0)])
    return row


def row_of(db, file_id):
    return db.execute(
        "SELECT status, attempts, error, moved_at, moved_to FROM tlog_files WHERE id = %s", (file_id,)
    ).fetchone()


# ------------------------------------------------------------------ values the database refuses


def with_line(order, **changes):
    return dataclasses.replace(order, lines=(dataclasses.replace(order.lines[0], **changes), *order.lines[1:]))


def with_payload_note(order, note):
    payload = json.loads(json.dumps(order.payload, default=str))
    payload[0]["dataList"][0]["data"]["order"]["note"] = note
    return dataclasses.replace(order, payload=payload)


# (what is broken, how, the kind the reason must name, text that must not appear in the reason)
REFUSED = [
    ("amount", lambda o: dataclasses.replace(o, grand_total=Decimal("12345678901234.5")), "numeric_value_out_of_range",
     "12345678901234"),
    ("date", lambda o: dataclasses.replace(o, order_date=f"date of {SECRET}"), "invalid_datetime_format", SECRET),
    ("quantity", lambda o: with_line(o, quantity=2**40), "numeric_value_out_of_range", str(2**40)),
    ("nul", lambda o: with_line(o, product_id=f"P\x00{SECRET}"), "NUL", SECRET),
    ("surrogate", lambda o: dataclasses.replace(o, store_id=f"\ud800{SECRET}"), "UnicodeEncodeError", SECRET),
    ("jsonb", lambda o: with_payload_note(o, f"\x00{SECRET}"), "untranslatable_character", SECRET),
]  # fmt: skip


@pytest.mark.parametrize(("case", "breaking", "kind", "hidden"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_value_the_database_refuses_fails_the_file_with_a_reason_that_does_not_repeat_it(
    ledger, database, db, case, breaking, kind, hidden
):
    r = config(rid(f"refused_{case}"))
    feed = feed_of(r.retailer_id)
    data = sample_bytes("sendSaleOrdersSample.json")
    row = claim(ledger, r.retailer_id, "hostile.json")
    good = claim(ledger, r.retailer_id, "good.json")
    source = FakeSource({row.remote_path: data, good.remote_path: sample_bytes("inStoreOrdersSample.json")})

    def hostile(raw: bytes):
        outcome = decide(raw, r)
        assert outcome.order is not None
        return dataclasses.replace(outcome, order=breaking(outcome.order))

    with database.bound():  # one connection for the task, as a worker holds it
        result = ingest_file(row.id, feed, source, ledger, 10**6, hostile, retailer_id=r.retailer_id)
        after = ingest_file(good.id, feed, source, ledger, 10**6, lambda raw: decide(raw, r), retailer_id=r.retailer_id)

    assert result.status == FAILED
    status, _, error, moved_at, moved_to = row_of(db, row.id)
    assert status == FAILED and moved_at is not None and moved_to == f"{feed.error_dir}/{row.id}-hostile.json"
    assert error.startswith("order PS00000284: ") and kind in error, error
    assert hidden not in error and "secret" not in error.lower() and "DETAIL" not in error
    note = source.files[f"{feed.error_dir}/{row.id}-hostile.json.error.txt"].decode()
    assert error in note and hidden not in note
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0] == 1
    assert after.status == PROCESSED  # the connection came out of the refusal fit for the next file


def test_a_return_whose_value_the_database_refuses_fails_the_file_naming_the_return(ledger, db):
    r = config(rid("refused_return"))
    feed = feed_of(r.retailer_id)
    row = claim(ledger, r.retailer_id, "return.json")
    source = FakeSource({row.remote_path: dumps(make_return(1, make_sale(1, "IN_STORE")))})

    def hostile(raw: bytes):
        outcome = decide(raw, r)
        assert outcome.ret is not None
        return dataclasses.replace(outcome, ret=dataclasses.replace(outcome.ret, refund_total=Decimal("1e15")))

    result = ingest_file(row.id, feed, source, ledger, 10**6, hostile, retailer_id=r.retailer_id)
    assert result.status == FAILED
    assert result.error.startswith("return ") and "numeric_value_out_of_range" in result.error
    assert "1000000000000000" not in result.error and "1E+15" not in result.error
    assert db.execute("SELECT count(*) FROM returns WHERE retailer_id = %s", (r.retailer_id,)).fetchone()[0] == 0


# ------------------------------------------------------------------ ids of another retailer


def test_an_ingest_message_naming_another_retailers_row_is_refused_and_leaves_the_row_alone(ledger, db):
    a = config(rid("owner"), order_master=True)
    b = config(rid("other"), order_master=False)  # under b's rules a's in-store sale would be skipped
    row = claim(ledger, a.retailer_id, "instore.json")
    source = FakeSource({row.remote_path: sample_bytes("inStoreOrdersSample.json")})

    with pytest.raises(WrongRetailer) as refused:
        ingest_file(
            row.id, feed_of(b.retailer_id), source, ledger, 10**6, lambda d: decide(d, b), retailer_id=b.retailer_id
        )
    assert str(refused.value) == f"ledger row {row.id} belongs to retailer {a.retailer_id}, not {b.retailer_id}"
    assert row_of(db, row.id) == (CLAIMED, 0, None, None, None)
    assert list(source.files) == [row.remote_path]  # not moved, no note written anywhere

    done = ingest_file(
        row.id, feed_of(a.retailer_id), source, ledger, 10**6, lambda d: decide(d, a), retailer_id=a.retailer_id
    )
    assert done.status == PROCESSED and done.order_type == "IN_STORE"
    assert list(source.files) == [f"{feed_of(a.retailer_id).archive_dir}/{row.id}-instore.json"]


def test_a_variance_message_naming_another_retailers_or_feeds_row_is_refused(ledger, db):
    a, b = rid("var_owner"), rid("var_other")
    row = claim(ledger, a, "stock.csv", feed="variance")
    csv = ",".join(VARIANCE_COLUMNS) + "\n254,UPCA,197076109642,-1,,VAR_INTEGR,counted\n"
    source = FakeSource({row.remote_path: csv.encode()})
    with pytest.raises(WrongRetailer, match=f"^ledger row {row.id} belongs to retailer {a}, not {b}$"):
        ingest_file(row.id, feed_of(b, "variance"), source, ledger, 10**6, decide_variance, retailer_id=b)
    with pytest.raises(WrongFeed, match=f"^ledger row {row.id} is a variance file, not an orders file$"):
        ingest_file(row.id, feed_of(a), source, ledger, 10**6, lambda d: decide(d, config(a)), retailer_id=a)
    assert row_of(db, row.id) == (CLAIMED, 0, None, None, None)
    assert list(source.files) == [row.remote_path]
    done = ingest_file(row.id, feed_of(a, "variance"), source, ledger, 10**6, decide_variance, retailer_id=a)
    assert done.status == FAILED and "line 2" in (done.error or "")  # a's own message reads it (a has no stores)
    assert done.moved_to == f"{feed_of(a, 'variance').error_dir}/{row.id}-stock.csv"


def test_follow_ups_naming_another_retailers_order_are_refused_before_counting_an_attempt(ledger, database, db):
    a, b = config(rid("fo_owner")), config(rid("fo_other"))
    inventory = PgInventory(database)
    row = claim(ledger, a.retailer_id, "mixed.json")
    recorded = ledger.record(row.id, decide(dumps(make_sale(5, "MIXED", lines=2)), a))
    order_id = recorded.order_id
    assert order_id is not None
    expected = f"order {order_id} belongs to retailer {a.retailer_id}, not {b.retailer_id}"

    for kind in (INVENTORY, BROKERING):
        with pytest.raises(WrongRetailer, match=f"^{expected}$"):
            inventory.start_followup(b.retailer_id, order_id, kind, 25)
    with pytest.raises(WrongRetailer, match=f"^{expected}$"):
        inventory.apply_sale(b.retailer_id, order_id)
    with pytest.raises(WrongRetailer, match=f"^{expected}$"), inventory.brokering_unit(b.retailer_id, order_id) as unit:
        unit.snapshot()
    followups = db.execute(
        "SELECT kind, status, attempts FROM order_followups WHERE order_id = %s ORDER BY kind", (order_id,)
    ).fetchall()
    assert followups == [(BROKERING, "pending", 0), (INVENTORY, "pending", 0)]

    inventory.start_followup(a.retailer_id, order_id, INVENTORY, 25)
    applied, _ = inventory.apply_sale(a.retailer_id, order_id)
    assert applied >= 1
    assert db.execute(
        "SELECT status, attempts FROM order_followups WHERE order_id = %s AND kind = %s", (order_id, INVENTORY)
    ).fetchone() == ("done", 1)


def test_replay_names_a_file_only_in_the_retailers_own_ledger(ledger, db):
    a, b = rid("rp_owner"), rid("rp_other")
    row = claim(ledger, a, "bad.json")
    ledger.record(row.id, decide(b"{", config(a)))
    ledger.mark_moved(row.id, f"{feed_of(a).error_dir}/bad.json")
    source = FakeSource({f"{feed_of(b).error_dir}/bad.json": b"{}", f"{feed_of(a).error_dir}/bad.json": b"{"})
    with pytest.raises(ReplayRefused, match=f"no such file in the orders ledger of {b}"):
        replay_file(b, feed_of(b), "bad.json", source, ledger)
    assert db.execute("SELECT replayed_by FROM tlog_files WHERE id = %s", (row.id,)).fetchone()[0] is None


# ------------------------------------------------------------------ a file that disappears before it is read


def test_a_file_removed_between_claim_and_read_fails_without_leaving_a_note_in_the_error_folder(ledger, sshd, db):
    r = rid("vanished")
    base = sshd.root / r
    for sub in ("in/archive", "in/error"):
        (base / sub).mkdir(parents=True)
    feed = Feed("orders", f"{base}/in", f"{base}/in/archive", f"{base}/in/error", "*.json", 0)
    with ledger.scan_transaction(r, "orders") as tx:
        [row] = tx.claim([Claim("gone.json", f"{base}/in/gone.json", 10, 1.0)])  # renamed away since the listing
    cfg = SftpConfig(
        sshd.host,
        sshd.port,
        sshd.username,
        str(sshd.known_hosts),
        feed.directory,
        feed.archive_dir,
        feed.error_dir,
        private_key=str(sshd.private_key),
    )
    source = SftpSource(cfg)
    try:
        result = ingest_file(row.id, feed, source, ledger, 10**6, lambda d: decide(d, config(r)), retailer_id=r)
    finally:
        source.close()
    assert result.status == FAILED and result.error.startswith("file disappeared")
    assert sorted(p.name for p in (base / "in" / "error").iterdir()) == []
    status, _, _, moved_at, moved_to = row_of(db, row.id)
    assert status == FAILED and moved_at is not None and moved_to is None


# ------------------------------------------------------------------ dead letters of forged arguments


def test_a_dead_letter_of_a_task_with_a_2mb_argument_is_stored_in_a_few_kilobytes(database, db):
    task_id = f"forged-{secrets.token_hex(4)}"
    huge = secrets.token_hex(1_000_000)  # 2 MB that do not compress away
    PgDeadLetters(database).record(
        task_id, "tlogsync.ingest_tlog", "tlog.ingest", (huge, 5), {"file_name": huge}, f"reason {huge}", huge
    )
    size, args, kwargs, reason, retailer_id = db.execute(
        "SELECT pg_column_size(d.*), args, kwargs, reason, retailer_id FROM dead_letters d WHERE task_id = %s",
        (task_id,),
    ).fetchone()
    assert size < 8192
    assert args[1] == 5 and args[0].startswith(f"'{huge[:40]}") and "characters cut" in args[0]
    assert kwargs["file_name"].startswith(f"'{huge[:40]}") and "characters cut" in kwargs["file_name"]
    assert reason.startswith(f"reason {huge[:40]}") and "characters cut" in reason
    assert retailer_id is None or len(retailer_id) < 200
