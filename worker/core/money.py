"""Money: Decimal end to end. The one JSON decoder that reads numbers as Decimal, and the one rounding rule.

One rule everywhere (docs/oms-mapping.md, "Rounding"): amounts are rounded to the cent half up, the way tills
print them (0.125 -> 0.13, -0.125 -> -0.13: half away from zero), in validation, in the OMS JSON and in the
audit alike."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")


class JsonError(ValueError):
    """Text that is not the JSON we accept; the message says what and where (`invalid JSON ...`)."""


def _parse_int(text: str) -> int | Decimal:
    # int() refuses more than 4300 digits, deep inside json with a bare ValueError; keep long numbers as
    # Decimal so that validation reports them as out of range.
    return Decimal(text) if len(text) > 30 else int(text)


def _refuse_constant(name: str) -> Any:
    raise JsonError(f"invalid JSON: {name} is not a valid JSON number")


class DuplicateKey(JsonError):
    """An object names the same key twice (`invalid JSON: duplicate key "orderDate" in an object`)."""

    def __init__(self, key: str):
        shown = json.dumps(key if len(key) <= 60 else key[:60] + "...", ensure_ascii=True)
        super().__init__(f"invalid JSON: duplicate key {shown} in an object")
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json would keep the last of two equal keys; which one the writer meant cannot be known, so neither is
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def loads_decimal(text: str, special_numbers: bool = False) -> Any:
    """JSON text to Python with every number exact: Decimal for fractions, int for whole numbers (Decimal
    past 30 digits). NaN, Infinity and -Infinity are not JSON and are refused, unless special_numbers:
    then they become Decimal, for a caller that rejects the one record holding one rather than the file.
    An object with the same key twice is refused (DuplicateKey), naming the key."""
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_int=_parse_int,
            parse_constant=Decimal if special_numbers else _refuse_constant,
            object_pairs_hook=_refuse_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise JsonError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise JsonError("invalid JSON: nested too deeply") from None
    except JsonError:
        raise
    except ValueError as exc:
        raise JsonError(f"invalid JSON: {exc}") from None


def cents(value: Decimal) -> Decimal:
    """Rounded to the cent, half up: how amounts are reported (audit, generated sales)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def same_cents(a: Decimal, b: Decimal) -> bool:
    """Whether two amounts agree to the cent, each rounded half up (cents): how a document's totals are checked."""
    return cents(a) == cents(b)
