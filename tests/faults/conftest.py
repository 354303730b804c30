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


@pytest.fixture(scope="module")
def own_rabbitmq(fault_env: dict[str, str]) -> Iterator[object]:
    """A RabbitMQ node of the suite's own, which a test may stop and start again. Where none can start, in CI
    only (the machine is the run's alone), the machine's node restarted with stop_app/start_app instead."""
    from tests.conftest import IN_CI, need
    from tests.faults.services import MachineRabbitMQ, Unavailable, start_rabbitmq

    node: object
    try:
        node = start_rabbitmq()
    except Unavailable as exc:
        if not IN_CI:
            need(False, f"a RabbitMQ node of the suite's own ({exc})")
        print(f"no RabbitMQ node of the suite's own ({exc}); restarting the machine's node instead (CI)")
        node = MachineRabbitMQ(fault_env["TLOGSYNC_BROKER_URL"])
    yield node
    node.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[object]:
    """A PostgreSQL cluster of the suite's own, migrated, which a test may restart."""
    from tests.conftest import need
    from tests.faults.services import Unavailable, start_postgres
    from worker.adapters.postgres.migrate import ensure_database, migrate

    try:
        cluster = start_postgres()
    except Unavailable as exc:
        need(False, f"a PostgreSQL cluster of the suite's own ({exc})")
    dsn = cluster.dsn("tlogsync_faults")
    ensure_database(dsn)
    migrate(dsn)
    cluster.database_url = dsn  # type: ignore[attr-defined]
    yield cluster
    cluster.close()
