"""Process settings from the environment (TLOGSYNC_*), with production defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A TLOGSYNC_* variable holds a value we cannot use."""


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped: delay = random(0, min(cap, base * 2**n))."""

    max_retries: int
    base_seconds: float
    cap_seconds: float


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql:///tlogsync"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    retailers_path: Path = Path("retailers.toml")
    # Scan: how many files one retailer may have in flight (claimed, not final) at once;
    # the scan claims at most the difference, so a backlog never floods the broker.
    max_in_flight_per_retailer: int = 2000
    # A claimed file whose ingest message was not seen finishing after this long is dispatched again.
    redispatch_after_seconds: int = 900
    max_file_bytes: int = 5 * 1024 * 1024
    db_pool_max: int = 4
    sftp_timeout_seconds: float = 20.0
    # A file or follow-up whose task started this many times without finishing (a crash, a kill, a timeout,
    # or retries over several dispatches) is given up: failed with the reason, and its message dead-lettered.
    max_attempts: int = 25
    ingest_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(8, 2.0, 300.0))
    scan_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(3, 5.0, 60.0))
    routing_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(10, 1.0, 120.0))
    log_level: str = "INFO"
    max_tasks_per_child: int = 20000  # recycle a pool process after this many tasks (0: never)
    prefetch: int = 1  # messages reserved per worker process
    sent_events: bool = False  # publishers also send task-sent events (Flower then shows queued tasks)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            database_url=env.get("TLOGSYNC_DATABASE_URL") or cls.database_url,
            broker_url=env.get("TLOGSYNC_BROKER_URL") or cls.broker_url,
            retailers_path=Path(env.get("TLOGSYNC_RETAILERS") or "retailers.toml"),
            max_in_flight_per_retailer=_int("TLOGSYNC_MAX_IN_FLIGHT", cls.max_in_flight_per_retailer),
            redispatch_after_seconds=_int("TLOGSYNC_REDISPATCH_AFTER", cls.redispatch_after_seconds),
            max_file_bytes=_int("TLOGSYNC_MAX_FILE_BYTES", cls.max_file_bytes),
            db_pool_max=_int("TLOGSYNC_DB_POOL_MAX", cls.db_pool_max),
            sftp_timeout_seconds=_float("TLOGSYNC_SFTP_TIMEOUT", cls.sftp_timeout_seconds),
            max_attempts=_int("TLOGSYNC_MAX_ATTEMPTS", cls.max_attempts),
            ingest_retry=RetryPolicy(
                _int("TLOGSYNC_INGEST_MAX_RETRIES", 8),
                _float("TLOGSYNC_INGEST_RETRY_BASE", 2.0),
                _float("TLOGSYNC_INGEST_RETRY_CAP", 300.0),
            ),
            scan_retry=RetryPolicy(
                _int("TLOGSYNC_SCAN_MAX_RETRIES", 3),
                _float("TLOGSYNC_SCAN_RETRY_BASE", 5.0),
                _float("TLOGSYNC_SCAN_RETRY_CAP", 60.0),
            ),
            routing_retry=RetryPolicy(
                _int("TLOGSYNC_ROUTING_MAX_RETRIES", 10),
                _float("TLOGSYNC_ROUTING_RETRY_BASE", 1.0),
                _float("TLOGSYNC_ROUTING_RETRY_CAP", 120.0),
            ),
            log_level=env.get("TLOGSYNC_LOG_LEVEL") or cls.log_level,
            max_tasks_per_child=_int("TLOGSYNC_MAX_TASKS_PER_CHILD", cls.max_tasks_per_child),
            sent_events=env.get("TLOGSYNC_SENT_EVENTS", "0") == "1",
            prefetch=_int("TLOGSYNC_PREFETCH", cls.prefetch),
        )
