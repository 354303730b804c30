"""Returns and the daily audit against the real PostgreSQL (and the audit's command line)."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from tests.integration.test_routing import load, retailer_for
from worker.adapters.postgres.audit import PgAudit
from worker.adapters.postgres.inventory import PgInventory
from worker.demo.tlogfactory import dumps, make_return, make_sale
from worker.services.audit import run_audit
from worker.services.ingest import decide
from worker.services.ports import Claim


def record(ledger, r, doc):
    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(f"{uuid.uuid4().hex}.json", "/x", 1, 1.0)])
    recorded = ledger.record(row.id, decide(dumps(doc), r))
    assert recorded.row.status == "processed", recorded.row.error
    return recorded.order_id


def rid():
    return f"audit_{secrets.token_hex(4)}"


def qoh(db, retailer_id, store, gtin):
    row = db.execute(
        "SELECT quantity_on_hand FROM inventory WHERE retailer_id = %s AND facility_id = %s AND gtin = %s",
        (retailer_id, store, gtin),
    ).fetchone()
    return row[0] if row else None


def test_a_return_against_a_known_order_is_linked_and_restocked(ledger, database, db):
    r = retailer_for(rid())
    inventory = PgInventory(database)
    sale = make_sale(1, "IN_STORE", store_id="254", lines=1, order_prefix=f"K{secrets.token_hex(2).upper()}")
    line = sale["orderProductList"][0]
    load(inventory, r.retailer_id, {("254", line["gtin"]): 10})
    order_id = record(ledger, r, sale)
    inventory.apply_sale(r.retailer_id, order_id)
    return_id = record(ledger, r, make_return(1, sale, order_prefix=f"KR{secrets.token_hex(2).upper()}"))
    linked = db.execute(
        "SELECT original_order_id, original_external_id, refund_total FROM returns WHERE id = %s", (return_id,)
    ).fetchone()
    assert linked[:2] == (order_id, sale["orderId"])
    assert linked[2] == line["subTotal"] + line["tax"]
    # an exchange is its sale plus its return: sold then put back
    assert qoh(db, r.retailer_id, "254", line["gtin"]) == 10 - line["quantity"] + line["quantity"]
    reasons = [
        row[0]
        for row in db.execute(
            "SELECT reason_id FROM inventory_variances WHERE retailer_id = %s ORDER BY id", (r.retailer_id,)
        )
    ]
    assert reasons == ["POS_SALE", "POS_RETURN"]


def test_a_return_to_a_store_without_a_stock_row_restocks_the_product_another_facility_stocks(ledger, database, db):
    from worker.core.inventory import parse_inventory_csv

    r = retailer_for(rid())
    inventory = PgInventory(database)
    doc = make_return(6, order_prefix=f"N{secrets.token_hex(2).upper()}")
    line = doc["returnProductList"][0]
    load(inventory, r.retailer_id, {})
    inventory.load_inventory(
        r.retailer_id,
        parse_inventory_csv(f"facility_id,product_id,gtin,quantity_on_hand\nDC1,DC-ONLY-ID,{line['gtin']},3\n"),
    )
    record(ledger, r, doc)
    restocked = db.execute(
        "SELECT product_id, quantity_on_hand FROM inventory WHERE retailer_id = %s AND facility_id = '254'",
        (r.retailer_id,),
    ).fetchall()
    assert restocked == [("DC-ONLY-ID", line["quantity"])]


def test_a_return_of_an_unknown_order_is_stored_standalone(ledger, db):
    r = retailer_for(rid())
    doc = make_return(2, order_prefix=f"U{secrets.token_hex(2).upper()}")
    doc["originalOrderId"] = "NEVER-SEEN-1"
    return_id = record(ledger, r, doc)
    row = db.execute(
        "SELECT original_order_id, original_external_id FROM returns WHERE id = %s", (return_id,)
    ).fetchone()
    assert row == (None, "NEVER-SEEN-1")
    items = db.execute("SELECT restock, reason FROM return_items WHERE return_id = %s", (return_id,)).fetchall()
    assert items == [(True, "DID_NOT_FIT")]


def test_the_same_return_twice_is_a_duplicate(ledger, db):
    r = retailer_for(rid())
    doc = make_return(3, order_prefix=f"D{secrets.token_hex(2).upper()}")
    record(ledger, r, doc)
    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim("again.json", "/x", 1, 1.0)])
    again = ledger.record(row.id, decide(dumps(doc) + b" ", r))
    assert again.row.status == "duplicate" and "already stored" in again.row.error


def audit_retailer(retailer_id):
    r = retailer_for(retailer_id)
    return dataclasses.replace(r, audit_time="03:00", audit_time_zone="America/Los_Angeles")


def test_the_audit_counts_a_sale_at_2330_local_in_that_local_day(ledger, database, db, tmp_path):
    r = audit_retailer(rid())
    prefix = f"T{secrets.token_hex(2).upper()}"
    late = make_sale(
        1, "IN_STORE", store_id="301", order_prefix=prefix, created=datetime(2024, 3, 10, 23, 30, tzinfo=UTC)
    )  # creationDate is store-local
    next_day = make_sale(
        2, "SEND_SALE", store_id="301", order_prefix=prefix, created=datetime(2024, 3, 11, 0, 10, tzinfo=UTC)
    )
    morning = make_sale(
        3, "MIXED", store_id="254", lines=2, order_prefix=prefix, created=datetime(2024, 3, 10, 8, 0, tzinfo=UTC)
    )
    returned = make_return(
        4, morning, store_id="254", order_prefix=f"{prefix}R", created=datetime(2024, 3, 10, 18, 0, tzinfo=UTC)
    )
    for doc in (late, next_day, morning, returned):
        record(ledger, r, doc)
    document, orders, written = run_audit(r, date(2024, 3, 10), PgAudit(database), None, tmp_path)
    by = {(row["store"], row["type"]): row for row in document["rows"]}
    assert set(by) == {("301", "IN_STORE"), ("254", "MIXED"), ("254", "RETURN")}
    assert by[("301", "IN_STORE")]["grand_total"] == str(late["totalAmount"])
    assert by[("254", "RETURN")]["grand_total"] == str(-returned["totalAmount"])
    assert by[("254", "MIXED")]["shipping"] == "30.00"
    assert document["consistent"] and document["inconsistent_orders"] == []
    assert {p.suffix for p in written} == {".csv", ".json", ".html"}
    assert (tmp_path / r.retailer_id / f"{r.retailer_id}_audit_2024-03-10.csv").read_text().startswith("store,type")
    stored = db.execute(
        "SELECT consistent, report->'totals'->>'IN_STORE' FROM audit_reports WHERE retailer_id = %s"
        " AND business_date = '2024-03-10'",
        (r.retailer_id,),
    ).fetchone()
    assert stored == (True, str(late["totalAmount"]))
    following, _, _ = run_audit(r, date(2024, 3, 11), PgAudit(database), None, tmp_path)
    assert [(row["store"], row["type"]) for row in following["rows"]] == [("301", "SEND_SALE")]


def test_an_order_that_does_not_add_up_is_listed(ledger, database, db, tmp_path):
    r = audit_retailer(rid())
    order_id = record(ledger, r, make_sale(1, "IN_STORE", order_prefix=f"B{secrets.token_hex(2).upper()}"))
    db.execute("UPDATE order_items SET unit_price = unit_price + 1 WHERE order_id = %s AND item_seq = 1", (order_id,))
    document, _, _ = run_audit(r, date(2024, 1, 12), PgAudit(database), None, tmp_path)
    assert not document["consistent"] and len(document["inconsistent_orders"]) == 1


def test_reconciliation_from_the_command_line_finds_a_seeded_mismatch(ledger, db, make_retailer, tmp_path):
    r = make_retailer()
    cfg = retailer_for(r.retailer_id)
    prefix = f"E{secrets.token_hex(2).upper()}"
    docs = [
        make_sale(i, "IN_STORE", order_prefix=prefix, created=datetime(2024, 5, 1, 12, i, tzinfo=UTC)) for i in range(3)
    ]
    for doc in docs:
        record(ledger, cfg, doc)
    erp = tmp_path / "erp.csv"
    lines = ["order_id,store,type,total"] + [f"{d['orderId']},{d['storeId']},IN_STORE,{d['totalAmount']}" for d in docs]
    erp.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, TLOGSYNC_AUDIT_DIR=str(tmp_path / "reports"))
    cmd = [sys.executable, "-m", "worker.cli", "audit", r.retailer_id, "--date", "2024-05-01", "--compare", str(erp)]
    good = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["reconciliation"]["matches"] is True
    seeded = lines[:2] + [
        f"{docs[1]['orderId']},{docs[1]['storeId']},IN_STORE,{docs[1]['totalAmount'] - 1}",
        "ERP-ONLY-1,254,IN_STORE,12.00",
    ]
    erp.write_text("\n".join(seeded) + "\n")
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    assert "in the ERP, not here: ERP-ONLY-1" in bad.stdout
    assert f"here, not in the ERP: {docs[2]['orderId']}" in bad.stdout
    assert f"{docs[1]['orderId']}: {docs[1]['totalAmount']}" in bad.stdout and "difference 1.00" in bad.stdout
    assert Path(tmp_path / "reports" / r.retailer_id / f"{r.retailer_id}_audit_2024-05-01.json").exists()


def test_the_report_is_also_written_to_the_retailers_audit_dir(ledger, database, sshd, tmp_path):
    from worker.adapters.sftp import SftpSource
    from worker.core.retailers import SftpConfig

    audit_dir = sshd.root / f"audit-{secrets.token_hex(3)}"
    audit_dir.mkdir()
    r = audit_retailer(rid())
    sftp = SftpConfig(
        sshd.host,
        sshd.port,
        sshd.username,
        str(sshd.known_hosts),
        "/in",
        "/in/a",
        "/in/e",
        private_key=str(sshd.private_key),
        audit_dir=str(audit_dir),
    )
    r = dataclasses.replace(r, sftp=sftp)
    record(
        ledger,
        r,
        make_sale(
            1,
            "IN_STORE",
            order_prefix=f"S{secrets.token_hex(2).upper()}",
            created=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        ),
    )
    source = SftpSource(sftp)
    try:
        run_audit(r, date(2024, 6, 1), PgAudit(database), source, tmp_path / "local")
    finally:
        source.close()
    names = sorted(p.name for p in audit_dir.iterdir())
    assert names == [
        f"{r.retailer_id}_audit_2024-06-01.csv",
        f"{r.retailer_id}_audit_2024-06-01.html",
        f"{r.retailer_id}_audit_2024-06-01.json",
    ]
    assert json.loads((audit_dir / names[2]).read_text())["totals"]["IN_STORE"] != "0.00"
