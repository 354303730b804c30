"""Dependencies point inward: core <- services <- adapters <- app/cli/monitoring/demo; tasks use app and
services. Production (worker/ outside worker/demo, and tasks/) imports nothing from tests, ops or the demo,
and reads no environment variable outside worker/app/settings.py. Checked on the source (AST), every
import counted, also those inside functions."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("app", "core", "services", "adapters", "cli", "monitoring")
DRIVERS = ("celery", "kombu", "paramiko", "psycopg", "psycopg_pool", "asyncssh")

# Forbidden everywhere in production.
NOT_PRODUCTION = ("tests", "ops", "worker.demo")
# Forbidden per layer, besides NOT_PRODUCTION.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": (*DRIVERS, "tasks", "worker.app", "worker.services", "worker.adapters", "worker.cli", "worker.monitoring"),
    "services": (
        "celery",
        "kombu",
        "paramiko",
        "psycopg",
        "psycopg_pool",
        "asyncssh",
        "tasks",
        "worker.app",
        "worker.adapters",
        "worker.cli",
        "worker.monitoring",
    ),
    "adapters": ("tasks", "worker.app", "worker.cli", "worker.monitoring"),
}
# The `tlogsync demo` command runs the demo: the one production import of worker.demo.
ALLOWED = {("worker/cli/setup.py", "worker.demo.run")}

# Reading the environment: only Settings does, besides these.
ENVIRONMENT_READERS = {
    "worker/app/settings.py",
    "worker/adapters/sftp.py",  # a retailer's password_env: the secret, read when connecting, never kept
    "worker/cli/flower.py",  # `tlogsync flower` hands its environment on to Flower (exec)
}


def production_files() -> Iterator[Path]:
    for path in sorted([*(ROOT / "worker").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]):
        if "demo" not in path.relative_to(ROOT).parts:
            yield path


def layer_of(path: Path) -> str | None:
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "worker" and len(parts) > 2 and parts[1] in LAYERS else None


def imports(source: str, package: str) -> Iterator[str]:
    """The module of every import in source: `import a.b` gives a.b, `from a import b` gives a, or a.b when
    a itself is allowed and b may be a module (`from worker import demo`)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if base in ("worker", "ops", "tests"))


def file_imports(path: Path) -> Iterator[str]:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    return imports(path.read_text(encoding="utf-8"), package)


def matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations() -> set[tuple[str, str]]:
    found = set()
    for path in production_files():
        name = str(path.relative_to(ROOT))
        forbidden = NOT_PRODUCTION + FORBIDDEN.get(layer_of(path) or "", ())
        for module in file_imports(path):
            if matches(module, forbidden) and (name, module) not in ALLOWED:
                found.add((name, module))
    return found


def test_production_imports_follow_the_layers():
    found = violations()
    assert found == set(), "imports against the layers (file, module)"


def test_the_check_sees_the_imports_it_must_refuse():
    source = (
        "import paramiko.client\nfrom tests.support import faults\nfrom ..adapters import sftp\n"
        "def f():\n    from ops.bench import counting\n    from worker import demo\n"
    )
    found = {m for m in imports(source, "worker.core") if matches(m, NOT_PRODUCTION + FORBIDDEN["core"])}
    assert found == {"paramiko.client", "tests.support", "worker.adapters", "ops.bench", "worker.demo"}
    assert not any(matches(m, FORBIDDEN["core"]) for m in imports("from worker.core import errors\n", "worker.core"))


def reads_environment(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(a.name in ("environ", "getenv", "environb") for a in node.names)
        ):
            return True
    return False


def test_only_settings_read_the_environment():
    readers = {str(p.relative_to(ROOT)) for p in production_files() if reads_environment(p)}
    assert readers <= ENVIRONMENT_READERS
