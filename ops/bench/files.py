"""The benchmark's TLog files, written straight into the sshd's folder (not over SFTP), fast enough for a
50,000-file backlog.

A few hundred documents come from worker/demo/tlogfactory.py (`make_sale` over the published samples, `mix`'s
proportions: 60 % in-store, 30 % send-sale, 10 % mixed carts, every `bad_every`-th one broken with one of
`BAD_VARIANTS`); each file is one of them with its order id replaced, so every file is a distinct sale and
writing one costs a string replace and a write, not a deep copy and a JSON dump (about 5 ms each).

Two sizes:
- realistic: the samples' documents as they are (customer, tenders, store, tax rates, the activity log), 1 to 3
  lines, indented as the POS writes them: about 21 KB;
- small: one line, without the activity log, the duplicated product list, the tax-rate and payment-detail
  blocks and the lines' image and associate attributes, written without indentation: about 3 KB.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from worker.core.oms import json_default
from worker.demo.tlogfactory import BAD_VARIANTS, STORES, make_sale

SIZES = ("realistic", "small")
TEMPLATES = 250
PLACEHOLDER = "ZQTPL"
SMALL_DROP = ("orderActivityLog", "productList", "taxRates", "paymentDetails")
SMALL_LINE_DROP = ("imageURL", "salesAssociateAttribution", "returnsEligibility")


def _small(doc: dict[str, Any]) -> dict[str, Any]:
    for key in SMALL_DROP:
        doc.pop(key, None)
    for line in doc["orderProductList"]:
        for key in SMALL_LINE_DROP:
            line.pop(key, None)
    return doc


def _dumps(doc: dict[str, Any], size: str) -> bytes:
    return json.dumps(doc, default=json_default, indent=1 if size == "realistic" else None).encode()


@dataclass(frozen=True)
class Template:
    data: bytes
    order_id: bytes
    broken: bool


def templates(size: str, bad_every: int, seed: int = 7, count: int = TEMPLATES) -> list[Template]:
    """`count` distinct documents in mix()'s proportions; every bad_every-th one broken (0: none)."""
    if size not in SIZES:
        raise ValueError(f"size {size!r}: not one of {', '.join(SIZES)}")
    rng = random.Random(seed)
    out = []
    for seq in range(1, count + 1):
        roll = rng.random()
        kind = "IN_STORE" if roll < 0.6 else "SEND_SALE" if roll < 0.9 else "MIXED"
        lines = 1 if size == "small" else None
        doc = make_sale(seq, kind, rng.choice(STORES), rng, order_prefix=PLACEHOLDER, lines=lines)
        if size == "small":
            doc = _small(doc)
        data = _dumps(doc, size)
        broken = bool(bad_every) and seq % bad_every == 0
        if broken:  # truncated JSON, a line without gtin, or a total one dollar off (the demo's dumps, as here)
            data = BAD_VARIANTS[(seq // bad_every) % len(BAD_VARIANTS)](doc)
        out.append(Template(data, doc["orderId"].encode(), broken))
    return out


@dataclass
class Batch:
    names: list[str]
    order_ids: list[str]
    bytes: int
    broken: int


class FileMaker:
    """Writes files from templates; each call gets a prefix so order ids never repeat within a database."""

    def __init__(self, size: str, bad_every: int):
        self.size = size
        self.templates = templates(size, bad_every)

    def make(self, seq: int, prefix: str) -> tuple[str, str, bytes]:
        """(file name, order id, bytes) of the seq-th file of a batch."""
        template = self.templates[seq % len(self.templates)]
        order_id = f"{prefix}{seq:08d}"
        stamp = (datetime(2024, 1, 12, tzinfo=UTC) + timedelta(milliseconds=seq)).strftime("%Y-%m-%d-%H_%M_%S_%f")
        name = f"{prefix.lower()}_OrderTLog_{stamp}_{seq:06d}.json"
        return name, order_id, template.data.replace(template.order_id, order_id.encode())

    def write(self, folder: Path, count: int, prefix: str, age_seconds: float = 60.0) -> Batch:
        """count files in folder, modified age_seconds ago (old enough for any scan's minimum age)."""
        folder.mkdir(parents=True, exist_ok=True)
        old = time.time() - age_seconds
        names, ids, total, broken = [], [], 0, 0
        for seq in range(1, count + 1):
            name, order_id, data = self.make(seq, prefix)
            path = folder / name
            path.write_bytes(data)
            os.utime(path, (old, old))
            names.append(name)
            ids.append(order_id)
            total += len(data)
            broken += self.templates[seq % len(self.templates)].broken
        return Batch(names, ids, total, broken)
