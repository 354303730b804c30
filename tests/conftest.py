"""Shared fixtures: a PostgreSQL database and a RabbitMQ vhost per test session, a real OpenSSH
sshd on a free loopback port, retailers made per test, and real Celery workers.

Services skip locally only when truly absent; under CI (CI=true) a missing service fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker.demo.procs import stop_group
from worker.demo.sshd import SSHD, Sshd, port_open, start_sshd

SESSION = f"t{os.getpid()}_{secrets.token_hex(3)}"
SESSION_DIR = Path(tempfile.mkdtemp(prefix=f"tlogsync-{SESSION}-"))
PG_BASE = os.environ.get("TLOGSYNC_TEST_PG", "postgresql://127.0.0.1:5432")
DB_NAME = f"tlogsync_{SESSION}"
VHOST = f"tlogsync_{SESSION}"
RETAILERS_PATH = SESSION_DIR / "retailers.toml"

# Set before anything imports worker.*: the worker runtime reads its settings from the environment.
os.environ["TLOGSYNC_DATABASE_URL"] = f"{PG_BASE}/{DB_NAME}"
os.environ["TLOGSYNC_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
os.environ["TLOGSYNC_RETAILERS"] = str(RETAILERS_PATH)
os.environ.setdefault("TLOGSYNC_REDISPATCH_AFTER", "900")
# The daily audit writes its reports here; by default it would write audit-reports/ under the cwd (the repo).
os.environ["TLOGSYNC_AUDIT_DIR"] = str(SESSION_DIR / "audit-reports")

IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, what: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required in CI")
        pytest.skip(f"{what} is not available here")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


# ----------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    need(port_open("127.0.0.1", 5432), "PostgreSQL on 127.0.0.1:5432")
    from worker.adapters.postgres.migrate import drop_database, ensure_database, migrate

    dsn = os.environ["TLOGSYNC_DATABASE_URL"]
    assert ensure_database(dsn), f"{DB_NAME} exists already"
    migrate(dsn)
    yield dsn
    drop_database(dsn)


@pytest.fixture
def db(pg_dsn: str) -> Iterator[object]:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def database(pg_dsn: str) -> Iterator[object]:
    from worker.adapters.postgres.pool import open_pool

    with open_pool(pg_dsn, max_size=8, check=True) as database:
        yield database


@pytest.fixture(scope="session")
def ledger(database: object) -> object:
    from worker.adapters.postgres.ledger import PgFileLedger

    return PgFileLedger(database)  # type: ignore[arg-type]


# ----------------------------------------------------------------- RabbitMQ


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    need(port_open("127.0.0.1", 5672), "RabbitMQ on 127.0.0.1:5672")
    need(shutil.which("rabbitmqctl") is not None, "rabbitmqctl (to make a test vhost)")
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", VHOST], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    yield os.environ["TLOGSYNC_BROKER_URL"]
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], capture_output=True)


@contextmanager
def vhost_env(suffix: str, **extra: str) -> Iterator[dict[str, str]]:
    """An environment whose broker is a RabbitMQ vhost of its own: workers started with it are the only
    consumers of their queues (the session's shared worker lives in another vhost)."""
    vhost = f"tlogsync_{SESSION}_{suffix}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield dict(os.environ, TLOGSYNC_BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost}", **extra)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


# ----------------------------------------------------------------- OpenSSH sshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    need(SSHD.exists(), "OpenSSH sshd (apt-get install openssh-server)")
    server = start_sshd(SESSION_DIR / "sshd")
    yield server
    server.stop()


# ----------------------------------------------------------------- retailers


@dataclass
class RetailerDirs:
    retailer_id: str
    root: Path
    inbound: Path
    archive: Path
    error: Path
    options: dict[str, object] = field(default_factory=dict)

    def put(self, name: str, data: bytes, age: float = 60.0) -> Path:
        """Write an inbound file, its mtime `age` seconds in the past (old enough for min_age)."""
        path = self.inbound / name
        path.write_bytes(data)
        then = time.time() - age
        os.utime(path, (then, then))
        return path

    def inbound_names(self) -> list[str]:
        """The regular files left in the inbound folder (not a symlink, whatever it points at)."""
        return sorted(p.name for p in self.inbound.iterdir() if p.is_file() and not p.is_symlink())


_RETAILERS: dict[str, RetailerDirs] = {}


def render_retailers(sshd: Sshd, retailers: Iterable[RetailerDirs] | None = None) -> str:
    """The retailers file of these retailers (default: every retailer made in this session)."""
    out = []
    for r in _RETAILERS.values() if retailers is None else retailers:
        opts = {
            "product_store_id": "DV_STORE",
            "currency": "USD",
            "order_master": True,
            "may_split": True,
            **({} if "schedule" in r.options else {"poll_seconds": 3600}),
            **r.options,
        }
        lines = [f"[retailers.{r.retailer_id}]"]
        lines += [f"{k} = {_toml(v)}" for k, v in opts.items() if k not in ("sftp", "brokering")]
        lines += [
            f"[retailers.{r.retailer_id}.sftp]",
            f'host = "{sshd.host}"',
            f"port = {sshd.port}",
            f'username = "{sshd.username}"',
            f'private_key = "{sshd.private_key}"',
            f'known_hosts = "{sshd.known_hosts}"',
            f'orders_dir = "{r.inbound}"',
            f'archive_dir = "{r.archive}"',
            f'error_dir = "{r.error}"',
            "min_age_seconds = 2",
        ]
        lines += [f"{k} = {_toml(v)}" for k, v in dict(r.options.get("sftp", {})).items()]  # type: ignore[call-overload]
        if r.options.get("brokering"):  # scalar keys only, e.g. every_seconds
            lines.append(f"[retailers.{r.retailer_id}.brokering]")
            lines += [f"{k} = {_toml(v)}" for k, v in dict(r.options["brokering"]).items()]  # type: ignore[call-overload]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def write_retailers(sshd: Sshd) -> None:
    tmp = RETAILERS_PATH.with_suffix(".tmp")
    tmp.write_text(render_retailers(sshd))
    tmp.replace(RETAILERS_PATH)  # atomic: a worker never reads half a file


