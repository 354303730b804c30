"""Every `tlogsync` command that names a retailer refuses an unknown one the same way, before any I/O."""

from __future__ import annotations

import pytest

from worker.cli import main

RETAILERS = """[retailers.acme]
product_store_id = "P"
currency = "USD"
order_master = true
poll_seconds = 60
[retailers.acme.sftp]
host = "127.0.0.1"
username = "u"
private_key = "/k"
known_hosts = "/kh"
orders_dir = "/in"
archive_dir = "/in/archive"
error_dir = "/in/error"
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "nobody"],
        ["broker", "nobody"],
        ["facilities", "load", "nobody", "facilities.csv"],
        ["inventory", "load", "nobody", "inventory.csv"],
        ["replay-file", "nobody", "a.json"],
        ["audit", "nobody", "--date", "2024-01-01"],
    ],
    ids=lambda argv: argv[0],
)
def test_an_unknown_retailer_is_refused_naming_the_known_ones(argv, tmp_path, monkeypatch, capsys):
    path = tmp_path / "retailers.toml"
    path.write_text(RETAILERS)
    monkeypatch.setenv("TLOGSYNC_RETAILERS", str(path))
    monkeypatch.setenv("TLOGSYNC_DATABASE_URL", "postgresql://127.0.0.1:1/none")  # never reached
    assert main(argv) == 1  # not a usage error (2): the command line was right, the retailer is not configured
    assert "unknown retailer 'nobody'; known: acme" in capsys.readouterr().err
