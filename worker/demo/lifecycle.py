"""The demo's part of issue 13: after the day's files, the orders live on (docs/order-lifecycle.md).

Through the running workers: a fulfilment file ships one brokered line and rejects another (the next brokering run
places it elsewhere), the command's action cancels a third, a sale is voided by a later TLog, and a corrected TLog
with the same updateDate is a conflict. Then the inventory invariant is checked and printed.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from worker.adapters.postgres.inventory import PgInventory
from worker.adapters.postgres.lifecycle import PgOrderActions
from worker.adapters.postgres.pool import open_pool
from worker.adapters.postgres.readmodel import PgReadModel
from worker.core.inventory import InventoryRow
from worker.core.lifecycle import CANCELLED
from worker.demo.tlogfactory import dumps, load_sample, make_sale

RETAILER = "dolcevita"
FILES = 4  # the files this part writes: a sale, a fulfilment file, its void, a corrected TLog
console = Console(width=140)


def fulfillment_dir(retailer_id: str) -> str:
    return f"/{retailer_id}/hotwax/Fulfillment"


def fulfillment_keys(retailer_id: str) -> str:
    """The retailers file's keys of the demo retailer's fulfilment feed (none for the others)."""
    if retailer_id != RETAILER:
        return ""
    base = fulfillment_dir(retailer_id)
    return (
        f'fulfillment_dir = "{base}"\nfulfillment_pattern = "*.csv"\n'
        f'fulfillment_archive_dir = "{base}/archive"\nfulfillment_error_dir = "{base}/error"\n'
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))


def _wait(reads: PgReadModel, files: int, timeout: float, check: object = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = reads.progress()
        if p.files >= files and p.final == p.files and p.pending_followups == 0 and (check is None or check()):  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


def run(root: Path, dsn: str, timeout: float = 90.0) -> int:
    """Run the lifecycle part against the running workers; 0 when everything happened and the invariant holds."""
    console.rule("after the sale: ship, reject, cancel, a voided sale, a corrected TLog")
    inbound = root / RETAILER / "POS/PS_to_HC/SalesOrder"
    feed = root / fulfillment_dir(RETAILER).lstrip("/")
    for sub in ("archive", "error"):
        (feed / sub).mkdir(parents=True, exist_ok=True)
    with open_pool(dsn) as db:
        reads, actions = PgReadModel(db), PgOrderActions(db)
        placed = actions.allocated(RETAILER, 3)
        if len(placed) < 3:
            console.print(f"[red]only {len(placed)} brokered lines to work with[/red]")
            return 1
        (shipped, ship_seq, ship_at, _, _), (rejected, reject_seq, reject_at, gtin, product), cancel = placed
        cancelled, cancel_seq = cancel[0], cancel[1]
        # a delivery at the LA store, counted and loaded: somewhere else for the rejected line to go
        elsewhere = "301" if reject_at != "301" else "DC1"
        PgInventory(db).load_inventory(RETAILER, [InventoryRow(elsewhere, product, gtin, 20)])
        console.print(f"inventory load: {elsewhere} counted 20 of {product} (reserved recomputed from open lines)")
        sale = make_sale(1, "IN_STORE", store_id="254", lines=1, order_prefix="DVLIFE")
        files = reads.progress().files
        _write(inbound / "dolcevita_OrderTLog_lifecycle_sale.json", dumps(sale))
        _write(
            feed / "dolcevita_Fulfillment_2024-01-12-20_00_00_000.csv",
            (
                "orderId,itemSeq,facilityId,quantity,status,trackingCode,reason\n"
                f"{shipped},{ship_seq},{ship_at},,SHIPPED,1Z999AA10123456784,\n"
                f"{rejected},{reject_seq},{reject_at},,REJECTED,,box damaged in the back room\n"
            ).encode(),
        )
        done = actions.act(RETAILER, CANCELLED, cancelled, cancel_seq)
        console.print(f"cancelled {cancelled} line {cancel_seq} (as `tlogsync order cancel` does): {done.order_status}")

        def rebrokered() -> bool:
            lines = actions.lines(RETAILER, [rejected])
            return any(line[2] == reject_seq and line[4] not in ("_NA_", reject_at) for line in lines)

        ok = _wait(reads, files + 2, timeout, rebrokered)
        # the sale is voided at the till a minute later; the in-store sample comes again corrected, same updateDate
        void = copy.deepcopy(sale)
        void["orderStatus"] = void["status"] = "VOIDED"
        void["updateDate"] = sale["updateDate"] + 60_000
        corrected = load_sample("inStoreOrdersSample.json")
        corrected["customerProfile"]["email"] = "corrected@example.com"
        files = reads.progress().files
        _write(inbound / "dolcevita_OrderTLog_lifecycle_void.json", dumps(void))
        _write(inbound / "dolcevita_OrderTLog_lifecycle_corrected.json", dumps(corrected))
        ok = _wait(reads, files + 2, timeout) and ok
        table = Table(title="order lines after the sale")
        for col in ("order", "order status", "line", "line status", "facility"):
            table.add_column(col)
        for row in actions.lines(RETAILER, [shipped, rejected, cancelled, sale["orderId"]]):
            table.add_row(*map(str, row))
        console.print(table)
        outcomes = actions.file_outcomes(
            RETAILER,
            [
                "dolcevita_Fulfillment_2024-01-12-20_00_00_000.csv",
                "dolcevita_OrderTLog_lifecycle_void.json",
                "dolcevita_OrderTLog_lifecycle_corrected.json",
            ],
        )
        for name, status, error in outcomes:
            console.print(f"{name}: {status}" + (f" ({error})" if error else ""), highlight=False)
        problems = actions.invariant(RETAILER)
    if problems:
        console.print("[red]inventory invariant broken:[/red] " + "; ".join(problems))
        return 1
    console.print(
        "[green]inventory invariant holds[/green] for every facility and product of dolcevita: reserved = the"
        " open reservations (never negative), ATP = on hand - reserved, and on hand = the sum of its variances"
        " and movements (each change traced to one source row)"
    )
    if not ok or len(outcomes) != 3:
        console.print("[red]the lifecycle part did not finish in time[/red]")
        return 1
    return 0
