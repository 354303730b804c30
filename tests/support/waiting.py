"""Waiting for what real workers do, with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(predicate: Callable[[], object], what: str = "condition", timeout: float = 60) -> None:
    """Poll predicate until it is true; fail naming what was awaited when timeout passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
