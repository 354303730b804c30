"""Fault-suite fixtures: a RabbitMQ vhost of its own, so the session's shared worker takes no part."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import SESSION


@pytest.fixture(scope="module")
def fault_env(broker_url: str, pg_dsn: str, sshd: object) -> Iterator[dict[str, str]]:
    vhost = f"tlogsync_{SESSION}_faults"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    env = dict(os.environ,
               TLOGSYNC_BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
               # quick recovery, so each fault drains in seconds: short backoff, lost messages resent fast
               TLOGSYNC_INGEST_RETRY_BASE="0.5", TLOGSYNC_INGEST_RETRY_CAP="2", TLOGSYNC_INGEST_MAX_RETRIES="30",
               TLOGSYNC_SCAN_RETRY_BASE="0.5", TLOGSYNC_SCAN_RETRY_CAP="2",
               TLOGSYNC_ROUTING_RETRY_BASE="0.5", TLOGSYNC_ROUTING_RETRY_CAP="2",
               TLOGSYNC_REDISPATCH_AFTER="20", TLOGSYNC_SFTP_TIMEOUT="5")
    yield env
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


@pytest.fixture
def inventory(ledger):  # type: ignore[no-untyped-def]
    from worker.adapters.inventory import PgInventory

    return PgInventory(ledger.pool)
