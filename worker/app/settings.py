"""Process settings: every TLOGSYNC_* variable of production and Flower's credentials are read here, and
nowhere else (the test suite's, the benchmark's and the demo's own variables are read by that code).

An unset or empty variable means the production default given beside each field. A value we cannot use
raises SettingsError naming the variable; the entry points (worker, beat, the `tlogsync` command) print
`tlogsync: <message>` on stderr and exit 2 (`exit_on_bad_settings`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

LOG_FORMATS = ("text", "json")
# What logging.Logger.setLevel accepts by name (DEBUG, INFO, WARNING, ...).
LOG_LEVELS = tuple(name for name in logging.getLevelNamesMapping() if name != "NOTSET")


class SettingsError(ValueError):
    """A TLOGSYNC_* variable holds a value we cannot use; the message starts `NAME='value': `."""


def exit_on_bad_settings(exc: SettingsError) -> NoReturn:
    """Stop start-up with one line naming the variable, not a traceback."""
    print(f"tlogsync: {exc}", file=sys.stderr)
    raise SystemExit(2)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped: delay = random(0, min(cap, base * 2**n))."""

    max_retries: int
    base_seconds: float
    cap_seconds: float


class _Env:
    """Reads one environment, each helper raising SettingsError that names the variable."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def text(self, name: str) -> str | None:
        return self.env.get(name) or None  # empty counts as unset, so `VAR=` in a manifest means the default

    def secret(self, name: str) -> str | None:
        """NAME, or the contents of the file NAME_FILE names (a mounted secret; its trailing newline dropped)."""
        value, path = self.text(name), self.text(f"{name}_FILE")
        if value and path:
            raise SettingsError(f"{name}_FILE={path!r}: {name} is set too; give one of them")
        if path is None:
            return value
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n") or None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{name}_FILE={path!r}: cannot be read: {type(exc).__name__}") from None

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: not an integer") from None
        if value < minimum:
            raise SettingsError(f"{name}={raw!r}: must be at least {minimum}")
        return value

    def number(self, name: str, default: float, positive: bool = False) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: not a number") from None
        if not math.isfinite(value):
            raise SettingsError(f"{name}={raw!r}: not a finite number")
        if value < 0 or (positive and value == 0):
            raise SettingsError(f"{name}={raw!r}: must be {'more than 0' if positive else 'at least 0'}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...], upper: bool = False) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise SettingsError(f"{name}={raw!r}: not one of {', '.join(choices)}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw not in ("0", "1"):
            raise SettingsError(f"{name}={raw!r}: must be 0 or 1")
        return raw == "1"

    def retry(self, prefix: str, default: RetryPolicy) -> RetryPolicy:
        return RetryPolicy(
            self.integer(f"{prefix}_MAX_RETRIES", default.max_retries),
            self.number(f"{prefix}_RETRY_BASE", default.base_seconds),
            self.number(f"{prefix}_RETRY_CAP", default.cap_seconds),
        )


@dataclass(frozen=True)
class Settings:
    """The worker's, beat's and the command line's settings; `from_env` names the variable of each field."""

    # TLOGSYNC_DATABASE_URL: PostgreSQL, a psycopg conninfo string or URL.
    database_url: str = "postgresql:///tlogsync"
    # TLOGSYNC_BROKER_URL: RabbitMQ.
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    # TLOGSYNC_RETAILERS: the retailers file, relative to the working directory unless absolute.
    retailers_path: Path = Path("retailers.toml")
    # TLOGSYNC_MAX_IN_FLIGHT (>= 1): how many files one retailer may have in flight (claimed, not final) at
    # once; the scan claims at most the difference, so a backlog never floods the broker.
    max_in_flight_per_retailer: int = 2000
    # TLOGSYNC_REDISPATCH_AFTER (seconds): a claimed file whose ingest message was not seen finishing after
    # this long is dispatched again.
    redispatch_after_seconds: int = 900
    # TLOGSYNC_SCAN_LEASE (seconds, > 0): a scan renews its retailer's scan lock at every step (listing,
    # claims, each 500 messages published); one that goes this long without (its process frozen or stuck)
    # loses the lock to the server, so the retailer's next scan runs (and sends what the stuck one held).
    scan_lease_seconds: float = 60.0
    # TLOGSYNC_ROUTING_SWEEP_AFTER (seconds): follow-ups (inventory, brokering) pending this long without a run
    # asked for since make the scan ask for one (its message was lost, or the order committed as a run ended).
    routing_sweep_after_seconds: int = 60
    # TLOGSYNC_ROUTING_DELAY (seconds, >= 0): a routing run starts this long after the order that asked for it,
    # so the orders stored meanwhile join that run instead of each asking for one.
    routing_delay_seconds: float = 1.0
    # TLOGSYNC_MAX_FILE_BYTES (>= 1): larger files fail with a clear reason, unread.
    max_file_bytes: int = 5 * 1024 * 1024
    # TLOGSYNC_DB_POOL_MAX (>= 1): PostgreSQL connections per worker process, at most (a task holds one for its
    # whole run: as many as the threads of the default pool).
    db_pool_max: int = 8
    # TLOGSYNC_WORKER_THREADS (>= 1): tasks one worker process runs at once (the default threads pool's
    # --concurrency; with --pool prefork, its children).
    worker_threads: int = 8
    # TLOGSYNC_DB_STATEMENT_TIMEOUT (seconds, > 0): a worker's statement (lock waits included) is cancelled
    # after this long, a transient error retried; below the ingest task's soft time limit (120 s), so that a
    # stuck statement ends before the task does even where no time limit can interrupt it.
    db_statement_timeout_seconds: float = 110.0
    # TLOGSYNC_SFTP_TIMEOUT (seconds, > 0): SFTP connect and each SFTP operation.
    sftp_timeout_seconds: float = 20.0
    # TLOGSYNC_MAX_ATTEMPTS (>= 1): a file or follow-up whose task started this many times without finishing
    # (a crash, a kill, a timeout, or retries over several dispatches) is given up: failed with the reason,
    # and its message dead-lettered.
    max_attempts: int = 25
    # TLOGSYNC_INGEST_MAX_RETRIES, TLOGSYNC_INGEST_RETRY_BASE, TLOGSYNC_INGEST_RETRY_CAP (seconds).
    ingest_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(8, 2.0, 300.0))
    # TLOGSYNC_SCAN_MAX_RETRIES, TLOGSYNC_SCAN_RETRY_BASE, TLOGSYNC_SCAN_RETRY_CAP (seconds).
    scan_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(3, 5.0, 60.0))
    # TLOGSYNC_ROUTING_MAX_RETRIES, TLOGSYNC_ROUTING_RETRY_BASE, TLOGSYNC_ROUTING_RETRY_CAP (seconds):
    # brokering and inventory follow-ups.
    routing_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(10, 1.0, 120.0))
    # TLOGSYNC_LOG_LEVEL: of the `tlogsync` loggers, a logging level name (any case).
    log_level: str = "INFO"
    # TLOGSYNC_LOG_FORMAT: `text` (Celery's) or `json` (one JSON object per line).
    log_format: str = "text"
    # TLOGSYNC_MAX_TASKS_PER_CHILD: recycle a pool process after this many tasks (0: never).
    max_tasks_per_child: int = 20000
    # TLOGSYNC_PREFETCH: messages reserved per worker process (0: Celery's no limit).
    prefetch: int = 1
    # TLOGSYNC_SENT_EVENTS (0 or 1): publishers also send task-sent events (Flower then shows queued tasks).
    sent_events: bool = False
    # TLOGSYNC_AUDIT_DIR: local folder of the daily audit reports (<dir>/<retailer>/...).
    audit_dir: Path = Path("audit-reports")
    # TLOGSYNC_METRICS_REFRESH (seconds, > 0): how often `tlogsync metrics` refreshes its figures in the
    # background (a scrape returns the latest ones at once).
    metrics_refresh_seconds: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        default = cls()
        return cls(
            database_url=env.text("TLOGSYNC_DATABASE_URL") or default.database_url,
            broker_url=env.text("TLOGSYNC_BROKER_URL") or default.broker_url,
            retailers_path=Path(env.text("TLOGSYNC_RETAILERS") or default.retailers_path),
            max_in_flight_per_retailer=env.integer("TLOGSYNC_MAX_IN_FLIGHT", default.max_in_flight_per_retailer, 1),
            redispatch_after_seconds=env.integer("TLOGSYNC_REDISPATCH_AFTER", default.redispatch_after_seconds),
            scan_lease_seconds=env.number("TLOGSYNC_SCAN_LEASE", default.scan_lease_seconds, positive=True),
            routing_sweep_after_seconds=env.integer(
                "TLOGSYNC_ROUTING_SWEEP_AFTER", default.routing_sweep_after_seconds
            ),
            routing_delay_seconds=env.number("TLOGSYNC_ROUTING_DELAY", default.routing_delay_seconds),
            max_file_bytes=env.integer("TLOGSYNC_MAX_FILE_BYTES", default.max_file_bytes, 1),
            db_pool_max=env.integer("TLOGSYNC_DB_POOL_MAX", default.db_pool_max, 1),
            worker_threads=env.integer("TLOGSYNC_WORKER_THREADS", default.worker_threads, 1),
            db_statement_timeout_seconds=env.number(
                "TLOGSYNC_DB_STATEMENT_TIMEOUT", default.db_statement_timeout_seconds, positive=True
            ),
            sftp_timeout_seconds=env.number("TLOGSYNC_SFTP_TIMEOUT", default.sftp_timeout_seconds, positive=True),
            max_attempts=env.integer("TLOGSYNC_MAX_ATTEMPTS", default.max_attempts, 1),
            ingest_retry=env.retry("TLOGSYNC_INGEST", default.ingest_retry),
            scan_retry=env.retry("TLOGSYNC_SCAN", default.scan_retry),
            routing_retry=env.retry("TLOGSYNC_ROUTING", default.routing_retry),
            log_level=env.choice("TLOGSYNC_LOG_LEVEL", default.log_level, LOG_LEVELS, upper=True),
            log_format=env.choice("TLOGSYNC_LOG_FORMAT", default.log_format, LOG_FORMATS),
            max_tasks_per_child=env.integer("TLOGSYNC_MAX_TASKS_PER_CHILD", default.max_tasks_per_child),
            prefetch=env.integer("TLOGSYNC_PREFETCH", default.prefetch),
            sent_events=env.flag("TLOGSYNC_SENT_EVENTS", default.sent_events),
            audit_dir=Path(env.text("TLOGSYNC_AUDIT_DIR") or default.audit_dir),
            metrics_refresh_seconds=env.number(
                "TLOGSYNC_METRICS_REFRESH", default.metrics_refresh_seconds, positive=True
            ),
        )


@dataclass(frozen=True)
class FlowerSettings:
    """What `tlogsync flower` reads besides Settings; only that command needs (and holds) the password."""

    # FLOWER_USER and FLOWER_PASSWORD: Flower's basic auth; without both, `tlogsync flower` refuses to start
    # (unless --insecure-local on a loopback address). FLOWER_PASSWORD_FILE: a file holding the password instead.
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    # TLOGSYNC_BROKER_API: RabbitMQ's management API for Flower's broker view and queue lengths, e.g.
    # http://guest:guest@127.0.0.1:15672/api/ (unset: Flower shows no queue lengths). TLOGSYNC_BROKER_API_FILE: a
    # file holding that URL instead (it carries the management password).
    broker_api: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FlowerSettings:
        env = _Env(os.environ if environ is None else environ)
        return cls(
            user=env.text("FLOWER_USER"),
            password=env.secret("FLOWER_PASSWORD"),
            broker_api=env.secret("TLOGSYNC_BROKER_API"),
        )
