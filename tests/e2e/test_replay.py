"""Dead letters and replays through real workers: list, replay, replay-file, and the same as Celery tasks."""

from __future__ import annotations

import json
import uuid

import pytest

from tests import conftest
from tests.e2e.test_pipeline import cli, wait_final
from tests.support.waiting import eventually
from worker.demo.tlogfactory import dumps, make_sale

pytestmark = pytest.mark.e2e


def dead_letters_of(retailer_id):
    listed = cli("dlq", "list", "tlog.ingest", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return [d for d in json.loads(listed.stdout) if retailer_id in d["args"]]


def test_dead_letters_are_listed_with_reasons_and_replayed_without_duplicates(
    celery_worker, make_retailer, db, ledger, sshd
):
    from tasks.ingest import ingest_tlog
    from worker.services.ports import Claim

    r = make_retailer()
    names = []
    for seq in range(3):
        name = f"dl{seq}.json"
        r.put(name, dumps(make_sale(seq, "IN_STORE", order_prefix=f"DL{uuid.uuid4().hex[:4].upper()}")))
        names.append(name)
    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        rows = tx.claim([Claim(n, str(r.inbound / n), 1, 1.0) for n in names])
    # ops break the retailers file: the retailer disappears while its messages are in flight
    options = conftest._RETAILERS.pop(r.retailer_id)
    conftest.write_retailers(sshd)
    for row in rows:
        ingest_tlog.apply_async((r.retailer_id, row.id, row.file_name))
    eventually(lambda: len(dead_letters_of(r.retailer_id)) == 3, what="three dead letters")
    letters = dead_letters_of(r.retailer_id)
    assert {d["task"] for d in letters} == {"tlogsync.ingest_tlog"}
    assert all(f"retailer '{r.retailer_id}' is not in" in d["reason"] for d in letters)
    assert all(d["died_at"] for d in letters)
    table = cli("dlq", "list", "tlog.ingest")
    assert table.returncode == 0 and "UnknownRetailer" in table.stdout

    conftest._RETAILERS[r.retailer_id] = options  # fixed
    conftest.write_retailers(sshd)
    one = letters[0]["task_id"]
    assert cli("dlq", "replay", "tlog.ingest", "--id", one).returncode == 0
    eventually(lambda: len(dead_letters_of(r.retailer_id)) == 2, what="one replayed")
    done = cli("dlq", "replay", "tlog.ingest", "--all")
    assert done.returncode == 0 and "replayed" in done.stdout
    assert wait_final(db, r.retailer_id, 3) == {"processed": 3}
    assert dead_letters_of(r.retailer_id) == []
    assert db.execute(
        "SELECT count(*), count(DISTINCT external_id) FROM orders WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone() == (3, 3)
    replayed = db.execute(
        "SELECT count(*) FROM dead_letters WHERE task_id = ANY(%s) AND replayed_at IS NOT NULL",
        ([d["task_id"] for d in letters],),
    ).fetchone()[0]
    assert replayed == 3


def test_a_fixed_file_is_replayed_from_error_dir_through_the_normal_path(celery_worker, make_retailer, db):
    r = make_retailer()
    sale = make_sale(1, "SEND_SALE", order_prefix=f"RF{uuid.uuid4().hex[:4].upper()}")
    broken = dict(sale, totalAmount=sale["totalAmount"] + 1)
    r.put("fixme.json", dumps(broken))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    [failed_id] = db.execute("SELECT id FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchone()
    in_error = f"{failed_id}-fixme.json"  # the name it has in error_dir, as ops see it there
    assert (r.error / in_error).exists() and (r.error / f"{in_error}.error.txt").exists()
    (r.error / in_error).write_bytes(dumps(sale))  # someone fixed it in place
    done = cli("replay-file", r.retailer_id, in_error, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout
    rows = db.execute(
        "SELECT id, status, replayed_by FROM tlog_files WHERE retailer_id = %s ORDER BY id", (r.retailer_id,)
    ).fetchall()
    assert [(s, rb is not None) for _, s, rb in rows] == [("failed", True), ("processed", False)]
    assert rows[0][2] == rows[1][0]
    assert (r.archive / f"{rows[1][0]}-fixme.json").exists() and not (r.error / in_error).exists()
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (1,)
    again = cli("replay-file", r.retailer_id, "fixme.json")
    assert again.returncode == 1 and "only failed files" in again.stderr
    missing = cli("replay-file", r.retailer_id, "never-seen.json")
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_replay_file_as_a_celery_task_as_flower_calls_it(celery_worker, make_retailer, db):
    from worker.celery import app

    r = make_retailer()
    sale = make_sale(2, "IN_STORE", order_prefix=f"RT{uuid.uuid4().hex[:4].upper()}")
    r.put("task.json", dumps(dict(sale, orderSubTotal=sale["orderSubTotal"] + 1)))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    [failed_id] = db.execute("SELECT id FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchone()
    (r.error / f"{failed_id}-task.json").write_bytes(dumps(sale))
    app.send_task("tlogsync.ops.replay_file", (r.retailer_id, f"{failed_id}-task.json"))
    eventually(
        lambda: (
            db.execute(
                "SELECT count(*) FROM tlog_files WHERE retailer_id = %s AND status = 'processed'"
                " AND moved_at IS NOT NULL",
                (r.retailer_id,),
            ).fetchone()[0]
            == 1
        ),
        what="the replayed file processed",
    )
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (1,)
