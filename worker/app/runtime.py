"""Per-process resources: created lazily after fork, closed at shutdown, never at import.

Extension points (source_wrappers, sftp_connect_hooks, cursor_factory, shutdown_hooks) let code outside
production observe or alter I/O without a branch in production code: it sets them on `runtime` before the
first task, from a Celery app module that imports `worker.celery` and is started with `celery -A <module>`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paramiko
import psycopg

from worker.adapters.postgres.audit import PgAudit
from worker.adapters.postgres.config import PgConfigSnapshots
from worker.adapters.postgres.deadletters import PgDeadLetters
from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.ledger import PgFileLedger
from worker.adapters.postgres.operations import PgOperations
from worker.adapters.postgres.pool import Database, open_pool
from worker.adapters.postgres.routing import PgRouting
from worker.adapters.sftp import SftpSessions
from worker.app.crontabs import check_crontab
from worker.app.settings import Settings
from worker.core.errors import UnknownRetailer
from worker.core.retailers import Retailer
from worker.services.config import RetailersConfig
from worker.services.ports import FileSource

log = logging.getLogger(__name__)


class Runtime:
    """What one worker process holds: settings, retailers, a database pool and SFTP sessions."""

    def __init__(self, settings: Settings | None = None):
        self._settings = settings
        # Each SFTP checkout's FileSource is passed through these, in order (a wrapper returns the source
        # to use: the same one, or one that delegates to it).
        self.source_wrappers: list[Callable[[FileSource], FileSource]] = []
        # Called with each new paramiko SFTP session, right after it connects.
        self.sftp_connect_hooks: list[Callable[[paramiko.SFTPClient], None]] = []
        # The cursor class of the pool's connections (None: psycopg's own).
        self.cursor_factory: type[psycopg.Cursor[Any]] | None = None
        # Called, in order, when a worker process shuts down, after its resources are closed.
        self.shutdown_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._ledger: PgFileLedger | None = None
        self._inventory: PgInventory | None = None
        self._dead_letters: PgDeadLetters | None = None
        self._database: Database | None = None
        self._sessions: SftpSessions | None = None
        self._retailers: RetailersConfig | None = None
        self._pid = os.getpid()

    @property
    def settings(self) -> Settings:
        """Read from the environment on first use (SettingsError then names the variable), not at import."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    # -- retailers: reloaded when the file changes, so adding or pausing one needs no restart; while the file
    # is invalid, the last valid configuration stored in PostgreSQL (worker/services/config.py)
    def retailers(self) -> dict[str, Retailer]:
        if self._retailers is None:
            self._retailers = RetailersConfig(
                self.settings.retailers_path, PgConfigSnapshots(self.settings.database_url), check_crontab=check_crontab
            )
        return self._retailers.current()

    def retailer(self, retailer_id: str) -> Retailer:
        try:
            return self.retailers()[retailer_id]
        except KeyError:
            raise UnknownRetailer(f"retailer {retailer_id!r} is not in {self.settings.retailers_path}") from None

    # -- database
    def database(self) -> Database:
        self._check_fork()
        with self._lock:
            if self._database is None:
                pid = os.getpid()
                self._database = open_pool(
                    self.settings.database_url,
                    max_size=self.settings.db_pool_max,
                    name=f"tlogsync-{pid}",
                    application_name=f"tlogsync-worker-{pid}",
                    cursor_factory=self.cursor_factory,
                    statement_timeout_seconds=self.settings.db_statement_timeout_seconds,
                )
                self._ledger = PgFileLedger(self._database, self.settings.scan_lease_seconds)
                self._inventory = PgInventory(self._database)
                self._dead_letters = PgDeadLetters(self._database)
            return self._database

    def ledger(self) -> PgFileLedger:
        self.database()
        assert self._ledger is not None
        return self._ledger

    def dead_letters(self) -> PgDeadLetters:
        self.database()
        assert self._dead_letters is not None
        return self._dead_letters

    def audit(self) -> PgAudit:
        return PgAudit(self.database())

    def inventory(self) -> PgInventory:
        self.database()
        assert self._inventory is not None
        return self._inventory

    def routing(self) -> PgRouting:
        return PgRouting(self.database())

    def operations(self) -> PgOperations:
        """Failed tasks kept for a retry, problem files, operator actions (tlogsync's pages in Flower)."""
        return PgOperations(self.database())

    # -- SFTP
    @contextmanager
    def sftp(self, retailer: Retailer) -> Iterator[FileSource]:
        self._check_fork()
        with self._lock:
            if self._sessions is None:
                self._sessions = SftpSessions(self.settings.sftp_timeout_seconds, self.sftp_connect_hooks)
            sessions = self._sessions
        with sessions.source(retailer.retailer_id, retailer.sftp) as sftp_source:
            source: FileSource = sftp_source
            for wrap in self.source_wrappers:
                source = wrap(source)
            yield source

    def interrupt(self, thread_ident: int) -> None:
        """A task on that thread is past its soft time limit: cancel its PostgreSQL statement, if it waits on one
        (a thread blocked in the server gets the limit's exception only once the statement ends)."""
        database = self._database
        if database is not None:
            database.cancel(thread_ident)

    def _check_fork(self) -> None:
        # psycopg connections and SSH sessions are not fork-safe: a child starts with none.
        if os.getpid() != self._pid:
            self._ledger = self._inventory = self._dead_letters = self._database = self._sessions = None
            self._lock = threading.Lock()
            self._pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            if self._sessions is not None:
                self._sessions.close()
            if self._database is not None:
                self._database.close()
            self._ledger = self._inventory = self._dead_letters = self._database = self._sessions = None

    def shutdown(self) -> None:
        """The worker process is ending: close what it holds, then run the shutdown hooks."""
        self.close()
        for hook in self.shutdown_hooks:
            hook()


# One per process. Creating it reads nothing and opens nothing: settings, connections come on first use.
runtime = Runtime()
