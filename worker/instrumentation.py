"""Cheap per-process counters (SQL statements, SFTP requests) for the benchmark's per-file costs.

Always counted (an integer increment per statement); written out only when TLOGSYNC_STATS_DIR is set,
as <dir>/<pid>.json at process shutdown.
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import psycopg

COUNTS = {"sql_statements": 0, "sftp_requests": 0}


class CountingCursor(psycopg.Cursor[Any]):
    """A cursor that counts the statements it sends (executemany: one per parameter set)."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        COUNTS["sql_statements"] += 1
        return super().execute(*args, **kwargs)

    def executemany(self, query: Any, params_seq: Any, *args: Any, **kwargs: Any) -> Any:
        params_seq = list(params_seq)
        COUNTS["sql_statements"] += len(params_seq)
        return super().executemany(query, params_seq, *args, **kwargs)


def count_sftp_requests(sftp: Any) -> None:
    """Count every request paramiko sends on this SFTP session (one round trip each, unless pipelined)."""
    from worker.adapters.sftp_fastpath import observe_requests

    def counted() -> None:
        COUNTS["sftp_requests"] += 1

    observe_requests(sftp, counted)


def dump() -> None:
    """Write this process's counters and peak RSS where TLOGSYNC_STATS_DIR says, if it says."""
    folder = os.environ.get("TLOGSYNC_STATS_DIR")
    if not folder:
        return
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{os.getpid()}.json").write_text(json.dumps({**COUNTS, "peak_rss_kib": peak_kib}))
