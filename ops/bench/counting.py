"""The benchmark's per-process counters (SQL statements, SFTP requests, peak RSS): a plugin of the runtime.

Installed by ops/bench/countingapp.py, the Celery app of the benchmark's counting run; production code counts
nothing. Written as <TLOGSYNC_STATS_DIR>/<pid>.json when a pool process shuts down (prefork's children), and by
the worker's main process when it stops (where a single-process pool, threads or solo, ran the tasks).
"""

from __future__ import annotations

import json
import os
import resource
import threading
from pathlib import Path
from typing import Any

import paramiko
import psycopg

from worker.adapters.sftp_fastpath import observe_requests
from worker.app.runtime import Runtime

ENV = "TLOGSYNC_STATS_DIR"  # benchmark-only: read here, not by Settings

COUNTS: dict[str, int | None] = {"sql_statements": 0, "sftp_requests": 0}
_LOCK = threading.Lock()  # `+=` on a dict entry is not atomic, and a threads pool counts from many threads


def _add(name: str, n: int = 1) -> None:
    with _LOCK:
        if COUNTS[name] is not None:
            COUNTS[name] += n  # type: ignore[operator]


class CountingCursor(psycopg.Cursor[Any]):
    """A cursor that counts the statements it sends (executemany: one per parameter set)."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        _add("sql_statements")
        return super().execute(*args, **kwargs)

    def executemany(self, query: Any, params_seq: Any, *args: Any, **kwargs: Any) -> Any:
        params_seq = list(params_seq)
        _add("sql_statements", len(params_seq))
        return super().executemany(query, params_seq, *args, **kwargs)


def _count_request() -> None:
    _add("sftp_requests")


def count_sftp_requests(sftp: paramiko.SFTPClient) -> None:
    """Count every request paramiko sends on this SFTP session (one round trip each, unless pipelined)."""
    if not observe_requests(sftp, _count_request):
        COUNTS["sftp_requests"] = None  # not countable on this paramiko version: reported as unknown


def dump(folder: Path) -> None:
    """Write this process's counters and peak RSS to folder/<pid>.json."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    folder.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        counts = dict(COUNTS)
    (folder / f"{os.getpid()}.json").write_text(json.dumps({**counts, "peak_rss_kib": peak_kib}))


def install(runtime: Runtime, folder: str | None = None) -> None:
    """Count on this runtime and write the counts at shutdown, to folder (default: $TLOGSYNC_STATS_DIR)."""
    folder = folder if folder is not None else os.environ.get(ENV) or None
    runtime.cursor_factory = CountingCursor
    runtime.sftp_connect_hooks.append(count_sftp_requests)
    if folder:
        stats = Path(folder)
        runtime.shutdown_hooks.append(lambda: dump(stats))
