"""The retailers in force (worker/services/config.py): the file while valid, else the newest valid configuration
any process stored, never an older copy a forked child inherited; an invalid file logged once and recorded."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path

import pytest

from tests.unit.fakes import FakeConfigSnapshots
from worker.core.errors import TransientError
from worker.core.retailers import ConfigError
from worker.services.config import RetailersConfig


def table(retailer_id: str, order_master: bool = True) -> str:
    return f"""[retailers.{retailer_id}]
product_store_id = "P"
currency = "USD"
order_master = {"true" if order_master else "false"}
poll_seconds = 60
[retailers.{retailer_id}.sftp]
host = "127.0.0.1"
username = "u"
private_key = "/k"
known_hosts = "/kh"
orders_dir = "/{retailer_id}/in"
archive_dir = "/{retailer_id}/in/archive"
error_dir = "/{retailer_id}/in/error"
"""


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a new inode, as an editor or a ConfigMap update makes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "retailers.toml"
    write(p, table("acme"))
    return p


def fork(parent: RetailersConfig) -> RetailersConfig:
    """What a pool child starts with: a copy of the parent's state at the time of the fork."""
    return copy.copy(parent)


def test_a_child_forked_from_an_old_parent_uses_the_newest_stored_configuration_when_the_file_breaks(path):
    store = FakeConfigSnapshots()
    parent = RetailersConfig(path, store)
    assert set(parent.current()) == {"acme"}  # the worker's parent at start-up, before it forks
    first_child = fork(parent)
    write(path, table("acme", order_master=False) + table("newco"))  # a retailer added, order master changed
    assert set(first_child.current()) == {"acme", "newco"}
    write(path, table("acme") + "[retailers.broken\n")  # then someone breaks the file
    assert set(first_child.current()) == {"acme", "newco"}
    recycled = fork(parent)  # max_tasks_per_child or a kill: a new child, from the parent's old copy
    retailers = recycled.current()
    assert set(retailers) == {"acme", "newco"}
    assert retailers["acme"].order_master is False  # not silently back to the start-up value
    assert recycled.error and "not valid TOML" in recycled.error
    assert store.checks[recycled.source]["valid"] is False
    assert "not valid TOML" in str(store.checks[recycled.source]["error"])


def test_an_invalid_file_is_logged_once_per_change_and_recorded_until_fixed(path, caplog):
    store = FakeConfigSnapshots()
    clock = Clock()
    config = RetailersConfig(path, store, recheck_seconds=30, clock=clock)
    config.current()
    write(path, table("acme").replace('currency = "USD"', 'currency = "usd"'))
    with caplog.at_level(logging.INFO, logger="worker.services.config"):
        for _ in range(5):
            assert set(config.current()) == {"acme"}
        clock.now += 31  # a recheck: records the state again, logs nothing new
        config.current()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "retailer 'acme': currency: must be ISO 4217" in errors[0].getMessage()
    assert "using the last valid configuration" in errors[0].getMessage()
    assert store.checks[config.source]["valid"] is False
    caplog.clear()
    write(path, table("acme", order_master=False) + "oops = 1\n")  # another invalid edit: logged again
    with caplog.at_level(logging.INFO, logger="worker.services.config"):
        config.current()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "retailer 'acme': sftp.oops: Unknown field" in caplog.records[0].getMessage()
    write(path, table("acme", order_master=False))
    assert config.current()["acme"].order_master is False
    assert config.error is None
    assert store.checks[config.source] == {
        "valid": True,
        "error": None,
        "sha256": store.checks[config.source]["sha256"],
        "in_use": store.checks[config.source]["sha256"],
    }


def test_without_any_valid_configuration_an_invalid_file_is_refused(path):
    write(path, "[retailers.acme\n")
    store = FakeConfigSnapshots()
    with pytest.raises(ConfigError, match="not valid TOML.*no valid configuration was stored before"):
        RetailersConfig(path, store).current()
    assert store.checks[os.path.abspath(path)]["valid"] is False
    with pytest.raises(ConfigError, match="not valid TOML"):
        RetailersConfig(path, None).current()


def test_a_process_started_while_the_file_is_invalid_uses_the_stored_configuration(path):
    store = FakeConfigSnapshots()
    RetailersConfig(path, store).current()
    path.unlink()
    late = RetailersConfig(path, store)
    assert set(late.current()) == {"acme"}
    assert late.error and "not found" in late.error


def test_a_missing_snapshot_keeps_the_processs_own_configuration(path):
    config = RetailersConfig(path, None)
    config.current()
    write(path, "[retailers.acme\n")
    assert set(config.current()) == {"acme"}


def test_with_the_store_down_a_valid_file_is_used_and_stored_at_the_next_recheck(path):
    store = FakeConfigSnapshots()
    store.down = True
    clock = Clock()
    config = RetailersConfig(path, store, recheck_seconds=30, clock=clock)
    assert set(config.current()) == {"acme"}
    assert store.snapshots == {}
    store.down = False
    config.current()
    assert store.snapshots == {}  # not before the recheck is due
    clock.now += 31
    config.current()
    assert len(store.snapshots) == 1


def test_an_invalid_file_with_the_store_down_is_retried_not_guessed(path):
    store = FakeConfigSnapshots()
    config = RetailersConfig(path, store)
    config.current()
    write(path, "[retailers.acme\n")
    store.down = True
    with pytest.raises(TransientError, match="not valid TOML.*cannot be read"):
        config.current()  # another process may have stored a newer configuration than this copy
    with pytest.raises(ConfigError, match="cannot be read"):
        RetailersConfig(path, store).current()  # nothing at all to use: refused, as at start-up
    store.down = False
    assert set(config.current()) == {"acme"}


def test_a_stored_text_that_newer_rules_refuse_is_not_used(path):
    store = FakeConfigSnapshots()
    config = RetailersConfig(path, store)
    config.current()
    (stored,) = store.snapshots.values()
    store.snapshots[(stored.source, stored.sha256)] = dataclasses.replace(stored, content="[retailers.x\n")
    write(path, "[retailers.acme\n")
    assert set(config.current()) == {"acme"}  # its own copy, since no stored one can be used
    with pytest.raises(ConfigError):
        RetailersConfig(path, store).current()


def test_the_command_line_reads_snapshots_but_never_writes_them(path):
    store = FakeConfigSnapshots()
    store.down = True  # a valid file needs no database at all
    assert set(RetailersConfig(path, store, record=False).current()) == {"acme"}
    store.down = False
    RetailersConfig(path, store).current()
    write(path, "[retailers.acme\n")
    checks = dict(store.checks)
    cli = RetailersConfig(path, store, record=False)
    assert set(cli.current()) == {"acme"} and cli.fallback is not None
    assert store.checks == checks
