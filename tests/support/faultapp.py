"""The Celery app of the fault suite's workers (`celery -A tests.support.faultapp worker`): tlogsync's own
app with the fault-injection plugin installed (tests/support/faults.py)."""

from __future__ import annotations

from tests.support import faults
from worker.app.runtime import runtime
from worker.celery import app

faults.install(runtime)

__all__ = ["app"]
