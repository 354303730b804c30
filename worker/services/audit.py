"""Running the daily audit and publishing its report: locally, on the retailer's SFTP, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from worker.core.audit import AuditStore, audit_day, dumps, report_csv
from worker.core.audit_html import report_html
from worker.core.dayaudit import SaleOfDay
from worker.core.erp import Comparison, ErpLine, compare
from worker.core.retailers import Retailer
from worker.services.feeds import join
from worker.services.ports import FileSource


def run_audit(
    retailer: Retailer, business_date: date, store: AuditStore, source: FileSource | None, report_dir: Path
) -> tuple[dict[str, Any], list[SaleOfDay], list[Path]]:
    """Audit one business day; write `<retailer>_audit_<date>.csv/.json/.html` under report_dir/<retailer> and
    to sftp.audit_dir."""
    document, sales = audit_day(retailer.retailer_id, business_date, retailer.audit_time_zone, store)
    folder = report_dir / retailer.retailer_id
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{retailer.retailer_id}_audit_{business_date.isoformat()}"
    written = []
    outputs = ((".csv", report_csv(document)), (".json", dumps(document)), (".html", report_html(document)))
    for suffix, text in outputs:
        path = folder / (stem + suffix)
        path.write_text(text, encoding="utf-8")
        written.append(path)
        if source is not None and retailer.sftp.audit_dir:
            source.write(join(retailer.sftp.audit_dir, stem + suffix), text.encode("utf-8"))
    return document, sales, written


def compare_with_erp(
    business_date: date,
    sales: list[SaleOfDay],
    erp: list[ErpLine],
    elsewhere: Callable[[list[str]], dict[str, tuple[date, str, str]]],
) -> Comparison:
    """The day's sales against the ERP's export (worker.core.erp for the format and the levels)."""
    return compare(business_date, sales, erp, elsewhere)
