"""What the PostgreSQL adapters share: which database errors are worth a retry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors

from worker.core.ports import TransientError


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
