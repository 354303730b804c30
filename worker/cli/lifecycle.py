"""`tlogsync order ship|reject|cancel RETAILER ORDER_ID [--item SEQ]` and `tlogsync order diff RETAILER ORDER_ID`
(docs/order-lifecycle.md).

The commands are plain click commands: `order_group` holds them until the `order` group of the brokering work
(`worker/cli/orders.py`) is there to attach them to (`orders.order.add_command(lifecycle.cmd_ship)`, ...). Each
command's logic is a function of settings and keyword arguments that returns the exit code."""

from __future__ import annotations

import argparse
import json
from typing import Any

import click

from worker.app.settings import Settings
from worker.cli.common import (
    LOOK,
    OK,
    Option,
    console,
    database,
    error,
    known_retailer,
    option,
    retailer_argument,
    with_settings,
)


def act(
    settings: Settings,
    *,
    retailer: str,
    order_id: str,
    action: str,
    item: int | None = None,
    reason: str | None = None,
    as_json: bool = False,
) -> int:
    """Ship, reject or cancel in one transaction; 0 done (or done before), 1 refused (the reason on stderr)."""
    from worker.adapters.postgres.lifecycle import PgOrderActions
    from worker.core.errors import NotFound
    from worker.core.lifecycle import REJECTED, ActionRefused

    known_retailer(settings, retailer)
    with database(settings) as db:
        try:
            done = PgOrderActions(db).act(retailer, action, order_id, item, reason=reason)
        except (ActionRefused, NotFound) as exc:
            error(f"tlogsync: {exc}")
            return LOOK
    if action == REJECTED and done.changed:
        from tasks.routing import publish_runs

        publish_runs(retailer, ["brokering"])
    result: dict[str, Any] = {
        "order": order_id,
        "changed": list(done.changed),
        "already": list(done.already),
        "order_status": done.order_status,
    }
    if as_json:
        console.print_json(json.dumps(result))
    else:
        verb = action.lower()
        lines = ", ".join(map(str, done.changed)) or "none"
        before = f"; already {verb}: {', '.join(map(str, done.already))}" if done.already else ""
        console.print(f"order {order_id}: {verb} line(s) {lines}{before}; order is {done.order_status}")
    return OK


def show_diff(settings: Settings, *, retailer: str, order_id: str, as_json: bool = False) -> int:
    """The versions TLogs brought for an order after the first, each with its field-by-field diff."""
    from worker.adapters.postgres.lifecycle import PgOrderActions

    known_retailer(settings, retailer)
    with database(settings) as db:
        versions = PgOrderActions(db).diff(retailer, order_id)
    if as_json:
        console.print_json(json.dumps(versions))
        return OK
    if not versions:
        console.print(f"order {order_id}: no other version received")
        return OK
    for v in versions:
        console.print(f"ledger row {v['ledger_id']} {v['file']} (updateDate {v['updated_ms']}): {v['outcome']}")
        for d in v["diff"]:
            console.print(f"  {d['field']}: {json.dumps(d['stored'])} -> {json.dumps(d['received'])}", highlight=False)
    return LOOK if any(v["outcome"] != "applied" for v in versions) else OK


def _action_command(name: str, action: str, help_text: str, with_reason: bool = False) -> click.Command:
    @click.command(name, help=help_text)
    @retailer_argument
    @click.argument("order_id", metavar="ORDER_ID")
    @option("--item", type=int, default=None, help="Only this line (orderItemId); default: every open line.")
    @option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @with_settings
    def command(settings: Settings, args: argparse.Namespace) -> int:
        return act(
            settings,
            retailer=args.retailer,
            order_id=args.order_id,
            action=action,
            item=args.item,
            reason=getattr(args, "reason", None),
            as_json=args.as_json,
        )

    if with_reason:
        command.params.append(
            Option(["--reason"], default=None, help="Why the store cannot fill it (kept with the exclusion).")
        )
    return command


cmd_ship = _action_command(
    "ship", "SHIPPED", "The facility shipped ORDER_ID of RETAILER: on hand and reserved drop, the item completes."
)
cmd_reject = _action_command(
    "reject",
    "REJECTED",
    "The facility cannot fill ORDER_ID: reservation released, the line back to brokering, that facility excluded.",
    with_reason=True,
)
cmd_cancel = _action_command(
    "cancel", "CANCELLED", "Cancel ORDER_ID of RETAILER: what was reserved is released; nothing ships."
)


@click.command("diff", help="The versions of ORDER_ID that TLogs brought after the first, field by field.")
@retailer_argument
@click.argument("order_id", metavar="ORDER_ID")
@option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@with_settings
def cmd_diff(settings: Settings, args: argparse.Namespace) -> int:
    return show_diff(settings, retailer=args.retailer, order_id=args.order_id, as_json=args.as_json)


COMMANDS = (cmd_ship, cmd_reject, cmd_cancel, cmd_diff)


@click.group("order", help="One order after the sale: ship, reject, cancel, and the versions TLogs brought.")
def order_group() -> None:
    pass


for _command in COMMANDS:
    order_group.add_command(_command)
