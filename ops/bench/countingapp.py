"""The Celery app of the benchmark's workers (`celery -A ops.bench.countingapp worker`): tlogsync's own app
with the counting plugin installed (ops/bench/counting.py)."""

from __future__ import annotations

from ops.bench import counting
from worker.app.runtime import runtime
from worker.celery import app

counting.install(runtime)

__all__ = ["app"]
