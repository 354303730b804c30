"""The daily audit of issue 14 on the real PostgreSQL: every file of the day, every cent, the register sequence,
the ERP comparison (and the command line that runs them)."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

from tests.integration.test_routing import retailer_for
from worker.adapters.postgres.audit import PgAudit
from worker.demo.tlogfactory import dumps, make_sale
from worker.services.audit import run_audit
from worker.services.ingest import decide
from worker.services.ports import Claim

DAY = date(2024, 7, 1)


def at(hour, minute=0):
    return datetime(2024, 7, 1, hour, minute, tzinfo=UTC)  # creationDate is written as store-local


def record(ledger, cfg, data, name=None):
    with ledger.scan_transaction(cfg.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(name or f"{uuid.uuid4().hex}.json", "/x", 1, 1.0)])
    return ledger.record(row.id, decide(data, cfg)).row


def erp_rows(docs):
    """The ERP's side, built from the TLogs themselves (not from the OMS): one row per order."""
    rows = []
    for d in docs:
        kind = "IN_STORE" if d["fulfillmentType"] == "IN_STORE" else "SEND_SALE"
        merchandise = sum((line["price"] * line["quantity"] for line in d["orderProductList"]), Decimal(0))
        rows.append(
            {
                "store": d["storeId"],
                "day": d["creationDate"][:10],
                "type": kind,
                "order_id": d["orderId"],
                "orders": 1,
                "merchandise": f"{merchandise:.2f}",
                "discounts": f"{d['discount']:.2f}",
                "tax": f"{d['taxSubTotal'] + d.get('shippingTax', 0):.2f}",
                "shipping": f"{d.get('shippingSubTotal', 0):.2f}",
                "total": f"{d['totalAmount']:.2f}",
            }
        )
    return rows


