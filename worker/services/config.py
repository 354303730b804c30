"""The retailers in force in one process: the file while it is valid, else the last valid configuration any
process stored (never the copy a pool child inherited at fork, which may be older than what the others use),
and an invalid file reported, logged once per change and recorded, until it is fixed."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from worker.core.errors import TransientError
from worker.core.retailers import ConfigError, CrontabCheck, Retailer, decode_retailers_file, parse_retailers_text
from worker.services.ports import ConfigSnapshot, ConfigSnapshots

log = logging.getLogger(__name__)

# While the file is invalid (or a store failed), how often a process looks again at the stored configuration
# and records the invalid state again: another host may have loaded a newer valid file, or the database was
# down when the problem was first seen.
RECHECK_SECONDS = 30.0


@dataclass(frozen=True)
class FileVersion:
    """One version of the file, told apart without reading it (an atomic rename changes the inode)."""

    mtime_ns: int
    size: int
    inode: int

    @property
    def mtime(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC)


class RetailersConfig:
    """The retailers file as one process uses it; `current()` is cheap while the file does not change.

    store None: no snapshots (the file or nothing). record False: snapshots are read, never written (the
    command line, which must not need the database while the file is valid).
    """

    def __init__(
        self,
        path: Path,
        store: ConfigSnapshots | None,
        *,
        record: bool = True,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        check_crontab: CrontabCheck | None = None,
    ):
        self.path = path
        self.check_crontab = check_crontab  # how crontabs are checked beyond their shape (Celery's parser)
        # Absolute but not resolved: a Kubernetes ConfigMap is a symlink whose target changes with each update.
        self.source = os.path.abspath(path)
        self.store, self.record, self.recheck_seconds, self.clock = store, record, recheck_seconds, clock
        self._lock = threading.Lock()
        self._retailers: dict[str, Retailer] | None = None
        self._in_use: str | None = None  # sha256 of the configuration in use
        self._version: FileVersion | None = None  # of the file when it was last read
        self._checked = 0.0
        self._again = False  # a store or a record failed: try again at the next recheck
        self.error: str | None = None  # why the file cannot be used, while it cannot
        self.fallback: ConfigSnapshot | None = None  # the stored configuration in use meanwhile, if any
        self._reported: tuple[FileVersion | None, str] | None = None

    def current(self) -> dict[str, Retailer]:
        """The retailers in force. ConfigError: the file is invalid and no valid configuration is known at all;
        TransientError: it is invalid and the stored configuration cannot be read (do not guess: retry)."""
        with self._lock:
            version = self._stat()
            due = (self.error is not None or self._again) and self.clock() - self._checked >= self.recheck_seconds
            if self._retailers is not None and version == self._version and not due:
                return self._retailers
            return self._load(version)

    def _stat(self) -> FileVersion | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return FileVersion(st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, version: FileVersion | None) -> dict[str, Retailer]:
        sha: str | None = None
        try:
            data = self.path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            text = decode_retailers_file(data, str(self.path))
            retailers = parse_retailers_text(text, str(self.path), self.check_crontab)
        except FileNotFoundError:
            return self._invalid(version, f"retailers file {self.path} not found (set TLOGSYNC_RETAILERS)", None)
        except OSError as exc:
            return self._invalid(version, f"retailers file {self.path} cannot be read: {exc.strerror or exc}", None)
        except ConfigError as exc:
            return self._invalid(version, str(exc), sha)
        return self._valid(version, retailers, text, sha)

    def _valid(
        self, version: FileVersion | None, retailers: dict[str, Retailer], text: str, sha: str
    ) -> dict[str, Retailer]:
        if self.error is not None or (self._in_use is not None and self._in_use != sha):
            log.info("retailers file %s loaded: %d retailers (sha256 %s)", self.path, len(retailers), sha[:12])
        self._retailers, self._in_use, self._version = retailers, sha, version
        self.error, self.fallback, self._reported, self._again = None, None, None, False
        self._checked = self.clock()
        if self.record and self.store is not None:
            if self._stat() != version:
                # Changed while we read it: store nothing (a slow reader must not make an older text the
                # newest); the next call reads the newer file and stores that.
                self._version = None
                return retailers
            try:
                self.store.store_valid(self.source, text, sha, version.mtime if version else None)
            except TransientError as exc:
                log.warning("retailers file %s: the valid configuration could not be stored: %s", self.path, exc)
                self._again = True
        return retailers

    def _invalid(self, version: FileVersion | None, error: str, sha: str | None) -> dict[str, Retailer]:
        first = self._reported != (version, error)
        stored: ConfigSnapshot | None = None
        unreadable: str | None = None
        if self.store is not None:
            try:
                stored = self.store.latest_valid(self.source)
            except TransientError as exc:
                unreadable = str(exc)
        chosen: dict[str, Retailer] | None = None
        in_use: str | None
        fallback: ConfigSnapshot | None
        if stored is not None:
            try:
                chosen = parse_retailers_text(
                    stored.content, f"{self.source} (stored sha256 {stored.sha256[:12]})", self.check_crontab
                )
            except ConfigError as exc:  # stored by a version of tlogsync with looser rules: not usable either
                log.error("retailers file %s: the stored configuration is not valid any more: %s", self.path, exc)
                stored = None
        if chosen is not None and stored is not None:
            retailers, in_use, fallback = chosen, stored.sha256, stored
            loaded = f"{stored.loaded_at:%Y-%m-%d %H:%M:%S %Z}"
            meanwhile = f"using the last valid configuration (sha256 {stored.sha256[:12]}, loaded {loaded})"
        elif unreadable is not None:
            if first:
                log.error("%s; the last valid configuration cannot be read: %s", error, unreadable)
                self._reported = (version, error)
            if self._retailers is None:
                raise ConfigError(f"{error}; the last valid configuration cannot be read: {unreadable}")
            # Another process may have loaded a newer valid file than our copy: do not guess, retry.
            raise TransientError(f"{error}; the last valid configuration cannot be read: {unreadable}")
        elif self._retailers is not None:
            retailers, in_use, fallback = self._retailers, self._in_use, self.fallback
            meanwhile = "none was stored: keeping this process's configuration"
        else:
            if self.store is None:
                raise ConfigError(error)
            self._record_invalid(error, sha, None)
            raise ConfigError(f"{error} (and no valid configuration was stored before)")
        if first:
            log.error("%s; %s until the file is fixed", error, meanwhile)
            self._reported = (version, error)
        elif in_use != self._in_use:
            log.info("retailers file %s still invalid; now %s", self.path, meanwhile)
        self._retailers, self._in_use, self._version = retailers, in_use, version
        self.error, self.fallback, self._again = error, fallback, False
        self._checked = self.clock()
        self._record_invalid(error, sha, in_use)
        return retailers

    def _record_invalid(self, error: str, sha: str | None, in_use: str | None) -> None:
        if not self.record or self.store is None:
            return
        try:
            self.store.record_invalid(self.source, error, sha, in_use)
        except TransientError as exc:
            log.warning("retailers file %s: the invalid state could not be recorded: %s", self.path, exc)
            self._again = True
