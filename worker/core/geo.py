"""Locations for brokering: US ZIP codes to coordinates, offline (the zipcodes package ships its data)."""

from __future__ import annotations

import re
from functools import lru_cache

import zipcodes

ZIP5 = re.compile(r"^\s*(\d{5})(?:-\d{4})?\s*$")


@lru_cache(maxsize=65536)
def zip_location(postal_code: str | None) -> tuple[float, float] | None:
    """(latitude, longitude) of a US ZIP code ('91911' or '91911-1234'), or None when unknown."""
    if not postal_code:
        return None
    match = ZIP5.match(postal_code)
    if not match:
        return None
    try:
        found = zipcodes.matching(match[1])  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        return None
    if not found:
        return None
    try:
        return float(found[0]["lat"]), float(found[0]["long"])
    except (KeyError, ValueError, TypeError):
        return None
