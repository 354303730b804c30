"""What every command shares: the consoles, click's conventions for tlogsync (options from TLOGSYNC_* variables,
help on every option, settings read once), the retailers in force, the named retailer, a DSN without its password."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

import click
import psycopg
from rich.console import Console
from rich.markup import escape

from worker.adapters.postgres.config import PgConfigSnapshots
from worker.adapters.postgres.pool import Database, open_pool
from worker.app.crontabs import check_crontab
from worker.app.settings import Settings
from worker.core.errors import UnknownRetailer
from worker.core.retailers import Retailer
from worker.services.config import RetailersConfig

# Piped output (logs, CI, scripts) gets wide tables instead of 80 columns of folded text.
console = Console(width=None if sys.stdout.isatty() else 160)
stderr_console = Console(
    stderr=True, width=None if sys.stderr.isatty() else 160
)  # errors, warnings and progress: never mixed with what a command prints on stdout (--json above all)

# Every option can also come from the environment: TLOGSYNC_<COMMAND>_<OPTION>, e.g. TLOGSYNC_SCAN_TIMEOUT=60
# (for a sub-command, the group's name too: TLOGSYNC_DLQ_LIST_JSON). `--help` shows each variable.
CONTEXT: dict[str, Any] = {
    "auto_envvar_prefix": "TLOGSYNC",
    "help_option_names": ["-h", "--help"],
    "show_default": True,
    "max_content_width": 110,
}

# Exit codes, the same for every command (docs/operations.md).
OK, LOOK, USAGE, UNREACHABLE = 0, 1, 2, 3


class Option(click.Option):
    """click's option, with the environment variable it reads shown in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("show_envvar", True)
        super().__init__(*args, **kwargs)


def option(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(*decls, cls=Option, **kwargs)


def retailer_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("retailer", metavar="RETAILER")(func)


def with_settings(func: Callable[[Settings, argparse.Namespace], int]) -> Callable[..., int]:
    """The command body as `func(settings, args)`: the settings read once from the environment (a bad one is a
    usage error, exit 2), the options as attributes of args, and the return value the exit code."""

    @functools.wraps(func)
    def run(**options: Any) -> int:
        root = click.get_current_context().find_root()
        if root.obj is None:
            root.obj = Settings.from_env()
        return int(func(root.obj, argparse.Namespace(**options)))

    return run


def error(message: str) -> None:
    """One line on stderr, in red on a terminal; markup in the message is shown as typed."""
    stderr_console.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)


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
    """The named retailer of the retailers in force; UnknownRetailer (exit 1, naming the known ones) if absent."""
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


def database(settings: Settings) -> Database:
    """A pool for one command: the server tried once first (5 s), so a database that is down is one line and exit 3
    at once, not a pool retrying for half a minute."""
    psycopg.connect(settings.database_url, connect_timeout=5, application_name="tlogsync-cli").close()
    return open_pool(settings.database_url, application_name="tlogsync-cli", timeout=10.0)
