"""Security basics that can be checked without services: SQL is parameterized and lives in the adapters,
paths stay inside their folders, configuration never carries secrets."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.unit.helpers import retailer
from worker.services.feeds import join, safe_local_name, unsafe_name_reason

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("worker", "tasks")  # what ships; tests and the benchmark may hold SQL of their own
ADAPTERS = ROOT / "worker" / "adapters"
# Names that may be interpolated into SQL text: fixed column lists and identifiers chosen from constants.
SQL_CONSTANTS = {"ROW_COLUMNS", "ROW_COLUMNS_T", "column", "FACTS_SET"}  # constants of placeholders
# What a statement looks like (keywords in capitals, as every statement here is written); prose never matches.
SQL_TEXT = re.compile(
    r"\b(?:SELECT\s+\S|INSERT\s+INTO\b|UPDATE\s+\w+(?:\s+AS\s+\w+)?\s+SET\b|DELETE\s+FROM\b|"
    r"(?:CREATE|DROP|ALTER)\s+(?:TABLE|DATABASE|INDEX)\b|ON\s+CONFLICT\b)"
)


def production_files():
    for top in PRODUCTION:
        yield from sorted((ROOT / top).rglob("*.py"))


def sql_calls():
    for path in production_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany")
                and node.args
            ):
                yield path, node


def sql_literals():
    """Every string literal (f-string parts included, docstrings not) that reads like a SQL statement."""
    for path in production_files():
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and SQL_TEXT.search(node.value)
            ):
                yield path, node


def test_every_sql_statement_is_parameterized():
    offenders = []
    checked = 0
    for path, call in sql_calls():
        checked += 1
        for part in ast.walk(call.args[0]):
            if isinstance(part, ast.FormattedValue):
                names = {n.id for n in ast.walk(part.value) if isinstance(n, ast.Name)}
                if not names <= SQL_CONSTANTS:
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} interpolates {sorted(names)}")
            if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Mod):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} uses % formatting")
            is_format = (
                isinstance(part, ast.Call) and isinstance(part.func, ast.Attribute) and part.func.attr == "format"
            )
            # psycopg's sql.SQL(...).format(sql.Identifier(...)) composes identifiers safely
            composed = (
                is_format
                and isinstance(part.func.value, ast.Call)
                and getattr(part.func.value.func, "attr", "") == "SQL"
            )
            if is_format and not composed:
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} uses str.format")
    assert checked > 40  # the scan found the adapters' statements
    assert offenders == []


def test_all_sql_lives_in_the_adapters():
    found = list(sql_literals())
    outside = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:60]!r}"
        for path, node in found
        if not path.is_relative_to(ADAPTERS)
    ]
    assert outside == []
    inside = {path.relative_to(ADAPTERS).as_posix() for path, _ in found}
    # the check sees the adapters' statements (so it would see them elsewhere too)
    assert len(found) > 60
    assert {
        "postgres/ledger.py",
        "postgres/orders.py",
        "postgres/inventory.py",
        "postgres/readmodel.py",
        "postgres/deadletters.py",
        "postgres/audit.py",
        "postgres/migrate.py",
    } <= inside


def test_the_sql_check_recognises_statements_and_not_prose():
    for text in (
        "SELECT now()",
        "INSERT INTO t (a) VALUES (%s)",
        "UPDATE tlog_files SET x = 1",
        "INSERT INTO inventory AS i (a) VALUES (1) ON CONFLICT DO NOTHING",
        "DELETE FROM t",
        "CREATE DATABASE {}",
        "DROP DATABASE IF EXISTS {}",
    ):
        assert SQL_TEXT.search(text), text
    for text in (
        "select the candidates from the listing",
        "Update the ledger, then set the status",
        "insert into the table",
        "delete from the folder",
    ):
        assert not SQL_TEXT.search(text), text


def test_the_interpolated_column_is_chosen_from_constants():
    source = (ROOT / "worker/adapters/postgres/inventory.py").read_text()
    assert 'column = "product_id" if id_type == "SKU" else "gtin"' in source


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.json", "..", ".", ""])
def test_join_refuses_anything_but_a_plain_name(name):
    with pytest.raises(ValueError):
        join("/inbound", name)


@pytest.mark.parametrize(
    "name", ["..\\..\\x.json", "x\x00.json", "x\n.json", "..x.json", "\u202ex.json", "'; DROP TABLE orders; --.json"]
)
def test_hostile_remote_names_are_flagged_and_made_safe(name):
    assert unsafe_name_reason(name) is not None
    safe = safe_local_name(name)
    assert "/" not in safe and "\\" not in safe and not safe.startswith(".") and safe.isprintable()


def test_the_configuration_holds_the_name_of_the_password_variable_never_the_password(monkeypatch):
    monkeypatch.setenv("ACME_SFTP_PASSWORD", "s3cret-do-not-log")
    sftp = {
        "host": "h",
        "username": "u",
        "password_env": "ACME_SFTP_PASSWORD",
        "known_hosts": "/kh",
        "orders_dir": "/o",
        "archive_dir": "/a",
        "error_dir": "/e",
    }
    r = retailer(sftp=sftp)
    assert "s3cret" not in repr(r)
    assert r.sftp.password_env == "ACME_SFTP_PASSWORD"
