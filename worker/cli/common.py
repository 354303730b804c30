"""What every command shares: the consoles, the retailers in force, the named retailer, a DSN without its password."""

from __future__ import annotations

import sys

import psycopg
from rich.console import Console
from rich.markup import escape

from worker.adapters.postgres.config import PgConfigSnapshots
from worker.app.crontabs import check_crontab
from worker.app.settings import Settings
from worker.core.errors import UnknownRetailer
from worker.core.retailers import Retailer
from worker.services.config import RetailersConfig

# Piped output (logs, CI, scripts) gets wide tables instead of 80 columns of folded text.
console = Console(width=None if sys.stdout.isatty() else 160)
stderr_console = Console(
    stderr=True, width=None if sys.stderr.isatty() else 160
)  # warnings that must not mix with --json


def retailers_in_force(settings: Settings) -> dict[str, Retailer]:
    """The retailers file; while it is invalid (said on stderr), the last valid configuration the workers stored.
    Read only: while the file is valid, no database is needed."""
    config = RetailersConfig(
        settings.retailers_path, PgConfigSnapshots(settings.database_url), record=False, check_crontab=check_crontab
    )
    retailers = config.current()
    if config.error:
        stored = config.fallback
        using = "the last valid configuration"
        if stored:
            using += f" (sha256 {stored.sha256[:12]}, loaded {stored.loaded_at:%Y-%m-%d %H:%M:%S %Z})"
        stderr_console.print(f"[red]tlogsync: {escape(config.error)}\nusing {using} until the file is fixed[/red]")
    return retailers


def known_retailer(settings: Settings, retailer_id: str) -> Retailer:
    """The named retailer of the retailers in force; UnknownRetailer (exit 2, naming the known ones) if absent."""
    retailers = retailers_in_force(settings)
    if retailer_id not in retailers:
        raise UnknownRetailer(f"unknown retailer {retailer_id!r}; known: {', '.join(retailers)}")
    return retailers[retailer_id]


def redact(dsn: str) -> str:
    """A connection string fit for a log: the password replaced."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable connection string)"
    if info.get("password"):
        info["password"] = "***"  # noqa: S105 - the mask, not a password
    return psycopg.conninfo.make_conninfo("", **info)
