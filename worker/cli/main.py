"""The `tlogsync` command line, in Celery's idiom (click): set up, scan, watch, replay, load, broker, audit, run
the demo.

Each command lives in the module of its group; this module assembles them and turns what goes wrong into one line
on stderr and a documented exit code: 0 done, 1 something to look at (a failed file, a difference, an unknown
retailer or order), 2 usage (a bad option, an invalid setting or retailers file), 3 a service that cannot be
reached (PostgreSQL, RabbitMQ, an SFTP host)."""

from __future__ import annotations

import logging
import socket
import sys
from importlib import metadata

import click
import psycopg

from worker.app.settings import SettingsError
from worker.cli import audit, dlq, flower, lifecycle, orders, routing, scan, setup, status
from worker.cli.common import CONTEXT, LOOK, UNREACHABLE, USAGE, error, redact
from worker.core.errors import Permanent, SftpConfigError, TransientError, UnknownRetailer
from worker.core.retailers import ConfigError


def _version() -> str:
    try:
        return metadata.version("tlogsync")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


EPILOG = (
    "Every option can also be set by the environment: TLOGSYNC_<COMMAND>_<OPTION> (each command's --help names "
    "its variables); the services and the retailers file come from TLOGSYNC_DATABASE_URL, TLOGSYNC_BROKER_URL and "
    "TLOGSYNC_RETAILERS. Exit codes: 0 done, 1 something to look at (a failed file, a difference, a timeout, an "
    "unknown retailer or order), 2 usage (a bad option, an invalid setting or retailers file), 3 a service unreachable "
    "(PostgreSQL, RabbitMQ, an SFTP host)."
)


@click.group(context_settings=CONTEXT, help=__doc__.split("\n\n")[0], epilog=EPILOG)
@click.version_option(_version(), "--version", "-V", prog_name="tlogsync", message="%(prog)s %(version)s")
def cli() -> None:
    pass


for command in (
    setup.cmd_migrate,
    setup.cmd_retailers,
    scan.cmd_scan,
    scan.cmd_replay_file,
    status.cmd_status,
    status.cmd_metrics,
    flower.cmd_flower,
    routing.facilities,
    routing.inventory,
    routing.cmd_broker,
    orders.order,
    dlq.dlq,
    audit.cmd_audit,
    setup.cmd_demo,
):
    cli.add_command(command)

for command in lifecycle.COMMANDS:  # ship, reject, cancel, diff beside show
    orders.order.add_command(command)


def _unreachable(exc: BaseException) -> str | None:
    """The one-line reason when exc says a service cannot be reached, else None."""
    from kombu.exceptions import OperationalError as BrokerError

    if isinstance(exc, psycopg.OperationalError):
        from worker.app.settings import Settings

        try:
            where = redact(Settings.from_env().database_url)
        except SettingsError:
            where = "(database)"
        return f"database {where} unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    if isinstance(exc, BrokerError):
        return f"message broker unreachable: {exc}"
    if isinstance(exc, TransientError):
        return str(exc)
    if isinstance(exc, (socket.timeout, ConnectionError, socket.gaierror)) or (
        isinstance(exc, OSError) and type(exc).__name__ == "NoValidConnectionsError"  # paramiko: nobody listens
    ):
        return f"a service is unreachable: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (never a traceback for what an operator can act on)."""
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # a refused connection is said once, below
    try:
        code = cli.main(args=argv, prog_name="tlogsync", standalone_mode=False)
    except click.ClickException as exc:  # usage errors: click's own message, exit 2
        exc.show()
        return exc.exit_code
    except click.Abort:
        error("tlogsync: aborted")
        return 1
    except (SettingsError, ConfigError, SftpConfigError) as exc:
        error(f"tlogsync: {exc}")
        return USAGE
    except UnknownRetailer as exc:  # the command line was right; the retailers file has no such retailer
        error(f"tlogsync: {exc}")
        return LOOK
    except Permanent as exc:  # a host key refused, a row not found: said, not a traceback
        error(f"tlogsync: {exc}")
        return LOOK
    except Exception as exc:
        reason = _unreachable(exc)
        if reason is None:
            raise
        error(f"tlogsync: {reason}")
        return UNREACHABLE
    return code if isinstance(code, int) else 0


def command_line_is_valid(argv: list[str]) -> None:
    """Parse argv the way `tlogsync` would, without running anything; click.UsageError if it does not parse.
    (The manifests' tests check their command lines with it.)"""
    ctx = cli.make_context("tlogsync", list(argv))
    group: click.Command = cli
    while isinstance(group, click.Group) and (remaining := [*ctx._protected_args, *ctx.args]):
        name, sub, rest = group.resolve_command(ctx, remaining)
        assert sub is not None, name
        ctx = sub.make_context(name, rest, parent=ctx)
        group = sub


if __name__ == "__main__":
    sys.exit(main())
