"""The order's life after the sale end to end, through real workers: the fulfilment feed ships one line and
rejects another (re-brokered elsewhere by the next run), the command line cancels a third, and a conflicting
TLog goes to the error folder with its diff."""

from __future__ import annotations

import copy
import os
import time

import pytest

from tests.conftest import write_retailers
from tests.e2e.test_pipeline import cli
from tests.e2e.test_routing import load_network, wait_followups
from tests.integration.test_routing import LAKOTA, atp, send_sale
from worker.demo.tlogfactory import dumps

pytestmark = pytest.mark.e2e


def facility_of(db, retailer_id, external_id):
    return db.execute(
        "SELECT i.facility_id, i.status_id FROM order_items i JOIN orders o ON o.id = i.order_id"
        " WHERE o.retailer_id = %s AND o.external_id = %s",
        (retailer_id, external_id),
    ).fetchone()


def wait_for(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_ship_reject_rebroker_and_cancel_through_the_workers(celery_worker, make_retailer, db, tmp_path, sshd):
    r = make_retailer()
    feed = r.root / "fulfillment"
    for sub in ("archive", "error"):
        (feed / sub).mkdir(parents=True)
    r.options["sftp"] = {
        "fulfillment_dir": f"{feed}",
        "fulfillment_archive_dir": f"{feed}/archive",
        "fulfillment_error_dir": f"{feed}/error",
    }
    write_retailers(sshd)
    load_network(r, tmp_path, {("301", LAKOTA.gtin): 5, ("DC1", LAKOTA.gtin): 5})
    ship_me, reject_me, cancel_me = (send_sale(n, store="254") for n in (1, 2, 3))
    for name, doc in (("a.json", ship_me), ("b.json", reject_me), ("c.json", cancel_me)):
        r.put(name, dumps(doc))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    assert atp(db, r.retailer_id, "301") == (5, 3)  # all three reserved at the nearest store

    records = feed / "dv_Fulfillment_1.csv"
    records.write_text(
        "orderId,itemSeq,facilityId,quantity,status,trackingCode,reason\n"
        f"{ship_me['orderId']},1,301,1,SHIPPED,1Z999,\n"
        f"{reject_me['orderId']},1,301,1,REJECTED,,damaged box\n"
    )
    os.utime(records, (time.time() - 60, time.time() - 60))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    row = db.execute(
        "SELECT id, status, records_applied, records_rejected, moved_to FROM tlog_files WHERE retailer_id = %s"
        " AND feed = 'fulfillment'",
        (r.retailer_id,),
    ).fetchone()
    assert row[1:4] == ("processed", 2, 0)
    assert row[4] == f"{feed}/archive/{row[0]}-dv_Fulfillment_1.csv"
    # the rejected line went back to the queue; the run the rejection started places it at DC1, not 301
    wait_for(lambda: facility_of(db, r.retailer_id, reject_me["orderId"])[0] == "DC1", "the re-brokering")
    assert facility_of(db, r.retailer_id, ship_me["orderId"]) == ("301", "ITEM_COMPLETED")
    assert atp(db, r.retailer_id, "301") == (4, 1)  # one shipped (on hand and reserved down), one released
    assert atp(db, r.retailer_id, "DC1") == (5, 1)

    done = cli("order", "cancel", r.retailer_id, cancel_me["orderId"])
    assert done.returncode == 0, done.stderr
    assert "ORDER_CANCELLED" in done.stdout
    assert atp(db, r.retailer_id, "301") == (4, 0)
    again = cli("order", "ship", r.retailer_id, cancel_me["orderId"], "--item", "1")
    assert again.returncode == 1 and "cancelled already" in again.stderr

    # the same orderId with other content and the same updateDate: a conflict, in the error folder, with its diff
    changed = copy.deepcopy(ship_me)
    changed["shippingAddress"]["city"] = "san diego"
    r.put("a-again.json", dumps(changed))
    scanned = cli("scan", r.retailer_id, "--wait", "--timeout", "60")
    assert scanned.returncode == 0 and "'conflict': 1" in scanned.stdout
    conflict = db.execute(
        "SELECT id, status, error FROM tlog_files WHERE retailer_id = %s AND file_name = 'a-again.json'",
        (r.retailer_id,),
    ).fetchone()
    assert conflict[1] == "conflict" and "city" in conflict[2]
    assert (r.error / f"{conflict[0]}-a-again.json.error.txt").exists()
    diff = cli("order", "diff", r.retailer_id, ship_me["orderId"])
    assert diff.returncode == 1 and "city" in diff.stdout and "san diego" in diff.stdout


def test_the_operator_tasks_ship_and_reject_through_the_workers(celery_worker, make_retailer, db, tmp_path):
    """What an operator starts from Flower: tlogsync.ops.reject_order, then tlogsync.ops.ship_order."""
    from tasks.lifecycle import reject_order, ship_order

    r = make_retailer()
    load_network(r, tmp_path, {("301", LAKOTA.gtin): 5, ("DC1", LAKOTA.gtin): 5})
    sale = send_sale(7, store="254", quantity=2)
    r.put("s.json", dumps(sale))
    assert cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    wait_followups(db, r.retailer_id)
    assert facility_of(db, r.retailer_id, sale["orderId"]) == ("301", "ITEM_APPROVED")
    reject_order.apply_async((r.retailer_id, sale["orderId"]), {"item": 1, "reason": "shelf empty"})
    wait_for(lambda: facility_of(db, r.retailer_id, sale["orderId"])[0] == "DC1", "the re-brokering")
    assert atp(db, r.retailer_id, "301") == (5, 0) and atp(db, r.retailer_id, "DC1") == (5, 2)
    ship_order.apply_async((r.retailer_id, sale["orderId"]))
    wait_for(lambda: facility_of(db, r.retailer_id, sale["orderId"]) == ("DC1", "ITEM_COMPLETED"), "the shipment")
    assert atp(db, r.retailer_id, "DC1") == (3, 0)
    status = db.execute(
        "SELECT status_id FROM orders WHERE retailer_id = %s AND external_id = %s", (r.retailer_id, sale["orderId"])
    ).fetchone()
    assert status == ("ORDER_COMPLETED",)
