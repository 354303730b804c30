"""`tlogsync flower`: Flower with basic auth, the dead-letter queues and no secret on its command line."""

from __future__ import annotations

import argparse
import sys

import click

from worker.app.settings import FlowerSettings, Settings
from worker.cli.common import error, option, with_settings


@click.command("flower", help="Flower with basic auth from FLOWER_USER/FLOWER_PASSWORD and the tlogsync pages.")
@option("--port", type=click.IntRange(0, 65535), default=5555, help="TCP port to listen on.")
@option("--address", default="0.0.0.0", help="Address to listen on.")  # noqa: S104
@option("--db", default="flower.db", help="Flower's persistent state file.")
@option("--insecure-local", is_flag=True, help="No auth, loopback only (development).")
@option(
    "--enable-events",
    is_flag=True,
    help="Let Flower turn task events on in workers started without -E (off by default).",
)
@with_settings
def cmd_flower(settings: Settings, args: argparse.Namespace) -> int:
    """Flower with basic auth from the environment, persistent state and the RabbitMQ management API."""
    import ipaddress
    import os

    flower = FlowerSettings.from_env()
    env = dict(os.environ)  # Flower inherits our environment (and reads its own FLOWER_* options from it)
    if flower.user and flower.password:
        env["FLOWER_BASIC_AUTH"] = f"{flower.user}:{flower.password}"  # by environment: never on the command line
    elif args.insecure_local:
        try:
            loopback = ipaddress.ip_address(args.address).is_loopback
        except ValueError:
            loopback = args.address == "localhost"
        if not loopback:
            error("--insecure-local only listens on a loopback address")
            return 2
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
    else:
        error("set FLOWER_USER and FLOWER_PASSWORD (or --insecure-local on 127.0.0.1)")
        return 2
    cmd = [
        sys.executable,
        "-m",
        "worker.monitoring.flower",
        f"--port={args.port}",
        f"--address={args.address}",
        "--persistent=True",
        f"--db={args.db}",
        "--purge_offline_workers=300",
    ]
    if flower.broker_api:
        env["FLOWER_BROKER_API"] = flower.broker_api  # it holds RabbitMQ's password: not on the command line
    # Flower would otherwise broadcast enable_events every 5 s, turning task events on in every worker started
    # without -E (one more publish per task state): that is the operator's choice, made with -E or here.
    env["FLOWER_ENABLE_EVENTS"] = "true" if args.enable_events else "false"
    os.execve(sys.executable, cmd, env)  # noqa: S606 - become Flower, no shell involved
    return 0  # not reached