def to_csv(
    rows, columns=("store", "day", "type", "orders", "merchandise", "discounts", "tax", "shipping", "total", "order_id")
):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def audit_cli(retailer_id, tmp_path, *extra):
    env = dict(os.environ, TLOGSYNC_AUDIT_DIR=str(tmp_path / "reports"))
    cmd = [sys.executable, "-m", "worker.cli", "audit", retailer_id, "--date", DAY.isoformat(), "--no-sftp", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_a_day_with_a_failed_file_a_skip_a_missing_sale_and_a_short_tender_is_not_consistent_until_fixed(
    ledger, database, make_retailer, tmp_path
):
    r = make_retailer(order_master=False)
    cfg = retailer_for(r.retailer_id, order_master=False)
    prefix = f"AD{secrets.token_hex(2).upper()}"
    sold = {
        seq: make_sale(seq, kind, created=at(8 + seq), order_prefix=prefix)
        for seq, kind in [(1, "IN_STORE"), (2, "SEND_SALE"), (3, "IN_STORE"), (4, "SEND_SALE"), (5, "IN_STORE")]
    }
    sold[4]["tenders"][0]["amountAuthorized"] -= Decimal("0.01")  # the till took a cent less than the total
    broken = copy.deepcopy(sold[2])
    del broken["orderProductList"][0]["gtin"]
    audit = PgAudit(database)

    assert record(ledger, cfg, dumps(sold[1])).status == "skipped"  # in-store, not the order master
    failed = record(ledger, cfg, dumps(broken), name=f"{prefix}-2.json")
    assert failed.status == "failed"
    assert record(ledger, cfg, dumps(sold[4])).status == "processed"  # a send-sale: stored
    assert record(ledger, cfg, dumps(sold[5])).status == "skipped"
    assert record(ledger, cfg, dumps(sold[5]) + b"\n").status == "skipped"  # the same sale again, other bytes
    # sale 3 never arrives (yet)

    document, _, written = run_audit(cfg, DAY, audit, None, tmp_path)
    assert not document["consistent"]
    kinds = {d["kind"]: d for d in document["differences"]}
    assert set(kinds) == {"failed file", "missing sales", "tenders"}, document["differences"]
    assert kinds["failed file"]["subject"] == f"file:{failed.id}" and "gtin" in kinds["failed file"]["text"]
    gap = document["missing_transactions"]
    assert [(g["store"], g["register"], g["missing"], g["where"]) for g in gap] == [
        ("254", "ANY", "3", "within the day")
    ]
    assert gap[0]["after"]["txn"] == 2 and gap[0]["after"]["file"] == f"{prefix}-2.json"
    assert gap[0]["before"]["txn"] == 4 and gap[0]["before"]["order"] == sold[4]["orderId"]
    short = kinds["tenders"]
    assert short["subject"] == f"order:{sold[4]['orderId']}:tenders" and short["difference"] == "-0.01"
    files = document["files"]
    assert files["totals"]["processed"] == 1 and files["totals"]["failed"] == 1 and files["totals"]["skipped"] == 2
    assert files["totals"]["duplicate"] == 1 and "counted once" in files["duplicate"][0]["reason"]
    assert all("not the order master" in s["reason"] for s in files["skipped"])
    # the in-store sales that were not stored are counted from the ledger, cent for cent
    by = {(row["store"], row["type"]): row for row in document["rows"]}
    assert by[("254", "IN_STORE")]["orders"] == 2
    assert by[("254", "IN_STORE")]["grand_total"] == str(sold[1]["totalAmount"] + sold[5]["totalAmount"])
    assert by[("254", "SEND_SALE")]["ties_out"] is False
    assert document["tax_by_jurisdiction"][0]["jurisdiction"] == "STATE TAX"
    assert {p.suffix for p in written} == {".csv", ".json", ".html"}
    stored = audit.db.connection  # the last report is stored with its count of differences
    with stored() as conn:
        row = conn.execute(
            "SELECT consistent, differences FROM audit_reports WHERE retailer_id = %s AND business_date = %s",
            (r.retailer_id, DAY),
        ).fetchone()
    assert row == (False, 3)
    # visible: the last audit per retailer in the read model behind tlogsync status, and as metrics
    from worker.adapters.postgres.readmodel import PgReadModel
    from worker.monitoring.metrics import TlogsyncCollector

    [last] = [a for a in PgReadModel(database).last_audits() if a.retailer_id == r.retailer_id]
    assert (last.business_date, last.consistent, last.differences) == (DAY, False, 3)
    samples = {
        (m.name, s.labels["retailer"]): s.value
        for m in TlogsyncCollector._audits(PgReadModel(database))
        for s in m.samples
    }
    assert samples[("tlogsync_audit_consistent", r.retailer_id)] == 0
    assert samples[("tlogsync_audit_differences", r.retailer_id)] == 3

    # The fixes: the file replayed once fixed, the missing sale uploaded late, the cent explained by finance.
    with ledger.replay_transaction(cfg.retailer_id, "orders") as tx:
        again = tx.claim_again(tx.row(failed.id), "/x")
    assert ledger.record(again.id, decide(dumps(sold[2]), cfg)).row.status == "processed"
    assert record(ledger, cfg, dumps(sold[3])).status == "skipped"
    explained = audit_cli(
        r.retailer_id, tmp_path, "--explain", f"{short['subject']}=the till rounded the cash tender down; ticket FIN-17"
    )
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "consistent: every file and every cent accounted for" in explained.stdout
    assert "explained:" in explained.stdout and "FIN-17" in explained.stdout

    fixed, sales, _ = run_audit(cfg, DAY, audit, None, tmp_path)
    assert fixed["consistent"], fixed["differences"]
    assert fixed["missing_transactions"] == []
    assert [d["explained"] for d in fixed["differences"]] == ["the till rounded the cash tender down; ticket FIN-17"]
    assert fixed["files"]["totals"]["replayed"] == 1 and fixed["files"]["totals"]["processed"] == 2
    assert len(sales) == 5
    env = dict(os.environ, TLOGSYNC_BROKER_URL="amqp://guest:guest@127.0.0.1:1//")  # status without a broker
    status = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)["retailers"][r.retailer_id]["last_audit"]
    assert shown["consistent"] is True and shown["differences"] == 0 and shown["business_date"] == "2024-07-01"

    # The ERP's export built from the same sales matches, order by order and store/day/type by store/day/type.
    rows = erp_rows(sold[i] for i in range(1, 6))
    erp = tmp_path / "erp.csv"
    erp.write_text(to_csv(rows))
    good = audit_cli(r.retailer_id, tmp_path, "--compare", str(erp), "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    outcome = json.loads(good.stdout)
    assert outcome["reconciliation"] == {"matches": True, "level": "order", "differences": []}
    summary = {}
    for row in rows:
        key = (row["store"], row["day"], row["type"])
        s = summary.setdefault(
            key,
            {**row, "orders": 0, **dict.fromkeys(("merchandise", "discounts", "tax", "shipping", "total"), Decimal(0))},
        )
        s["orders"] += 1
        for name in ("merchandise", "discounts", "tax", "shipping", "total"):
            s[name] += Decimal(row[name])
    erp.write_text(
        to_csv(
            summary.values(),
            columns=("store", "day", "type", "orders", "merchandise", "discounts", "tax", "shipping", "total"),
        )
    )
    grouped = audit_cli(r.retailer_id, tmp_path, "--compare", str(erp), "--json")
    assert grouped.returncode == 0, grouped.stdout + grouped.stderr
    assert json.loads(grouped.stdout)["reconciliation"]["level"] == "store/day/type"

    # What the ERP gets wrong is listed at the finest level both sides have.
    wrong = copy.deepcopy(rows)
    wrong[4]["tax"] = str(Decimal(wrong[4]["tax"]) + Decimal("0.05"))
    wrong[4]["total"] = str(Decimal(wrong[4]["total"]) + Decimal("0.05"))
    wrong[2]["day"] = "2024-06-30"  # booked on the day before
    del wrong[0]
    wrong.append({**rows[0], "order_id": "ERP-ONLY-9", "total": "9.99"})
    erp.write_text(to_csv(wrong))
    bad = audit_cli(r.retailer_id, tmp_path, "--compare", str(erp))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    out = " ".join(bad.stdout.split())
    assert f"here, not in the ERP: {sold[1]['orderId']}" in out
    assert "in the ERP, not here: ERP-ONLY-9" in out
    assert f"{sold[5]['orderId']}: tax" in out and "difference -0.05" in out
    assert f"{sold[3]['orderId']}: here on 2024-07-01, in the ERP on 2024-06-30" in out
    assert "MISMATCH" in out


def test_a_gap_across_the_day_boundary_names_the_neighbour_on_the_other_day(ledger, database, tmp_path):
    cfg = retailer_for(f"audit_{secrets.token_hex(4)}")
    prefix = f"BD{secrets.token_hex(2).upper()}"
    record(ledger, cfg, dumps(make_sale(10, created=datetime(2024, 6, 30, 21, 0, tzinfo=UTC), order_prefix=prefix)))
    record(ledger, cfg, dumps(make_sale(13, created=at(9), order_prefix=prefix)))
    record(ledger, cfg, dumps(make_sale(14, created=at(20), order_prefix=prefix)))
    record(ledger, cfg, dumps(make_sale(16, created=datetime(2024, 7, 2, 8, 0, tzinfo=UTC), order_prefix=prefix)))
    document, _, _ = run_audit(cfg, DAY, PgAudit(database), None, tmp_path)
    gaps = {(g["missing"], g["where"]): g for g in document["missing_transactions"]}
    assert set(gaps) == {("11-12", "across the start of the day"), ("15", "across the end of the day")}
    start = gaps[("11-12", "across the start of the day")]
    assert start["count"] == 2 and start["after"]["day"] == "2024-06-30" and start["after"]["txn"] == 10
    assert gaps[("15", "across the end of the day")]["before"]["day"] == "2024-07-02"
    assert not document["consistent"]


def test_a_file_that_does_not_parse_is_placed_by_its_name(ledger, database, tmp_path):
    cfg = retailer_for(f"audit_{secrets.token_hex(4)}")
    row = record(ledger, cfg, b"{not json", name="acme_OrderTLog_2024-07-01-18_46_40_660.json")
    assert row.status == "failed"
    document, _, _ = run_audit(cfg, DAY, PgAudit(database), None, tmp_path)
    [failed] = document["files"]["failed"]
    assert failed["ledger_id"] == row.id and failed["day_from"] == "file name" and failed["store"] == "?"
    assert not document["consistent"]
