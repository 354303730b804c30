"""Readable validation messages shared by the TLog and configuration schemas."""

from __future__ import annotations

from typing import Any


def flatten_messages(messages: Any, prefix: str = "") -> str:
    """marshmallow's nested messages as 'orderProductList[0].gtin: Missing data ...; ...'."""
    out: list[str] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                name = prefix or "(document)"
            elif isinstance(key, int):
                name = f"{prefix}[{key}]"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            out.append(flatten_messages(value, name))
    elif isinstance(messages, list):
        texts = [str(m) for m in messages if not isinstance(m, dict | list)]
        if texts:
            out.append(f"{prefix}: {' '.join(texts)}")
        out.extend(flatten_messages(m, prefix) for m in messages if isinstance(m, dict | list))
    else:
        out.append(f"{prefix}: {messages}")
    return "; ".join(o for o in out if o)
