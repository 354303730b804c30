"""docker-compose.yml cannot run here (no Docker engine): parse it and check it against the code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from worker.adapters.queues import WORK_QUEUES
from worker.cli.main import command_line_is_valid
from worker.core.retailers import load_retailers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_stack_has_every_service(compose):
    assert {"postgres", "rabbitmq", "sftp", "migrate", "worker", "beat", "flower", "metrics"} <= set(
        compose["services"]
    )
    assert "management" in compose["services"]["rabbitmq"]["image"]


def test_workers_consume_every_work_queue_with_events(compose):
    command = compose["services"]["worker"]["command"]
    queues = command[command.index("-Q") + 1].split(",")
    assert sorted(queues) == sorted(WORK_QUEUES)
    assert "-E" in command


def test_migrate_runs_a_real_cli_command(compose):
    command = compose["services"]["migrate"]["command"]
    assert command[0] == "tlogsync"
    command_line_is_valid(command[1:])


def test_flower_has_auth_and_the_broker_api(compose):
    flower = compose["services"]["flower"]
    command_line_is_valid(flower["command"][1:])  # a real `tlogsync flower` command line
    assert flower["environment"]["FLOWER_PASSWORD"].startswith("${FLOWER_PASSWORD:?")
    assert flower["environment"]["TLOGSYNC_BROKER_API"].startswith("http://")


def test_metrics_runs_a_real_cli_command(compose):
    command = compose["services"]["metrics"]["command"]
    assert command[:2] == ["tlogsync", "metrics"]
    command_line_is_valid(command[1:])


def test_referenced_files_exist_and_the_retailers_file_is_valid(compose):
    assert (ROOT / "ops/docker/Dockerfile").exists()
    assert (ROOT / "ops/docker/make-keys.sh").exists() and (ROOT / "ops/docker/sftp-keys.sh").exists()
    retailers = load_retailers(ROOT / "ops/docker/retailers.toml")
    assert retailers["acme"].sftp.host == "sftp"
    env = compose["x-app"]["environment"]
    assert set(env) == {"TLOGSYNC_DATABASE_URL", "TLOGSYNC_BROKER_URL", "TLOGSYNC_RETAILERS"}


def test_docker_compose_config_accepts_it_where_available():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed here; the file is checked by parsing above")
    done = subprocess.run(
        [docker, "compose", "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"FLOWER_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
