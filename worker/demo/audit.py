"""The demo's daily audit: sales seeded with the problems finance asks about, the audit that finds them, and what
each finding means.

dolcevita (the order master) gets register R7 of store 301 ringing transactions 1 to 6 on 2024-01-12, of which
transaction 4 is never uploaded and transaction 5 was paid a cent short; the demo's broken files (empty, not
UTF-8, without a gtin, a total that does not reconcile) are failures of the same day. northwind is not the order
master: its in-store sales are not stored as orders, yet the audit counts them from the ledger, and an ERP export
built from its TLog files matches the audit order by order.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from worker.core.money import loads_decimal
from worker.demo.tlogfactory import dumps, make_sale

DAY = date(2024, 1, 12)
STORE, REGISTER = "301", "R7"
console = Console(width=None if os.isatty(1) else 160)

WHY = {
    "failed file": "seeded: a broken file; fix it and `tlogsync replay-file` it, the next audit counts its sale",
    "missing sales": "seeded: this transaction was rung up at the register but its TLog was never uploaded;"
    " ask the store for it, a late upload closes the gap",
    "tenders": "seeded: the till took a cent less than the sale's total; finance explains it with"
    " `tlogsync audit ... --explain SUBJECT=NOTE`",
}


def audit_files() -> list[tuple[str, bytes]]:
    """dolcevita's register R7 of store 301 on the demo day: transactions 1-6, 4 never uploaded, 5 a cent short."""
    files = []
    for txn in (1, 2, 3, 5, 6):
        created = datetime(2024, 1, 12, 9 + 2 * txn, 15, tzinfo=UTC)  # store-local, as the POS writes it
        doc = make_sale(
            700 + txn, "IN_STORE", STORE, order_prefix="DVA", created=created, register_txn=txn, register_id=REGISTER
        )
        if txn == 5:
            doc["tenders"][0]["amountAuthorized"] = doc["totalAmount"] - Decimal("0.01")
        files.append((f"dolcevita_OrderTLog_2024-01-12-R7_{txn:04d}.json", dumps(doc)))
    return files


def erp_export_from_tlogs(folder: Path) -> str:
    """The ERP's side of the comparison, from the TLog files themselves (as archived): one row per sale."""
    lines = ["store,day,type,order_id,merchandise,discounts,tax,shipping,total"]
    for path in sorted(folder.glob("*.json")):
        try:
            doc: Any = loads_decimal(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(doc, dict) or not doc.get("orderProductList"):
            continue
        kinds = {line.get("omniFulfillmentType") for line in doc["orderProductList"]}
        kind = "IN_STORE" if kinds == {"IN_STORE"} else "SEND_SALE" if kinds == {"SHIP_TO_HOME"} else "MIXED"
        merchandise = sum((Decimal(line["price"]) * line["quantity"] for line in doc["orderProductList"]), Decimal(0))
        tax = Decimal(doc.get("taxSubTotal", 0)) + Decimal(doc.get("shippingTax", 0))
        lines.append(
            f"{doc['storeId']},{doc['creationDate'][:10]},{kind},{doc['orderId']},{merchandise:.2f},"
            f"{Decimal(doc.get('discount', 0)):.2f},{tax:.2f},{Decimal(doc.get('shippingSubTotal', 0)):.2f},"
            f"{Decimal(doc['totalAmount']):.2f}"
        )
    return "\n".join(lines) + "\n"


def run_demo_audit(dsn: str, retailers: Path, workdir: Path, sftp_root: Path) -> int:
    """Audit the demo day for both retailers and explain every finding; 0 when the findings are the seeded ones."""
    from worker import cli

    os.environ.update(
        TLOGSYNC_DATABASE_URL=dsn, TLOGSYNC_RETAILERS=str(retailers), TLOGSYNC_AUDIT_DIR=str(workdir / "audit")
    )
    console.rule("daily audit of the demo day (dolcevita, 2024-01-12)")
    status = cli.main(["audit", "dolcevita", "--date", DAY.isoformat(), "--no-sftp"])
    console.print(f"audit exit status {status} (1 means: something to look at, listed above)")
    report = json.loads((workdir / "audit" / "dolcevita" / f"dolcevita_audit_{DAY}.json").read_text())
    console.rule("what the audit found, and why")
    kinds = set()
    for diff in report["differences"]:
        kinds.add(diff["kind"])
        console.print(f"[bold]{escape(diff['kind'])}[/bold] \\[{escape(diff['subject'])}]: {escape(diff['text'])}")
        console.print(f"  -> {escape(WHY.get(diff['kind'], 'not seeded: look at it'))}")
    for item in report["rounding"]:
        console.print(f"rounding (named, not a difference): {escape(item['text'])}")
    console.print(
        f"files of the day: {report['files']['totals']}; HTML report:"
        f" {workdir / 'audit' / 'dolcevita' / f'dolcevita_audit_{DAY}.html'}"
    )
    found_all = {"failed file", "missing sales", "tenders"} <= kinds and kinds <= set(WHY)

    console.rule("northwind (not the order master): its in-store sales counted, the ERP compared")
    erp = workdir / "northwind_erp.csv"
    erp.write_text(erp_export_from_tlogs(sftp_root / "northwind" / "POS/PS_to_HC/SalesOrder" / "archive"))
    matched = cli.main(["audit", "northwind", "--date", DAY.isoformat(), "--no-sftp", "--compare", str(erp)])
    console.print(
        f"northwind audit and ERP comparison exit status {matched}"
        " (0: consistent, and the ERP export built from the same sales matches order by order)"
    )
    ok = found_all and status == 1 and matched == 0
    if not ok:
        console.print("[red]the audit did not find exactly the seeded problems[/red]")
    return 0 if ok else 1
