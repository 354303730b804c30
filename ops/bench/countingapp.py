"""The Celery app of the benchmark's counting run (`celery -A ops.bench.countingapp worker`): tlogsync's own app
with the counting plugin installed (ops/bench/counting.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import signals

from ops.bench import counting
from worker.app.runtime import runtime
from worker.celery import app

counting.install(runtime)


@signals.worker_shutdown.connect
def _dump_main_process(**_: Any) -> None:
    # A single-process pool (threads, solo) runs the tasks in the main process, which no
    # worker_process_shutdown reaches; under prefork this file holds the parent's (near zero) counts.
    folder = os.environ.get(counting.ENV)
    if folder:
        counting.dump(Path(folder))


__all__ = ["app"]
