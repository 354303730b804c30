#!/usr/bin/env python3
"""The one-process baseline of `make bench`: the simplest ingest a retailer could write without a task queue.

One process and one SFTP connection, reused for every file. It lists the inbound folder, and for each
`*.json` file in name order: reads it, parses it (numbers as Decimal), stores the order and its lines in
PostgreSQL in one transaction, and renames the file into the archive folder, or into the error folder
when it cannot be parsed. There is no ledger, no retry, no validation beyond parsing, no routing: it is
the yardstick tlogsync's throughput is compared with, not a design to follow.

It shares no code with tlogsync on purpose, so the comparison measures the two designs and nothing common
to both. It needs only paramiko and psycopg (both tlogsync dependencies).

  python ops/bench/baseline.py --host 127.0.0.1 --port 2222 --user tlog --key KEY --known-hosts KNOWN_HOSTS \\
      --dir /inbound --archive-dir /inbound/archive --error-dir /inbound/error --dsn postgresql:///db [--limit N]

The tables baseline_orders and baseline_order_items are created when missing. It prints {"event": "started"}
once connected, just before listing, and its last line of output is one JSON object: {"files", "ok", "failed",
"seconds", "files_per_s"}; "seconds" counts from the listing to the last rename (connecting is not timed).
"""

from __future__ import annotations

import argparse
import json
import stat
import time
from decimal import Decimal
from typing import Any

import paramiko
import psycopg

TABLES = """
CREATE TABLE IF NOT EXISTS baseline_orders (
    external_id      text PRIMARY KEY,
    store_id         text,
    fulfillment_type text,
    order_date       text,
    grand_total      numeric(14,2),
    file_name        text
);
CREATE TABLE IF NOT EXISTS baseline_order_items (
    external_id text REFERENCES baseline_orders ON DELETE CASCADE,
    item_seq    text,
    gtin        text,
    quantity    numeric,
    unit_price  numeric(14,2),
    tax         numeric(14,2),
    PRIMARY KEY (external_id, item_seq)
);
"""

ADD_ORDER = (
    "INSERT INTO baseline_orders (external_id, store_id, fulfillment_type, order_date, grand_total, file_name)"
    " VALUES (%(id)s, %(store)s, %(kind)s, %(date)s, %(total)s, %(file)s) ON CONFLICT (external_id) DO NOTHING"
)
ADD_LINE = (
    "INSERT INTO baseline_order_items (external_id, item_seq, gtin, quantity, unit_price, tax)"
    " VALUES (%(id)s, %(seq)s, %(gtin)s, %(qty)s, %(price)s, %(tax)s) ON CONFLICT DO NOTHING"
)

# What a file that is not a readable sale raises while it is turned into rows.
NOT_A_SALE = (ValueError, KeyError, TypeError, AttributeError, ArithmeticError)


def amount(value: Any) -> Decimal:
    """A JSON number (already Decimal or int, as parsed below) as Decimal; anything else raises."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise TypeError(f"not a number: {value!r}")
    return Decimal(value)


def order_rows(document: dict[str, Any], file_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The baseline_orders row and the baseline_order_items rows of one parsed TLog."""
    order_id = document["orderId"]
    order = {
        "id": order_id,
        "store": document.get("storeId"),
        "kind": document.get("fulfillmentType"),
        "date": document.get("creationDate"),
        "total": amount(document["totalAmount"]),
        "file": file_name,
    }
    lines = []
    for line in document["orderProductList"]:
        tax = (line.get("productTax") or {}).get("totalTax", 0)
        lines.append(
            {
                "id": order_id,
                "seq": str(line["orderItemId"]),
                "gtin": line.get("gtin"),
                "qty": amount(line["quantity"]),
                "price": amount(line["price"]),
                "tax": amount(tax),
            }
        )
    return order, lines


def open_sftp(args: argparse.Namespace) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    """One SSH connection for the whole run; the host key must be in known_hosts."""
    client = paramiko.SSHClient()
    client.load_host_keys(args.known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        args.host,
        port=args.port,
        username=args.user,
        key_filename=args.key,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client, client.open_sftp()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with psycopg.connect(args.dsn, autocommit=True) as db:
        db.execute(TABLES)
        ssh, sftp = open_sftp(args)
        try:
            print(json.dumps({"event": "started"}), flush=True)  # the benchmark's CPU window opens here
            started = time.perf_counter()
            names = sorted(
                entry.filename
                for entry in sftp.listdir_attr(args.dir)
                if entry.filename.endswith(".json") and stat.S_ISREG(entry.st_mode or 0)
            )
            if args.limit:
                names = names[: args.limit]
            ok = failed = 0
            for name in names:
                path = f"{args.dir}/{name}"
                with sftp.open(path, "rb") as remote:
                    data = remote.read()
                try:
                    order, lines = order_rows(json.loads(data, parse_float=Decimal), name)
                    with db.transaction(), db.cursor() as cur:
                        cur.execute(ADD_ORDER, order)
                        cur.executemany(ADD_LINE, lines)
                except NOT_A_SALE:
                    sftp.posix_rename(path, f"{args.error_dir}/{name}")
                    failed += 1
                    continue
                sftp.posix_rename(path, f"{args.archive_dir}/{name}")
                ok += 1
            seconds = time.perf_counter() - started
        finally:
            sftp.close()
            ssh.close()
    return {
        "files": len(names),
        "ok": ok,
        "failed": failed,
        "seconds": round(seconds, 3),
        "files_per_s": round(len(names) / seconds, 1) if seconds else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("host", "user", "key", "known-hosts", "dir", "archive-dir", "error-dir", "dsn"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--port", type=int, default=22)
    ap.add_argument("--limit", type=int, default=0, help="files to take at most (0: all)")
    print(json.dumps(run(ap.parse_args())), flush=True)


if __name__ == "__main__":
    main()
