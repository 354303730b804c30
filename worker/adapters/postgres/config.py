"""Configuration snapshots on PostgreSQL: the last valid retailers file, and whether the file is valid now.

Each call opens a short connection of its own: configuration changes are rare, and a worker's parent process
loads the file before it forks its pool, so it must not hold a connection its children would inherit.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from worker.core.errors import TransientError
from worker.services.ports import ConfigSnapshot

STORE_VALID = """
WITH snapshot AS (
    INSERT INTO config_snapshots (source, sha256, content, file_mtime, loaded_by) VALUES (%(source)s, %(sha256)s,
           %(content)s, %(file_mtime)s, %(by)s)
    ON CONFLICT (source, sha256) DO UPDATE SET loaded_at = now(), file_mtime = EXCLUDED.file_mtime,
           loaded_by = EXCLUDED.loaded_by
)
INSERT INTO config_checks (source, valid, error, sha256, invalid_since, in_use_sha256, checked_at, checked_by)
VALUES (%(source)s, true, NULL, %(sha256)s, NULL, %(sha256)s, now(), %(by)s)
ON CONFLICT (source) DO UPDATE SET valid = true, error = NULL, sha256 = EXCLUDED.sha256, invalid_since = NULL,
       in_use_sha256 = EXCLUDED.sha256, checked_at = now(), checked_by = EXCLUDED.checked_by
"""
LATEST_VALID = """
SELECT source, sha256, content, file_mtime, loaded_at FROM config_snapshots WHERE source = %s
ORDER BY loaded_at DESC, id DESC LIMIT 1
"""
RECORD_INVALID = """
INSERT INTO config_checks (source, valid, error, sha256, invalid_since, in_use_sha256, checked_at, checked_by)
VALUES (%(source)s, false, %(error)s, %(sha256)s, now(), %(in_use)s, now(), %(by)s)
ON CONFLICT (source) DO UPDATE SET valid = false, error = EXCLUDED.error, sha256 = EXCLUDED.sha256,
       invalid_since = CASE WHEN config_checks.valid THEN now() ELSE config_checks.invalid_since END,
       in_use_sha256 = EXCLUDED.in_use_sha256, checked_at = now(), checked_by = EXCLUDED.checked_by
"""


class PgConfigSnapshots:
    def __init__(self, dsn: str, timeout: int = 5):
        self.dsn, self.timeout = dsn, timeout

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        # Any database error, a missing table included (code deployed before `tlogsync migrate`), means the
        # store cannot be used now: the caller decides what that means.
        try:
            with psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=self.timeout,
                application_name=f"tlogsync-config-{os.getpid()}",
            ) as conn:
                yield conn
        except psycopg.Error as exc:
            raise TransientError(f"configuration snapshots: {exc}") from exc

    @staticmethod
    def _by() -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def store_valid(self, source: str, content: str, sha256: str, file_mtime: datetime | None) -> None:
        params = {"source": source, "sha256": sha256, "content": content, "file_mtime": file_mtime, "by": self._by()}
        with self._connection() as conn:
            conn.execute(STORE_VALID, params)

    def latest_valid(self, source: str) -> ConfigSnapshot | None:
        with self._connection() as conn, conn.cursor(row_factory=class_row(ConfigSnapshot)) as cur:
            cur.execute(LATEST_VALID, (source,))
            return cur.fetchone()

    def record_invalid(self, source: str, error: str, sha256: str | None, in_use_sha256: str | None) -> None:
        params = {"source": source, "error": error, "sha256": sha256, "in_use": in_use_sha256, "by": self._by()}
        with self._connection() as conn:
            conn.execute(RECORD_INVALID, params)
