"""The audit's HTML report opens in headless Chromium, on its own (no network), and shows the day's totals."""

from __future__ import annotations

import copy
import secrets
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import IN_CI, SESSION_DIR, need
from tests.integration.test_routing import retailer_for
from worker.adapters.postgres.audit import PgAudit
from worker.demo.tlogfactory import dumps, make_sale
from worker.services.audit import run_audit
from worker.services.ingest import decide
from worker.services.ports import Claim

CHROMIUM = Path("/usr/bin/chromium")


def record(ledger, cfg, data):
    with ledger.scan_transaction(cfg.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(f"{uuid.uuid4().hex}.json", "/x", 1, 1.0)])
    return ledger.record(row.id, decide(data, cfg)).row


def test_the_html_report_opens_in_headless_chromium_and_shows_the_days_totals(ledger, database, tmp_path):
    if not CHROMIUM.exists():
        need(False, "Chromium (apt-get install chromium)")
    sync_api = (
        pytest.importorskip("playwright.sync_api")
        if not IN_CI
        else __import__("playwright.sync_api", fromlist=["sync_playwright"])
    )
    cfg = retailer_for(f"html_{secrets.token_hex(4)}")
    prefix = f"H{secrets.token_hex(2).upper()}"
    sales = [
        make_sale(1, "IN_STORE", created=datetime(2024, 8, 1, 9, 5, tzinfo=UTC), order_prefix=prefix),
        make_sale(2, "IN_STORE", created=datetime(2024, 8, 1, 13, 40, tzinfo=UTC), order_prefix=prefix),
        make_sale(3, "SEND_SALE", created=datetime(2024, 8, 1, 13, 50, tzinfo=UTC), order_prefix=prefix),
    ]
    hostile = copy.deepcopy(sales[1])
    hostile["taxRates"][0]["taxName"] = "<script>document.title='owned'</script>"
    sales[1] = hostile
    for doc in sales:
        record(ledger, cfg, dumps(doc))
    record(
        ledger,
        cfg,
        dumps(make_sale(5, "IN_STORE", created=datetime(2024, 8, 1, 17, 0, tzinfo=UTC), order_prefix=prefix)),
    )  # transaction 4 never arrives
    document, _, written = run_audit(cfg, date(2024, 8, 1), PgAudit(database), None, tmp_path)
    [html] = [p for p in written if p.suffix == ".html"]
    in_store = (
        sum((d["totalAmount"] for d in sales[:2]), Decimal(0))
        + make_sale(5, "IN_STORE", created=datetime(2024, 8, 1, 17, 0, tzinfo=UTC), order_prefix=prefix)["totalAmount"]
    )
    assert document["totals"]["IN_STORE"] == str(in_store)

    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda req: requests.append(req.url))
            page.goto(html.as_uri(), wait_until="load")
            assert page.title() == f"Audit of {cfg.retailer_id} for 2024-08-01"
            totals = page.locator("#totals").inner_text()
            assert "IN_STORE" in totals and str(in_store) in totals
            assert str(sales[2]["totalAmount"]) in totals  # SEND_SALE
            assert "not consistent: 1 difference" in page.locator("#verdict").inner_text()
            assert "4" in page.locator("#gaps").inner_text()
            bars = page.locator("#hour-chart rect.bar[data-type='IN_STORE']")
            assert [bars.nth(i).get_attribute("data-hour") for i in range(bars.count())] == ["9", "13", "17"]
            assert page.locator("#hour-chart").bounding_box()["width"] > 500  # drawn, not an empty box
            assert "<script>" in page.locator("#tax").inner_text()  # shown as text, never run
            page.screenshot(path=str(SESSION_DIR / "audit-report.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [html.as_uri()]  # self-contained: nothing else is fetched
