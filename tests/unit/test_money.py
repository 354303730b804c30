"""worker/core/money.py: the one JSON decoder with Decimal numbers, and the roundings to the cent."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

from worker.core.money import CENT, JsonError, cents, loads_decimal, same_cents

ROOT = Path(__file__).resolve().parents[2]


def test_numbers_are_exact():
    doc = loads_decimal('{"a": 0.1, "b": 3, "c": -12.3450, "d": 1e2, "e": ' + "9" * 40 + "}")
    assert doc == {"a": Decimal("0.1"), "b": 3, "c": Decimal("-12.3450"), "d": Decimal("1E+2"), "e": Decimal("9" * 40)}
    assert type(doc["b"]) is int and type(doc["a"]) is Decimal and type(doc["e"]) is Decimal
    assert str(doc["c"]) == "-12.3450"  # the places as written


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_special_numbers_are_refused_with_a_clear_error(token: str):
    with pytest.raises(JsonError, match=f"^invalid JSON: {token} is not a valid JSON number$"):
        loads_decimal(f'{{"totalAmount": {token}}}')


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_special_numbers_become_decimal_when_the_caller_rejects_their_record(token: str):
    value = loads_decimal(f"[{token}]", special_numbers=True)[0]
    assert isinstance(value, Decimal) and not value.is_finite()


def test_invalid_json_says_where():
    with pytest.raises(JsonError, match="^invalid JSON at line 2 column 1: "):
        loads_decimal('{"a": 1,\n}')
    with pytest.raises(JsonError, match="^invalid JSON: nested too deeply$"):
        loads_decimal("[" * 100_000 + "]" * 100_000)


def test_reported_amounts_round_half_up_to_the_cent():
    assert str(CENT) == "0.01"
    assert cents(Decimal("1.005")) == Decimal("1.01")
    assert cents(Decimal("-1.005")) == Decimal("-1.01")
    assert cents(Decimal("2.344")) == Decimal("2.34")
    assert str(cents(Decimal("3"))) == "3.00"


def test_totals_agree_to_the_cent_each_rounded_half_up_like_the_audit():
    # issue 13: validation rounded half to even while the audit rounded half up; one rule now, half up
    assert same_cents(Decimal("10.004"), Decimal("10"))
    assert same_cents(Decimal("1.005"), Decimal("1.01"))  # half up, as a till prints it
    assert not same_cents(Decimal("1.005"), Decimal("1.00"))
    assert same_cents(Decimal("1.015"), Decimal("1.02"))
    assert same_cents(Decimal("10.125"), Decimal("10.13"))  # 10.00 + 0.125 tax: the till prints 10.13
    assert not same_cents(Decimal("10.125"), Decimal("10.12"))
    assert not same_cents(Decimal("10.01"), Decimal("10"))


def test_money_is_the_only_json_decoder_with_decimal_numbers():
    decoders = set()
    for path in sorted((ROOT / "worker").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg in ("parse_float", "parse_int", "parse_constant"):
                decoders.add(str(path.relative_to(ROOT)))
    assert decoders == {"worker/core/money.py"}


def test_a_duplicate_key_is_refused_naming_the_key():
    with pytest.raises(JsonError, match='^invalid JSON: duplicate key "orderDate" in an object$'):
        loads_decimal('{"orderId": "A1", "orderDate": 1, "orderDate": 2}')
    with pytest.raises(JsonError, match='^invalid JSON: duplicate key "gtin" in an object$'):
        loads_decimal('{"lines": [{"gtin": "1"}, {"gtin": "2", "gtin": "3"}]}')
    with pytest.raises(JsonError, match='^invalid JSON: duplicate key "orderDate" in an object$'):
        loads_decimal('{"orderDate": 1, "order\\u0044ate": 2}')  # the same key, escaped


def test_keys_that_differ_are_kept_and_a_long_duplicate_key_is_named_in_part():
    assert loads_decimal('{"a": 1, "A": 2, "b": {"a": 3}}') == {"a": 1, "A": 2, "b": {"a": 3}}
    with pytest.raises(JsonError) as refused:
        loads_decimal(f'{{"{"k" * 5000}": 1, "{"k" * 5000}": 2}}')
    assert len(str(refused.value)) < 200 and "duplicate key" in str(refused.value)
