"""Configuration snapshots on the real PostgreSQL: the newest valid text per file, the invalid state kept until
fixed, and what the status screen and the metrics read of it."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime

import pytest

from worker.adapters.postgres.config import PgConfigSnapshots
from worker.adapters.postgres.readmodel import PgReadModel
from worker.core.errors import TransientError


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def store(pg_dsn):
    return PgConfigSnapshots(pg_dsn)


@pytest.fixture
def source():
    return f"/etc/tlogsync/{secrets.token_hex(4)}/retailers.toml"


def check_of(database, source):
    (check,) = [c for c in PgReadModel(database).config_checks() if c.source == source]
    return check


def test_the_newest_valid_text_is_the_one_loaded_last_even_when_it_was_stored_before(store, source):
    assert store.latest_valid(source) is None
    mtime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    store.store_valid(source, "a = 1\n", sha("a = 1\n"), mtime)
    store.store_valid(source, "b = 2\n", sha("b = 2\n"), None)
    assert store.latest_valid(source).content == "b = 2\n"
    store.store_valid(source, "a = 1\n", sha("a = 1\n"), mtime)  # the file went back to the first text
    newest = store.latest_valid(source)
    assert (newest.content, newest.sha256, newest.file_mtime) == ("a = 1\n", sha("a = 1\n"), mtime)
    assert store.latest_valid(source + ".other") is None


def test_an_invalid_file_stays_reported_from_when_it_broke_until_it_is_valid_again(store, source, database):
    store.store_valid(source, "a = 1\n", sha("a = 1\n"), None)
    check = check_of(database, source)
    assert check.valid and check.error is None and check.in_use_sha256 == sha("a = 1\n")
    store.record_invalid(source, "retailers.toml: not valid TOML", sha("[x"), sha("a = 1\n"))
    broke = check_of(database, source)
    assert not broke.valid and broke.error == "retailers.toml: not valid TOML" and broke.invalid_since
    assert broke.in_use_sha256 == sha("a = 1\n") and broke.in_use_loaded_at is not None
    time.sleep(0.01)
    store.record_invalid(source, "retailers.toml: retailer 'x': currency", sha("[y"), sha("a = 1\n"))
    again = check_of(database, source)
    assert again.invalid_since == broke.invalid_since  # still invalid since it first broke
    assert again.error == "retailers.toml: retailer 'x': currency" and again.checked_at > broke.checked_at
    store.store_valid(source, "c = 3\n", sha("c = 3\n"), None)
    fixed = check_of(database, source)
    assert fixed.valid and fixed.error is None and fixed.invalid_since is None and fixed.sha256 == sha("c = 3\n")


def test_an_unreachable_database_is_a_transient_error():
    down = PgConfigSnapshots("postgresql://127.0.0.1:1/none", timeout=2)
    with pytest.raises(TransientError, match="configuration snapshots"):
        down.latest_valid("/x")
    with pytest.raises(TransientError):
        down.store_valid("/x", "a = 1\n", sha("a = 1\n"), None)