@pytest.fixture
def make_retailer(sshd: Sshd, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Create a retailer with its own SFTP folders, unique to this test, and publish it to the workers."""

    def make(**options: object) -> RetailerDirs:
        retailer_id = f"r{len(_RETAILERS)}_{secrets.token_hex(3)}"
        root = sshd.root / retailer_id
        inbound = root / "inbound"
        dirs = RetailerDirs(retailer_id, root, inbound, inbound / "archive", inbound / "error", options)
        for d in (dirs.archive, dirs.error):
            d.mkdir(parents=True)
        _RETAILERS[retailer_id] = dirs
        write_retailers(sshd)
        return dirs

    return make


# ----------------------------------------------------------------- Celery workers


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_handle: object = None

    def stop(self, sig: int = 15) -> None:
        stop_group(self.process, timeout=30, sig=sig)
        if self.log_handle is not None:
            self.log_handle.close()  # type: ignore[attr-defined]


def start_worker(
    name: str,
    queues: str | None = None,
    concurrency: int = 2,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    app: str = "worker",
) -> WorkerProcess:
    """A real worker; app is the module `celery -A` loads (the fault suite's has the fault plugin)."""
    from worker.adapters.queues import WORK_QUEUES

    log = SESSION_DIR / f"worker-{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-Q",
        queues or ",".join(WORK_QUEUES),
        "-c",
        str(concurrency),
        "--hostname",
        f"{name}@{SESSION}",
        "-l",
        "INFO",
        "--without-mingle",
        "--without-gossip",
        *(extra or []),
    ]
    handle = open(log, "wb")  # noqa: SIM115 - closed by WorkerProcess.stop
    proc = subprocess.Popen(
        cmd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env or os.environ,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    wp = WorkerProcess(name, proc, log, handle)
    try:
        _wait_ready(wp, broker=(env or os.environ)["TLOGSYNC_BROKER_URL"])
    except BaseException:
        wp.stop(9)  # never leave a worker behind when it did not come up
        raise
    return wp


def _wait_ready(wp: WorkerProcess, broker: str, timeout: float = 60) -> None:
    """Ready when the worker says so in its log (it prints '<name> ready.' once it consumes)."""
    deadline = time.monotonic() + timeout
    marker = f"{wp.name}@{SESSION} ready."
    while time.monotonic() < deadline:
        if wp.process.poll() is not None:
            raise RuntimeError(f"worker {wp.name} exited: {wp.log.read_text()[-3000:]}")
        if marker in wp.log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"worker {wp.name} not ready: {wp.log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def celery_worker(pg_dsn: str, broker_url: str, sshd: Sshd) -> Iterator[WorkerProcess]:
    """One worker (prefork, 2 processes) on every work queue, shared by the end-to-end tests."""
    if not RETAILERS_PATH.exists():
        write_retailers(sshd) if _RETAILERS else RETAILERS_PATH.write_text(_placeholder_retailers(sshd))
    wp = start_worker("main")
    yield wp
    wp.stop()


def _placeholder_retailers(sshd: Sshd) -> str:
    placeholder = SESSION_DIR / "placeholder"
    for sub in ("in", "in/archive", "in/error"):
        (placeholder / sub).mkdir(parents=True, exist_ok=True)
    return f"""[retailers.placeholder]
product_store_id = "P"
currency = "USD"
order_master = true
poll_seconds = 3600
[retailers.placeholder.sftp]
host = "{sshd.host}"
port = {sshd.port}
username = "{sshd.username}"
private_key = "{sshd.private_key}"
known_hosts = "{sshd.known_hosts}"
orders_dir = "{placeholder}/in"
archive_dir = "{placeholder}/in/archive"
error_dir = "{placeholder}/in/error"
"""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's table: files, duplicates, losses (all must be 0) and time to drain, per fault."""
    harness = sys.modules.get("tests.faults.harness")
    rows = getattr(harness, "REPORT", None)
    if not rows:
        return
    terminalreporter.section("fault injection")
    terminalreporter.write_line(f"{'fault':<44} {'files':>6} {'orders':>7} {'dupes':>6} {'losses':>7} {'drain s':>8}")
    for r in rows:
        terminalreporter.write_line(
            f"{r['fault']:<44} {r['files']:>6} {r['orders']:>7} {r['duplicates']:>6} {r['losses']:>7} {r['drain_s']:>8}"
        )
