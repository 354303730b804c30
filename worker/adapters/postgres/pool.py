"""What the PostgreSQL adapters share: the one way to open a pool, and which database errors are worth a retry."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
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


def storable(text: str) -> str:
    """text as a PostgreSQL text column takes it: a NUL and a lone surrogate are written as escapes."""
    if text.isprintable() or "\x00" not in text and text.isascii():
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def condition_name(exc: psycopg.Error) -> str:
    """PostgreSQL's name of the condition (numeric_value_out_of_range), from the SQLSTATE; never the message,
    which may quote the value that was refused."""
    kind: type[BaseException] = type(exc)
    if exc.sqlstate:
        with suppress(KeyError):  # a condition newer than this psycopg: the class it raised
            kind = errors.lookup(exc.sqlstate)
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", kind.__name__).lower()


def describe_db_error(exc: psycopg.Error) -> str:
    """What a database error was, without its message: `numeric_value_out_of_range (SQLSTATE 22003)`, with the
    column and table when the server names them; `data_error (refused by the driver)` when psycopg refused a
    value before sending it."""
    if not exc.sqlstate:
        return f"{condition_name(exc)} (refused by the driver)"
    where = ""
    column, table = exc.diag.column_name, exc.diag.table_name
    if column and table:
        where = f" in column {column} of table {table}"
    elif table:
        where = f" in table {table}"
    return f"{condition_name(exc)} (SQLSTATE {exc.sqlstate}){where}"


class Database:
    """A connection pool that can bind one connection to the current thread for a whole task.

    Inside `bound()`, every `connection()` is the same connection: one checkout per task instead of one
    per statement. Pools are opened with autocommit, so single statements commit at once and
    multi-statement work uses explicit `conn.transaction()` blocks.
    """

    def __init__(self, pool: ConnectionPool[Any]):
        self.pool = pool
        self._local = threading.local()
        self._bound: dict[int, psycopg.Connection[Any]] = {}  # thread ident -> its task's connection

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
            ident = threading.get_ident()
            self._bound[ident] = conn
            try:
                yield
            finally:
                self._bound.pop(ident, None)
                self._local.conn = None

    def cancel(self, thread_ident: int) -> bool:
        """Cancel the statement that thread's task is running, if any (it fails with QueryCanceled): what a
        soft time limit does to a thread blocked on the server, where no Python exception can reach it."""
        conn = self._bound.get(thread_ident)
        if conn is None:
            return False
        with suppress(psycopg.Error):
            conn.cancel_safe(timeout=5.0)
        return True

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_pool(
    dsn: str,
    *,
    max_size: int = 1,
    name: str | None = None,
    application_name: str | None = None,
    timeout: float = 30.0,
    check: bool = False,
    cursor_factory: type[psycopg.Cursor[Any]] | None = None,
    statement_timeout_seconds: float | None = None,
) -> Database:
    """The one way to open a pool: min one connection, autocommit, opened without waiting for the server.

    autocommit: a single statement commits at once (an attempt counter must survive a crash). check: a
    round trip per checkout to weed out dead connections, for long-lived idle pools (metrics, tests);
    workers skip it (a connection that died with the server fails its statement, the task retries and
    the pool replaces it). application_name shows in pg_stat_activity who holds which connection.
    statement_timeout_seconds: the server cancels a statement (lock waits included) running longer; a
    transaction left idle twice as long is ended (a thread stuck between two statements holds no lock forever).
    """
    kwargs: dict[str, Any] = {"autocommit": True}
    if statement_timeout_seconds is not None:
        ms = max(1, int(statement_timeout_seconds * 1000))
        kwargs["options"] = f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={2 * ms}"
    if application_name is not None:
        kwargs["application_name"] = application_name
    if cursor_factory is not None:
        kwargs["cursor_factory"] = cursor_factory
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        open=False,
        name=name,
        timeout=timeout,
        kwargs=kwargs,
        check=ConnectionPool.check_connection if check else None,
    )
    pool.open(wait=False)
    return Database(pool)
