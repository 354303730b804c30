"""audit_retailer: the daily sales audit of one retailer (beat checks every 15 minutes whether it is due)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.auditing import run_audit
from worker.celery import app
from worker.core.audit import due_business_date
from worker.runtime import runtime
from worker.taskbase import TlogTask


@app.task(base=TlogTask, bind=True, name="tlogsync.ops.audit_retailer", retry_policy_name="scan_retry",
          soft_time_limit=600, time_limit=660)
def audit_retailer(self: TlogTask, retailer_id: str, business_date: str | None = None,
                   due_only: bool = False) -> dict[str, Any]:
    """Audit a business day (default: yesterday in the retailer's audit time zone). With due_only, only
    once the retailer's audit_time has passed and only if that day has no report yet."""
    retailer = runtime.retailer(retailer_id)
    now_local = datetime.now(UTC).astimezone(ZoneInfo(retailer.audit_time_zone))
    if business_date:
        day = date.fromisoformat(business_date)
    elif due_only:
        due = due_business_date(now_local, retailer.audit_time or "00:00")
        if due is None or runtime.audit().done(retailer_id, due):
            return {"retailer": retailer_id, "audit": "not due"}
        day = due
    else:
        day = due_business_date(now_local, "00:00") or now_local.date()
    if retailer.sftp.audit_dir:
        with runtime.sftp(retailer) as source:
            document, _, written = run_audit(retailer, day, runtime.database(), source)
    else:
        document, _, written = run_audit(retailer, day, runtime.database(), None)
    return {"retailer": retailer_id, "business_date": day.isoformat(), "totals": document["totals"],
            "consistent": document["consistent"], "files": [str(p) for p in written]}
