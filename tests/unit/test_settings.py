"""Settings from the environment: each variable's default, its parsing, and bad values named at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker.app.settings import FlowerSettings, RetryPolicy, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]

# variable, the Settings attribute (dotted for a retry policy), its default
DEFAULTS: list[tuple[str, str, Any]] = [
    ("TLOGSYNC_DATABASE_URL", "database_url", "postgresql:///tlogsync"),
    ("TLOGSYNC_BROKER_URL", "broker_url", "amqp://guest:guest@127.0.0.1:5672//"),
    ("TLOGSYNC_RETAILERS", "retailers_path", Path("retailers.toml")),
    ("TLOGSYNC_MAX_IN_FLIGHT", "max_in_flight_per_retailer", 2000),
    ("TLOGSYNC_REDISPATCH_AFTER", "redispatch_after_seconds", 900),
    ("TLOGSYNC_MAX_FILE_BYTES", "max_file_bytes", 5242880),
    ("TLOGSYNC_DB_POOL_MAX", "db_pool_max", 8),
    ("TLOGSYNC_WORKER_THREADS", "worker_threads", 8),
    ("TLOGSYNC_DB_STATEMENT_TIMEOUT", "db_statement_timeout_seconds", 110.0),
    ("TLOGSYNC_SFTP_TIMEOUT", "sftp_timeout_seconds", 20.0),
    ("TLOGSYNC_MAX_ATTEMPTS", "max_attempts", 25),
    ("TLOGSYNC_INGEST_MAX_RETRIES", "ingest_retry.max_retries", 8),
    ("TLOGSYNC_INGEST_RETRY_BASE", "ingest_retry.base_seconds", 2.0),
    ("TLOGSYNC_INGEST_RETRY_CAP", "ingest_retry.cap_seconds", 300.0),
    ("TLOGSYNC_SCAN_MAX_RETRIES", "scan_retry.max_retries", 3),
    ("TLOGSYNC_SCAN_RETRY_BASE", "scan_retry.base_seconds", 5.0),
    ("TLOGSYNC_SCAN_RETRY_CAP", "scan_retry.cap_seconds", 60.0),
    ("TLOGSYNC_ROUTING_MAX_RETRIES", "routing_retry.max_retries", 10),
    ("TLOGSYNC_ROUTING_RETRY_BASE", "routing_retry.base_seconds", 1.0),
    ("TLOGSYNC_ROUTING_RETRY_CAP", "routing_retry.cap_seconds", 120.0),
    ("TLOGSYNC_LOG_LEVEL", "log_level", "INFO"),
    ("TLOGSYNC_LOG_FORMAT", "log_format", "text"),
    ("TLOGSYNC_MAX_TASKS_PER_CHILD", "max_tasks_per_child", 20000),
    ("TLOGSYNC_PREFETCH", "prefetch", 1),
    ("TLOGSYNC_SENT_EVENTS", "sent_events", False),
    ("TLOGSYNC_AUDIT_DIR", "audit_dir", Path("audit-reports")),
]

# variable, a value as an operator would write it, what the attribute becomes
VALUES: list[tuple[str, str, Any]] = [
    ("TLOGSYNC_DATABASE_URL", "postgresql://db.example/tl", "postgresql://db.example/tl"),
    ("TLOGSYNC_BROKER_URL", "amqp://u:p@mq:5672/v", "amqp://u:p@mq:5672/v"),
    ("TLOGSYNC_RETAILERS", "/etc/tlogsync/retailers.toml", Path("/etc/tlogsync/retailers.toml")),
    ("TLOGSYNC_MAX_IN_FLIGHT", "50", 50),
    ("TLOGSYNC_REDISPATCH_AFTER", "0", 0),
    ("TLOGSYNC_MAX_FILE_BYTES", "1024", 1024),
    ("TLOGSYNC_DB_POOL_MAX", "1", 1),
    ("TLOGSYNC_WORKER_THREADS", "3", 3),
    ("TLOGSYNC_DB_STATEMENT_TIMEOUT", "2.5", 2.5),
    ("TLOGSYNC_SFTP_TIMEOUT", "2.5", 2.5),
    ("TLOGSYNC_MAX_ATTEMPTS", "3", 3),
    ("TLOGSYNC_INGEST_MAX_RETRIES", "0", 0),
    ("TLOGSYNC_INGEST_RETRY_BASE", "0.5", 0.5),
    ("TLOGSYNC_INGEST_RETRY_CAP", "2", 2.0),
    ("TLOGSYNC_SCAN_MAX_RETRIES", "30", 30),
    ("TLOGSYNC_SCAN_RETRY_BASE", "0", 0.0),
    ("TLOGSYNC_SCAN_RETRY_CAP", "7.5", 7.5),
    ("TLOGSYNC_ROUTING_MAX_RETRIES", "1", 1),
    ("TLOGSYNC_ROUTING_RETRY_BASE", "0.25", 0.25),
    ("TLOGSYNC_ROUTING_RETRY_CAP", "9", 9.0),
    ("TLOGSYNC_LOG_LEVEL", "warning", "WARNING"),
    ("TLOGSYNC_LOG_LEVEL", "DEBUG", "DEBUG"),
    ("TLOGSYNC_LOG_FORMAT", "JSON", "json"),
    ("TLOGSYNC_LOG_FORMAT", "text", "text"),
    ("TLOGSYNC_MAX_TASKS_PER_CHILD", "0", 0),
    ("TLOGSYNC_PREFETCH", "4", 4),
    ("TLOGSYNC_SENT_EVENTS", "1", True),
    ("TLOGSYNC_SENT_EVENTS", "0", False),
    ("TLOGSYNC_AUDIT_DIR", "/var/lib/tlogsync/audit", Path("/var/lib/tlogsync/audit")),
]

# variable, a value we cannot use, the reason given after `NAME='value': `
BAD: list[tuple[str, str, str]] = [
    ("TLOGSYNC_MAX_IN_FLIGHT", "many", "not an integer"),
    ("TLOGSYNC_MAX_IN_FLIGHT", "0", "must be at least 1"),
    ("TLOGSYNC_REDISPATCH_AFTER", "15m", "not an integer"),
    ("TLOGSYNC_REDISPATCH_AFTER", "-1", "must be at least 0"),
    ("TLOGSYNC_MAX_FILE_BYTES", "5MB", "not an integer"),
    ("TLOGSYNC_MAX_FILE_BYTES", "0", "must be at least 1"),
    ("TLOGSYNC_DB_POOL_MAX", "4.0", "not an integer"),
    ("TLOGSYNC_DB_POOL_MAX", "0", "must be at least 1"),
    ("TLOGSYNC_SFTP_TIMEOUT", "soon", "not a number"),
    ("TLOGSYNC_SFTP_TIMEOUT", "0", "must be more than 0"),
    ("TLOGSYNC_SFTP_TIMEOUT", "-3", "must be more than 0"),
    ("TLOGSYNC_SFTP_TIMEOUT", "inf", "not a finite number"),
    ("TLOGSYNC_MAX_ATTEMPTS", "abc", "not an integer"),
    ("TLOGSYNC_MAX_ATTEMPTS", "0", "must be at least 1"),
    ("TLOGSYNC_INGEST_MAX_RETRIES", "-2", "must be at least 0"),
    ("TLOGSYNC_INGEST_RETRY_BASE", "two", "not a number"),
    ("TLOGSYNC_INGEST_RETRY_CAP", "-1", "must be at least 0"),
    ("TLOGSYNC_SCAN_MAX_RETRIES", "x", "not an integer"),
    ("TLOGSYNC_SCAN_RETRY_BASE", "nan", "not a finite number"),
    ("TLOGSYNC_SCAN_RETRY_CAP", "1m", "not a number"),
    ("TLOGSYNC_ROUTING_MAX_RETRIES", "1.5", "not an integer"),
    ("TLOGSYNC_ROUTING_RETRY_BASE", "-0.5", "must be at least 0"),
    ("TLOGSYNC_ROUTING_RETRY_CAP", "?", "not a number"),
    ("TLOGSYNC_LOG_LEVEL", "LOUD", "not one of CRITICAL, FATAL, ERROR, WARN, WARNING, INFO, DEBUG"),
    ("TLOGSYNC_LOG_FORMAT", "xml", "not one of text, json"),
    ("TLOGSYNC_MAX_TASKS_PER_CHILD", "-1", "must be at least 0"),
    ("TLOGSYNC_PREFETCH", "one", "not an integer"),
    ("TLOGSYNC_PREFETCH", "-1", "must be at least 0"),
    ("TLOGSYNC_SENT_EVENTS", "true", "must be 0 or 1"),
]


def attribute(settings: object, dotted: str) -> Any:
    for name in dotted.split("."):
        settings = getattr(settings, name)
    return settings


def test_every_tlogsync_variable_of_the_settings_has_a_default_test_and_a_value_test():
    assert {v for v, _, _ in DEFAULTS} == {v for v, _, _ in VALUES}


@pytest.mark.parametrize(("variable", "name", "default"), DEFAULTS)
def test_an_unset_variable_gives_the_production_default(variable: str, name: str, default: Any):
    assert attribute(Settings.from_env({}), name) == default
    assert attribute(Settings(), name) == default


@pytest.mark.parametrize(("variable", "name", "default"), DEFAULTS)
def test_an_empty_variable_gives_the_default_too(variable: str, name: str, default: Any):
    assert attribute(Settings.from_env({variable: ""}), name) == default


@pytest.mark.parametrize(("variable", "raw", "expected"), VALUES)
def test_a_variable_sets_its_field(variable: str, raw: str, expected: Any):
    name = next(n for v, n, _ in DEFAULTS if v == variable)
    assert attribute(Settings.from_env({variable: raw}), name) == expected


@pytest.mark.parametrize(("variable", "raw", "reason"), BAD)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(variable: str, raw: str, reason: str):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: raw})
    assert str(caught.value) == f"{variable}={raw!r}: {reason}"


def test_the_retry_policies_are_read_as_a_whole():
    settings = Settings.from_env({"TLOGSYNC_SCAN_MAX_RETRIES": "4", "TLOGSYNC_SCAN_RETRY_CAP": "10"})
    assert settings.scan_retry == RetryPolicy(4, 5.0, 10.0)
    assert settings.ingest_retry == RetryPolicy(8, 2.0, 300.0)


def test_flower_settings_default_to_unset_and_never_show_the_password():
    assert FlowerSettings.from_env({}) == FlowerSettings(None, None, None)
    flower = FlowerSettings.from_env(
        {
            "FLOWER_USER": "ops",
            "FLOWER_PASSWORD": "s3cret-pw",
            "TLOGSYNC_BROKER_API": "http://guest:guest@mq:15672/api/",
        }
    )
    assert (flower.user, flower.password, flower.broker_api) == ("ops", "s3cret-pw", "http://guest:guest@mq:15672/api/")
    assert "s3cret-pw" not in repr(flower) and "guest:guest" not in repr(flower)
    assert FlowerSettings.from_env({"FLOWER_USER": "", "FLOWER_PASSWORD": ""}).user is None


# ------------------------------------------------------------ the entry points stop with one line, exit 2


def _run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    "command",
    [
        ("worker.cli", "retailers"),
        ("celery", "-A", "worker", "worker", "--pool", "solo"),
        ("celery", "-A", "worker", "beat"),
    ],
    ids=["cli", "worker", "beat"],
)
def test_a_bad_value_stops_start_up_with_one_line_naming_the_variable(command: tuple[str, ...]):
    done = _run(*command, TLOGSYNC_MAX_ATTEMPTS="abc")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == "tlogsync: TLOGSYNC_MAX_ATTEMPTS='abc': not an integer"
    assert "Traceback" not in done.stderr + done.stdout


def test_a_bad_log_format_stops_the_worker_before_it_connects():
    done = _run(
        "celery",
        "-A",
        "worker",
        "worker",
        "--pool",
        "solo",
        TLOGSYNC_LOG_FORMAT="yaml",
        TLOGSYNC_BROKER_URL="amqp://guest:guest@127.0.0.1:1//",
    )
    assert done.returncode == 2
    assert "tlogsync: TLOGSYNC_LOG_FORMAT='yaml': not one of text, json" in done.stderr


def test_flowers_secrets_can_come_from_files_never_from_both_places(tmp_path):
    password, api = tmp_path / "password", tmp_path / "api"
    password.write_text("s3cret\n")
    api.write_text("http://guest:pw@127.0.0.1:15672/api/")
    flower = FlowerSettings.from_env(
        {"FLOWER_USER": "ops", "FLOWER_PASSWORD_FILE": str(password), "TLOGSYNC_BROKER_API_FILE": str(api)}
    )
    assert (flower.user, flower.password, flower.broker_api) == (
        "ops",
        "s3cret",
        "http://guest:pw@127.0.0.1:15672/api/",
    )
    with pytest.raises(SettingsError, match="FLOWER_PASSWORD_FILE=.*FLOWER_PASSWORD is set too"):
        FlowerSettings.from_env({"FLOWER_PASSWORD": "x", "FLOWER_PASSWORD_FILE": str(password)})
    with pytest.raises(SettingsError, match="cannot be read") as refused:
        FlowerSettings.from_env({"FLOWER_PASSWORD_FILE": str(tmp_path / "missing")})
    assert "s3cret" not in str(refused.value)
