"""audit_retailer: the daily sales audit of one retailer (beat checks every 15 minutes whether it is due)."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.app.runtime import runtime
from worker.app.taskbase import TlogTask
from worker.celery import app
from worker.core.audit import day_to_audit
from worker.services.audit import run_audit


@app.task(
    base=TlogTask,
    bind=True,
    name="tlogsync.ops.audit_retailer",
    retry_policy_name="scan_retry",
    soft_time_limit=600,
    time_limit=660,
)
def audit_retailer(
    self: TlogTask, retailer_id: str, business_date: str | None = None, due_only: bool = False
) -> dict[str, Any]:
    """Audit a business day (default: yesterday in the retailer's audit time zone). With due_only, only
    once the retailer's audit_time has passed and only if that day has no report yet."""
    retailer = runtime.retailer(retailer_id)
    now_local = datetime.now(UTC).astimezone(ZoneInfo(retailer.audit_time_zone))
    requested = date.fromisoformat(business_date) if business_date else None
    day = day_to_audit(
        now_local, requested, due_only, retailer.audit_time, lambda d: runtime.audit().done(retailer_id, d)
    )
    if day is None:
        return {"retailer": retailer_id, "audit": "not due"}
    with runtime.sftp(retailer) if retailer.sftp.audit_dir else nullcontext(None) as source:
        document, _, written = run_audit(retailer, day, runtime.audit(), source, runtime.settings.audit_dir)
    return {
        "retailer": retailer_id,
        "business_date": day.isoformat(),
        "totals": document["totals"],
        "consistent": document["consistent"],
        "differences": document.get("differences_count", 0),
        "files": [str(p) for p in written],
    }
