"""Builders shared by the unit tests of the pure core."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from worker.core.retailers import Retailer, parse_retailers
from worker.demo.tlogfactory import load_sample

SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "hotwax"


def retailer(**overrides: Any) -> Retailer:
    table: dict[str, Any] = {
        "product_store_id": "DV_STORE",
        "currency": "USD",
        "order_master": True,
        "may_split": True,
        "poll_seconds": 60,
        "sftp": {
            "host": "127.0.0.1",
            "username": "acme",
            "private_key": "/k",
            "known_hosts": "/kh",
            "orders_dir": "/in",
            "archive_dir": "/in/archive",
            "error_dir": "/in/error",
        },
    }
    table.update(overrides)
    return parse_retailers({"retailers": {"acme": table}})["acme"]


def sample(name: str) -> dict[str, Any]:
    return load_sample(name)


def to_bytes(doc: Any) -> bytes:
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return float(value) if value != value.to_integral_value() else int(value)
        raise TypeError(type(value))

    return json.dumps(doc, default=default).encode()
