"""Routing end to end: real workers take each sale to inventory and brokering on their own queues."""

from __future__ import annotations

import os
import secrets
import time

import pytest

from tests.conftest import start_worker, write_retailers
from tests.e2e.test_pipeline import cli, wait_final
from tests.integration.test_routing import FACILITIES, LAKOTA, atp, send_sale
from worker.demo.tlogfactory import CATALOG, dumps, make_sale

pytestmark = pytest.mark.e2e


def wait_followups(db, retailer_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        pending = db.execute(
            "SELECT count(*) FROM order_followups WHERE retailer_id = %s AND status = 'pending'", (retailer_id,)
        ).fetchone()[0]
        if pending == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{pending} follow-ups still pending for {retailer_id}")
        time.sleep(0.2)


def load_network(r, tmp_path, stock):
    facilities = tmp_path / "facilities.csv"
    facilities.write_text(FACILITIES)
    assert cli("facilities", "load", r.retailer_id, str(facilities)).returncode == 0
    by_gtin = {p.gtin: p for p in CATALOG}
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(
        "facility_id,product_id,gtin,quantity_on_hand\n"
        + "".join(f"{f},{by_gtin[g].product_id},{g},{q}\n" for (f, g), q in stock.items())
    )
    done = cli("inventory", "load", r.retailer_id, str(inventory))
    assert done.returncode == 0, done.stdout


def prefix():
    return f"E{secrets.token_hex(3).upper()}"


def in_store(seq, gtin=LAKOTA.gtin, store="254"):
    doc = make_sale(seq, "IN_STORE", store_id=store, lines=1, order_prefix=prefix())
    product = next(p for p in CATALOG if p.gtin == gtin)
    doc["orderProductList"][0].update(gtin=gtin, productId=product.product_id)
    return doc


def test_each_order_type_reaches_inventory_and_brokering(celery_worker, make_retailer, db, tmp_path):
    r = make_retailer(brokering={})
    load_network(r, tmp_path, {(f, g.gtin): 10 for f in ("254", "301", "DC1") for g in CATALOG})
    sale = in_store(1)
    sold = sale["orderProductList"][0]["quantity"]
    r.put("instore.json", dumps(sale))
    r.put("sendsale.json", dumps(send_sale(2, store="254", quantity=2)))
    mixed = make_sale(3, "MIXED", store_id="254", lines=2, order_prefix=prefix())
    r.put("mixed.json", dumps(mixed))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    orders = dict(db.execute("SELECT order_type, id FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchall())
    assert set(orders) == {"IN_STORE", "SEND_SALE", "MIXED"}
    kinds = db.execute(
        "SELECT o.order_type, f.kind FROM order_followups f JOIN orders o ON o.id = f.order_id"
        " WHERE f.retailer_id = %s ORDER BY 1, 2",
        (r.retailer_id,),
    ).fetchall()
    assert kinds == [
        ("IN_STORE", "inventory"),
        ("MIXED", "brokering"),
        ("MIXED", "inventory"),
        ("SEND_SALE", "brokering"),
    ]
    mixed_in_store = mixed["orderProductList"][0]
    expected_254 = 10 - sold - (mixed_in_store["quantity"] if mixed_in_store["gtin"] == LAKOTA.gtin else 0)
    assert atp(db, r.retailer_id, "254")[0] == expected_254
    # the send-sale ships to Chula Vista: the default rule picks the nearest facility allowing brokering
    placed = db.execute(
        "SELECT facility_id, quantity FROM order_items WHERE order_id = %s", (orders["SEND_SALE"],)
    ).fetchall()
    assert placed == [("301", 2)]
    assert atp(db, r.retailer_id, "301") == (10, 2)
    mixed_items = dict(
        db.execute(
            "SELECT fulfillment, facility_id FROM order_items WHERE order_id = %s", (orders["MIXED"],)
        ).fetchall()
    )
    assert mixed_items == {"IN_STORE": "254", "SHIP_TO_HOME": "301"}


def test_not_order_master_mixed_cart_is_brokered_but_leaves_store_inventory_alone(
    celery_worker, make_retailer, db, tmp_path
):
    r = make_retailer(order_master=False)
    load_network(r, tmp_path, {(f, g.gtin): 10 for f in ("254", "301") for g in CATALOG})
    r.put("mixed.json", dumps(make_sale(4, "MIXED", store_id="254", lines=2, order_prefix=prefix())))
    r.put("instore.json", dumps(in_store(5)))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    assert db.execute(
        "SELECT count(*) FROM inventory_variances WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT sum(quantity_on_hand) FROM inventory WHERE retailer_id = %s AND facility_id = '254'", (r.retailer_id,)
    ).fetchone() == (70,)
    statuses = dict(
        db.execute("SELECT file_name, status FROM tlog_files WHERE retailer_id = %s", (r.retailer_id,)).fetchall()
    )
    assert statuses == {"mixed.json": "processed", "instore.json": "skipped"}
    assert db.execute(
        "SELECT count(*) FROM order_facility_changes WHERE retailer_id = %s AND reason = 'BROKERED'", (r.retailer_id,)
    ).fetchone() == (1,)


def test_an_inventory_message_delivered_twice_lowers_stock_once(celery_worker, make_retailer, db, tmp_path):
    from tasks.routing import apply_sale_to_inventory

    r = make_retailer()
    load_network(r, tmp_path, {("254", LAKOTA.gtin): 10})
    sale = in_store(6)
    r.put("instore.json", dumps(sale))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    (order_id,) = db.execute("SELECT id FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone()
    for _ in range(3):
        apply_sale_to_inventory.apply_async((r.retailer_id, order_id))
    time.sleep(2)
    assert atp(db, r.retailer_id, "254") == (10 - sale["orderProductList"][0]["quantity"], 0)
    assert db.execute(
        "SELECT count(*) FROM inventory_variances WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone() == (1,)


def test_the_variance_feed_is_scanned_and_applied(celery_worker, make_retailer, db, tmp_path, sshd):
    r = make_retailer(order_master=False)
    variance_dir = r.root / "variance"
    for sub in ("archive", "error"):
        (variance_dir / sub).mkdir(parents=True)
    r.options["sftp"] = {
        "variance_dir": f"{variance_dir}",
        "variance_archive_dir": f"{variance_dir}/archive",
        "variance_error_dir": f"{variance_dir}/error",
    }
    write_retailers(sshd)
    load_network(r, tmp_path, {("254", LAKOTA.gtin): 10})
    good = variance_dir / "acme_InventoryUpdate_1.json"
    good.write_bytes(
        b"facilityId,idType,idValue,availableDelta,locationSeqId,varianceReasonId,comments\n"
        b"254,UPCA,197076109628,-3,TLTLTLLL01,VAR_INTEGR,POS in-store sale\n"
        b"999,UPCA,197076109628,-1,,VAR_LOST,unknown store\n"
    )
    bad = variance_dir / "acme_InventoryUpdate_2.json"
    bad.write_bytes(
        b'[{"facilityId": "nowhere", "idType": "UPCA", "idValue": "197076109628", "availableDelta": 1,'
        b' "varianceReasonId": "VAR_FOUND"}]'
    )
    for path in (good, bad):
        os.utime(path, (time.time() - 60, time.time() - 60))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    rows = {
        name: (status, applied, rejected)
        for name, status, applied, rejected in db.execute(
            "SELECT file_name, status, records_applied, records_rejected FROM tlog_files WHERE retailer_id = %s"
            " AND feed = 'variance'",
            (r.retailer_id,),
        )
    }
    assert rows == {"acme_InventoryUpdate_1.json": ("processed", 1, 1), "acme_InventoryUpdate_2.json": ("failed", 0, 1)}
    assert atp(db, r.retailer_id, "254") == (7, 0)
    ids = dict(
        db.execute(
            "SELECT file_name, id FROM tlog_files WHERE retailer_id = %s AND feed = 'variance'", (r.retailer_id,)
        ).fetchall()
    )
    archived = [f"{ids['acme_InventoryUpdate_1.json']}-acme_InventoryUpdate_1.json"]
    assert sorted(p.name for p in (variance_dir / "archive").iterdir()) == archived
    failed = f"{ids['acme_InventoryUpdate_2.json']}-acme_InventoryUpdate_2.json"
    assert f"{failed}.error.txt" in {p.name for p in (variance_dir / "error").iterdir()}


def test_rebrokering_from_the_command_line_after_stock_arrives(celery_worker, make_retailer, db, tmp_path):
    r = make_retailer()
    load_network(r, tmp_path, {("301", LAKOTA.gtin): 0})
    r.put("sendsale.json", dumps(send_sale(7, quantity=1)))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    (order_id,) = db.execute("SELECT id FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone()
    assert db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone() == (
        "UNFILLABLE_PARKING",
    )
    load_network(r, tmp_path, {("DC1", LAKOTA.gtin): 5})
    done = cli("broker", r.retailer_id, "--new-only")  # only _NA_: the parked order is not in it
    assert done.returncode == 0 and "enqueued for 0 orders" in done.stdout
    done = cli("broker", r.retailer_id)  # a run as beat starts it: the parked orders too, first
    assert done.returncode == 0 and "enqueued for 1 orders" in done.stdout
    deadline = time.monotonic() + 30
    while db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone() != ("DC1",):
        assert time.monotonic() < deadline, "not re-brokered"
        time.sleep(0.2)
    assert atp(db, r.retailer_id, "DC1") == (5, 1)


def test_parallel_brokering_on_several_workers_never_oversells(celery_worker, make_retailer, db, tmp_path):
    r = make_retailer()
    load_network(r, tmp_path, {("301", LAKOTA.gtin): 4, ("254", LAKOTA.gtin): 3, ("DC1", LAKOTA.gtin): 5})
    for seq in range(30):
        r.put(f"s{seq:03d}.json", dumps(send_sale(200 + seq, store="255", quantity=1)))
    second = start_worker(f"brokering-{secrets.token_hex(2)}", queues="brokering", concurrency=2)
    try:
        assert cli("scan", r.retailer_id, "--wait", "--timeout", "90").returncode == 0
        wait_followups(db, r.retailer_id, timeout=90)
    finally:
        second.stop()
    assert wait_final(db, r.retailer_id, 30) == {"processed": 30}
    reserved = dict(
        db.execute("SELECT facility_id, reserved FROM inventory WHERE retailer_id = %s", (r.retailer_id,)).fetchall()
    )
    assert reserved == {"301": 4, "254": 3, "DC1": 5}
    placed = dict(
        db.execute(
            "SELECT i.facility_id, count(*) FROM order_items i JOIN orders o ON o.id = i.order_id"
            " WHERE o.retailer_id = %s GROUP BY 1",
            (r.retailer_id,),
        ).fetchall()
    )
    assert placed == {"301": 4, "254": 3, "DC1": 5, "UNFILLABLE_PARKING": 18}
    assert db.execute(
        "SELECT count(*) FROM order_facility_changes WHERE retailer_id = %s", (r.retailer_id,)
    ).fetchone() == (30,)


def test_a_parked_order_is_brokered_by_the_next_scheduled_run_after_stock_arrives(
    celery_worker, make_retailer, db, tmp_path
):
    """Nobody runs anything: beat's brokering entry of the retailer takes the parked order once stock is there."""
    import subprocess
    import sys

    r = make_retailer(brokering={"every_seconds": 10})
    load_network(r, tmp_path, {("DC1", LAKOTA.gtin): 0})
    r.put("sendsale.json", dumps(send_sale(8, quantity=1)))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    (order_id,) = db.execute("SELECT id FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone()
    assert db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone() == (
        "UNFILLABLE_PARKING",
    )
    load_network(r, tmp_path, {("DC1", LAKOTA.gtin): 5})
    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed below
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO", "-s", str(tmp_path / "schedule")],
        env=os.environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while db.execute("SELECT facility_id FROM order_items WHERE order_id = %s", (order_id,)).fetchone() != ("DC1",):
            assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text()[-4000:]
            time.sleep(0.5)
    finally:
        beat.terminate()
        beat.wait(timeout=20)
        log.close()
    assert atp(db, r.retailer_id, "DC1") == (5, 1)
    runs = db.execute(
        "SELECT count(DISTINCT run_id) FROM brokering_decisions WHERE order_id = %s", (order_id,)
    ).fetchone()
    assert runs[0] >= 2  # the run after ingest parked it, a scheduled run brokered it


def test_order_show_explains_each_facility_and_a_dry_run_changes_nothing(celery_worker, make_retailer, db, tmp_path):
    import json

    r = make_retailer()
    load_network(r, tmp_path, {("254", LAKOTA.gtin): 5, ("301", LAKOTA.gtin): 0, ("DC1", LAKOTA.gtin): 5})
    doc = send_sale(9, quantity=1)
    r.put("sendsale.json", dumps(doc))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    shown = cli("order", "show", r.retailer_id, doc["orderId"])
    assert shown.returncode == 0, shown.stderr
    assert "excluded: the selling store" in shown.stdout and "short by 1" in shown.stdout
    as_json = json.loads(cli("order", "show", r.retailer_id, doc["orderId"], "--json").stdout)
    (line,) = as_json["decisions"][0]["lines"]
    assert line["result"] == "allocated" and line["facility"] == "DC1"
    assert line["rules"][0]["facilities"]["254"] == "excluded: the selling store"
    missing = cli("order", "show", r.retailer_id, "NO-SUCH-ORDER")
    assert missing.returncode == 1 and "has no order 'NO-SUCH-ORDER'" in missing.stderr

    def state():
        return [
            db.execute(sql, (r.retailer_id,)).fetchall()
            for sql in (
                "SELECT facility_id, quantity_on_hand, reserved, updated_at FROM inventory WHERE retailer_id = %s"
                " ORDER BY 1",
                "SELECT count(*) FROM order_facility_changes WHERE retailer_id = %s",
                "SELECT count(*) FROM brokering_decisions WHERE retailer_id = %s",
                "SELECT i.facility_id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.retailer_id = %s",
            )
        ]

    before = state()
    candidate = tmp_path / "candidate.toml"
    candidate.write_text('[brokering]\n[[brokering.rules]]\nname = "stores only"\nfacility_group = "STORES"\n')
    dry = cli("broker", r.retailer_id, "--dry-run", "--rules", str(candidate), "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["orders"] == 1
    assert report["current_rules"]["fill_rate"] == 1.0 and report["candidate_rules"]["fill_rate"] == 0.0
    assert [c["order_id"] for c in report["changed"]] == [doc["orderId"]]
    table = cli("broker", r.retailer_id, "--dry-run", "--since", "2020-01-01")
    assert table.returncode == 0 and "fill rate" in table.stdout and "nothing reserved" in table.stdout
    assert state() == before
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "x"\nsort = ["nearest"]\n')
    refused = cli("broker", r.retailer_id, "--dry-run", "--rules", str(bad))
    assert refused.returncode == 2 and "rule 'x': sort[0]" in refused.stderr
    listed = cli("retailers")
    assert listed.returncode == 0 and "every 900s" in listed.stdout  # the default brokering schedule
