"""Safe defaults: no secret ever on a command line (where `ps`, `docker inspect` and `kubectl describe` show it),
admin ports published on loopback unless told otherwise, the demo on its own RabbitMQ vhost."""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml

from worker.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
# What a secret on a command line looks like: credentials in a URL, or an option or assignment naming one.
SECRET_ON_ARGV = re.compile(
    r"://[^/\s:@]+:[^/\s@]+@|--(password|passwd|secret|token|api-?key|broker[-_]api|basic[-_]auth|auth)\b"
    r"|\b(PASSWORD|SECRET|TOKEN|BROKER_URL|DATABASE_URL|BROKER_API)\w*=",
    re.IGNORECASE,
)
SECRET_OPTION = re.compile(r"pass|secret|token|key|auth|dsn|url|api|credential", re.IGNORECASE)


def command_lines() -> list[tuple[str, list[str]]]:
    """Every command line of the compose stack, the Kubernetes manifests and the Dockerfile."""
    found: list[tuple[str, list[str]]] = []
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for key in ("command", "entrypoint"):
            value = service.get(key)
            if value:
                found.append((f"compose {name}.{key}", value if isinstance(value, list) else value.split()))
    for path in sorted((ROOT / "ops" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or "spec" not in doc:
                continue
            spec = doc["spec"].get("template", {}).get("spec") or doc["spec"].get("jobTemplate", {}).get("spec", {})
            spec = spec.get("template", {}).get("spec", spec) if "template" in spec else spec
            for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
                line = [*container.get("command", []), *container.get("args", [])]
                found.append((f"{path.name} {container['name']}", [str(a) for a in line]))
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    exec_ = container.get(probe, {}).get("exec")
                    if exec_:
                        found.append((f"{path.name} {container['name']} {probe}", exec_["command"]))
                for hook in ("preStop", "postStart"):
                    exec_ = container.get("lifecycle", {}).get(hook, {}).get("exec")
                    if exec_:
                        found.append((f"{path.name} {container['name']} {hook}", exec_["command"]))
    for line in (ROOT / "ops" / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith(("CMD", "ENTRYPOINT")):
            found.append(("Dockerfile", [line]))
    return found


def test_no_command_line_of_the_stack_or_the_manifests_holds_a_secret():
    lines = command_lines()
    assert len(lines) >= 10, lines  # the collection found the workers, beat, flower, metrics, migrate
    for where, argv in lines:
        joined = " ".join(argv)
        assert not SECRET_ON_ARGV.search(joined), f"{where}: a secret on the command line: {joined}"


def test_no_tlogsync_option_takes_a_secret():
    """Secrets come from the environment or files only: no option of any command could put one on argv."""

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")
            return
        for param in command.params:
            for opt in getattr(param, "opts", []):
                assert not SECRET_OPTION.search(opt), f"{path} {opt}: an option that would take a secret"

    walk(cli, "tlogsync")


def test_compose_publishes_every_admin_port_on_loopback_unless_told_otherwise():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published[name] = port
            assert str(port).startswith("${TLOGSYNC_PUBLISH_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"
    assert {"rabbitmq", "flower", "metrics"} <= set(published)
    assert "TLOGSYNC_PUBLISH_ADDRESS" in (ROOT / "docs" / "operations.md").read_text()


def test_the_demo_runs_on_a_vhost_of_its_own():
    from worker.demo.vhost import DEFAULT_VHOST

    assert DEFAULT_VHOST not in ("/", "")
    source = (ROOT / "worker" / "demo" / "run.py").read_text()
    assert "demo_broker_url()" in source and "TLOGSYNC_BROKER_URL=broker" in source
