"""Fault-suite fixtures: a RabbitMQ vhost of its own, so the session's shared worker takes no part."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import vhost_env


@pytest.fixture(scope="module")
def fault_env(broker_url: str, pg_dsn: str, sshd: object) -> Iterator[dict[str, str]]:
    # quick recovery, so each fault drains in seconds: short backoff, lost messages resent fast
    with vhost_env(
        "faults",
        TLOGSYNC_INGEST_RETRY_BASE="0.5",
        TLOGSYNC_INGEST_RETRY_CAP="2",
        TLOGSYNC_INGEST_MAX_RETRIES="30",
        TLOGSYNC_SCAN_RETRY_BASE="0.5",
        TLOGSYNC_SCAN_RETRY_CAP="2",
        TLOGSYNC_ROUTING_RETRY_BASE="0.5",
        TLOGSYNC_ROUTING_RETRY_CAP="2",
        TLOGSYNC_REDISPATCH_AFTER="20",
        TLOGSYNC_SFTP_TIMEOUT="5",
    ) as env:
        yield env


@pytest.fixture
def inventory(database):  # type: ignore[no-untyped-def]
    from worker.adapters.postgres.inventory import PgInventory

    return PgInventory(database)
