"""What the PostgreSQL adapters share: which database errors are worth a retry."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

from worker.core.errors import TransientError


@contextmanager
def transient_db_errors() -> Iterator[None]:
    """Connection loss and server shutdown are worth a retry; everything else is a bug or bad data."""
    try:
        yield
    except (psycopg.OperationalError, errors.AdminShutdown, errors.CannotConnectNow) as exc:
        raise TransientError(f"database: {exc}") from exc
    except psycopg.errors.SerializationFailure as exc:
        raise TransientError(f"database: {exc}") from exc
    except psycopg.errors.DeadlockDetected as exc:
        raise TransientError(f"database: {exc}") from exc


class Database:
    """A connection pool that can bind one connection to the current thread for a whole task.

    Inside `bound()`, every `connection()` is the same connection: one checkout per task instead of one
    per statement. Workers open their pool with autocommit, so single statements commit at once and
    multi-statement work uses explicit `conn.transaction()` blocks.
    """

    def __init__(self, pool: ConnectionPool[Any]):
        self.pool = pool
        self._local = threading.local()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def bound(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self.pool.connection() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None


def as_database(pool_or_db: ConnectionPool[Any] | Database) -> Database:
    return pool_or_db if isinstance(pool_or_db, Database) else Database(pool_or_db)
