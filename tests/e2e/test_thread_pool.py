"""The threads pool: one worker process running many tasks at once, end to end on real services."""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid

import pytest

from tests.conftest import start_worker, vhost_env
from tests.e2e.test_pipeline import wait_final
from tests.integration.test_routing import FACILITIES
from tests.support.waiting import eventually
from worker.adapters.postgres.inventory import PgInventory
from worker.core.inventory import parse_facilities_csv, parse_inventory_csv
from worker.demo.tlogfactory import CATALOG, mix

pytestmark = pytest.mark.e2e


def test_a_threads_pool_worker_ingests_and_routes_a_batch_once_with_stock_exact(make_retailer, db, database):
    r = make_retailer(order_master=True)
    stock = PgInventory(database)
    stock.load_facilities(r.retailer_id, parse_facilities_csv(FACILITIES))
    rows = ["facility_id,product_id,gtin,quantity_on_hand"]
    rows += [f"{f},{p.product_id},{p.gtin},3" for f in ("301", "DC1") for p in CATALOG]
    stock.load_inventory(r.retailer_id, parse_inventory_csv("\n".join(rows) + "\n"))
    files = mix(120, seed=11, bad_every=40, order_prefix=f"T{uuid.uuid4().hex[:4].upper()}")
    for name, data in files:
        r.put(name, data)
    with vhost_env("threads") as env:
        wp = start_worker(f"threads-{secrets.token_hex(2)}", concurrency=8, extra=["-P", "threads"], env=env)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "worker.cli", "scan", r.retailer_id, "--wait", "--timeout", "120"],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            statuses = wait_final(db, r.retailer_id, len(files))
            assert sum(statuses.values()) == len(files) and statuses.get("processed", 0) > 100

            def routed() -> bool:
                row = db.execute(
                    "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed')"
                    " FROM order_followups WHERE retailer_id = %s",
                    (r.retailer_id,),
                ).fetchone()
                return row == (0, 0)

            eventually(routed, timeout=90, what="every inventory and brokering follow-up done")
        finally:
            wp.stop()
    # each in-store line lowered stock once: one POS_SALE variance per in-store line of the stored orders
    lines, variances = db.execute(
        "SELECT (SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id"
        "        WHERE o.retailer_id = %(r)s AND i.fulfillment = 'IN_STORE'),"
        " (SELECT count(*) FROM inventory_variances WHERE retailer_id = %(r)s AND reason_id = 'POS_SALE')",
        {"r": r.retailer_id},
    ).fetchone()
    assert lines == variances > 0
    # no brokered line reserved twice
    doubles = db.execute(
        "SELECT count(*) FROM (SELECT order_id, item_seq FROM order_facility_changes WHERE retailer_id = %s"
        " AND reason = 'BROKERED' GROUP BY 1, 2 HAVING count(*) > 1) d",
        (r.retailer_id,),
    ).fetchone()
    assert doubles == (0,)
    # never more reserved than there was: the parallel threads did not oversell what brokering could place
    oversold = db.execute(
        "SELECT count(*) FROM inventory WHERE retailer_id = %s AND facility_id IN ('301', 'DC1') AND reserved > 3",
        (r.retailer_id,),
    ).fetchone()
    assert oversold == (0,)
