"""The runtime's extension points, through the two plugins that use them: the fault suite's fault injection
and the benchmark's counters, on a real PostgreSQL and sshd."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ops.bench import counting
from tests.support import faults
from tests.unit.helpers import retailer
from worker.app.runtime import Runtime
from worker.app.settings import Settings
from worker.core.retailers import Retailer


def sshd_retailer(sshd, folder: Path) -> Retailer:
    r = retailer()
    sftp = dataclasses.replace(
        r.sftp,
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        private_key=str(sshd.private_key),
        known_hosts=str(sshd.known_hosts),
        orders_dir=str(folder),
    )
    return dataclasses.replace(r, sftp=sftp)


@pytest.fixture
def folder(sshd) -> Path:
    base = sshd.root / f"plugins{len(list(sshd.root.iterdir()))}"
    base.mkdir()
    (base / "a.json").write_bytes(b'{"x": 1}')
    return base


def test_without_plugins_the_runtime_hands_out_the_sftp_source_itself(sshd, folder, pg_dsn):
    from worker.adapters.sftp import SftpSource

    rt = Runtime(Settings(database_url=pg_dsn))
    try:
        with rt.sftp(sshd_retailer(sshd, folder)) as source:
            assert type(source) is SftpSource
    finally:
        rt.shutdown()


def test_the_fault_plugin_wraps_sources_only_when_armed(sshd, folder, pg_dsn):
    disarmed = Runtime(Settings(database_url=pg_dsn))
    faults.install(disarmed, pattern="")
    assert disarmed.source_wrappers == []
    armed = Runtime(Settings(database_url=pg_dsn))
    faults.install(armed, pattern="*poison*")
    try:
        with armed.sftp(sshd_retailer(sshd, folder)) as source:
            assert isinstance(source, faults.CrashingSource)
            assert source.read(f"{folder}/a.json", 100, 8) == b'{"x": 1}'  # not matching: delegated
            assert [f.name for f in source.list(str(folder))] == ["a.json"]
    finally:
        armed.shutdown()


def test_the_counting_plugin_counts_statements_and_sftp_requests_and_writes_them_at_shutdown(
    sshd, folder, pg_dsn, tmp_path, monkeypatch
):
    monkeypatch.setattr(counting, "COUNTS", {"sql_statements": 0, "sftp_requests": 0})
    rt = Runtime(Settings(database_url=pg_dsn))
    counting.install(rt, folder=str(tmp_path / "stats"))
    with rt.database().connection() as conn:
        conn.execute("SELECT 1")
        with conn.cursor() as cur:
            cur.executemany("SELECT %s", [(1,), (2,)])
    with rt.sftp(sshd_retailer(sshd, folder)) as source:
        assert source.read(f"{folder}/a.json", 100, 8) == b'{"x": 1}'
    rt.shutdown()
    [written] = (tmp_path / "stats").glob("*.json")
    stats = json.loads(written.read_text())
    assert stats["sql_statements"] == 3
    assert stats["sftp_requests"] >= 3  # open, read, close (and the session's own set-up)
    assert stats["peak_rss_kib"] > 0
