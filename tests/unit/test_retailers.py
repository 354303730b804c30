"""The retailers file: valid files load, bad ones stop start-up naming the retailer and the key."""

from __future__ import annotations

import pytest

from tests.unit.helpers import retailer
from worker.core.retailers import ConfigError, load_retailers, parse_retailers

EXAMPLE = """
[retailers.acme]
product_store_id = "ACME_STORE"
currency = "USD"
order_master = true             # store in-store orders (see DOMAIN.md)
may_split = true
schedule = "*/5 * * * *"        # crontab for the scan; or poll_seconds = 60
[retailers.acme.sftp]
host = "127.0.0.1"
port = 22
username = "acme"
private_key = "/run/secrets/acme_key"   # or password_env = "ACME_SFTP_PASSWORD"
known_hosts = "/etc/tlogsync/known_hosts"  # host keys are always verified
orders_dir = "/outbound/orders"          # inbound TLog files
archive_dir = "/outbound/orders/archive"
error_dir = "/outbound/orders/error"
pattern = "*.json"
min_age_seconds = 5              # skip files that may still be written
"""


def test_the_documented_example_loads(tmp_path):
    path = tmp_path / "retailers.toml"
    path.write_text(EXAMPLE)
    acme = load_retailers(path)["acme"]
    assert acme.schedule == "*/5 * * * *" and acme.poll_seconds is None
    assert acme.sftp.min_age_seconds == 5 and acme.sftp.pattern == "*.json"
    assert acme.payment_methods["Cash"] == "CASH"


def test_the_example_in_the_configuration_docs_loads(tmp_path):
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    path = tmp_path / "retailers.toml"
    path.write_text(docs.split("```toml\n", 1)[1].split("```", 1)[0])
    acme = load_retailers(path)["acme"]
    assert acme.schedule == "*/5 * * * *" and acme.sftp.orders_dir == "/outbound/orders"
    assert [rule.name for rule in acme.brokering_rules] == ["nearby stores", "distribution centers"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"currency": "dollars"}, "retailer 'acme': currency: must be ISO 4217"),
        ({"colour": "red"}, "retailer 'acme': colour: Unknown field."),
        ({"poll_seconds": 60}, "retailer 'acme': schedule: set exactly one of schedule (crontab) or poll_seconds"),
        ({"schedule": "every five minutes"}, "retailer 'acme': schedule: must be a crontab of five fields"),
        ({"order_master": "maybe"}, "retailer 'acme': order_master: Not a valid boolean."),
    ],
)
def test_a_bad_key_names_the_retailer_and_the_key(change, message):
    table = {
        "product_store_id": "A",
        "currency": "USD",
        "order_master": True,
        "schedule": "*/5 * * * *",
        "sftp": {
            "host": "h",
            "username": "u",
            "private_key": "/k",
            "known_hosts": "/kh",
            "orders_dir": "/o",
            "archive_dir": "/a",
            "error_dir": "/e",
        },
    }
    table.update(change)
    with pytest.raises(ConfigError) as info:
        parse_retailers({"retailers": {"acme": table}})
    assert message in str(info.value)


def test_sftp_errors_name_the_nested_key():
    table = {
        "product_store_id": "A",
        "currency": "USD",
        "order_master": True,
        "poll_seconds": 5,
        "sftp": {
            "host": "h",
            "username": "u",
            "known_hosts": "/kh",
            "orders_dir": "relative",
            "archive_dir": "/a",
            "error_dir": "/e",
            "port": 70000,
        },
    }
    with pytest.raises(ConfigError) as info:
        parse_retailers({"retailers": {"acme": table}})
    text = str(info.value)
    assert "sftp.orders_dir: must be an absolute path" in text
    assert "sftp.port" in text


def test_missing_credentials_are_named():
    table = {
        "product_store_id": "A",
        "currency": "USD",
        "order_master": True,
        "poll_seconds": 5,
        "sftp": {
            "host": "h",
            "username": "u",
            "known_hosts": "/kh",
            "orders_dir": "/o",
            "archive_dir": "/a",
            "error_dir": "/e",
        },
    }
    with pytest.raises(ConfigError, match="sftp.private_key: set private_key or password_env"):
        parse_retailers({"retailers": {"acme": table}})


def test_bad_toml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_retailers(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[retailers.acme\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_retailers(bad)


def test_retailer_ids_are_checked():
    with pytest.raises(ConfigError, match="retailer id"):
        parse_retailers({"retailers": {"bad id!": {}}})


def test_defaults():
    r = retailer()
    assert r.enabled and r.in_store_shipment_method == "POS_COMPLETED" and r.channel == "POS_SALES_CHANNEL"
