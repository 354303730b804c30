"""Services the fault suite owns, so that it may restart them mid-batch without touching anyone else's: a
throw-away RabbitMQ node and a throw-away PostgreSQL cluster, each on free loopback ports under a temporary
folder, removed afterwards. The machine's own RabbitMQ and PostgreSQL serve other test runs meanwhile."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from worker.demo.sshd import free_port, port_open


class Unavailable(RuntimeError):
    """The service cannot be started here; the message says why."""


def _wait(condition, what: str, timeout: float, log: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise Unavailable(f"{what} within {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


# ----------------------------------------------------------------------------------------------- RabbitMQ


def _rabbitmq_bin(name: str) -> str | None:
    # Debian's /usr/sbin wrappers switch to the rabbitmq user (dropping our environment's home and cookie);
    # the scripts they wrap run as whoever calls them.
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else shutil.which(name)


class OwnRabbitMQ:
    """One RabbitMQ node of our own: its own name, ports, cookie, database and logs; no plugins."""

    def __init__(self, base: Path):
        server, ctl = _rabbitmq_bin("rabbitmq-server"), _rabbitmq_bin("rabbitmqctl")
        if server is None or ctl is None:
            raise Unavailable("rabbitmq-server and rabbitmqctl are not installed")
        self.server, self.ctl_path = server, ctl
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"tlogfault{secrets.token_hex(3)}@localhost"
        cookie = base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")  # not the machine's /etc/rabbitmq/rabbitmq-env.conf
        self.env = dict(
            os.environ,
            HOME=str(base),  # the cookie, for the node and for rabbitmqctl
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        self.log = base / "log" / f"{self.node}.log"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.ctl_path, "-n", self.node, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, timeout: float = 120) -> None:
        done = subprocess.run([self.server, "-detached"], env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise Unavailable(f"rabbitmq-server -detached: {done.stdout}{done.stderr}")
        # the AMQP listener opens last, once the node has booted and recovered its durable queues
        _wait(lambda: port_open("127.0.0.1", self.port), f"no AMQP listener on {self.port}", timeout, self.log)

    def _pid(self) -> int | None:
        try:
            return int(Path(self.env["RABBITMQ_PID_FILE"]).read_text().strip())
        except (OSError, ValueError):
            return None

    def _alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """The whole node, its Erlang VM too, stopped cleanly (SIGTERM), as `systemctl restart` would."""
        pid = self._pid()
        if pid is None or not self._alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        try:
            _wait(lambda: not self._alive(pid), "the node did not stop", 60, self.log)
        except Unavailable:
            os.kill(pid, signal.SIGKILL)
            raise

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Unavailable):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def start_rabbitmq() -> OwnRabbitMQ:
    node = OwnRabbitMQ(Path(tempfile.mkdtemp(prefix="tlogsync-rabbitmq-")))
    try:
        node.start()
    except BaseException:
        node.close()
        raise
    return node


# ----------------------------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class OwnPostgres:
    """A PostgreSQL cluster of our own: trust auth on 127.0.0.1 and a socket in its folder, superuser postgres.
    As root, the server runs as the postgres user (initdb refuses root), in a folder that user owns."""

    def __init__(self) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            raise Unavailable("PostgreSQL's initdb and pg_ctl are not installed")
        self.bin = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="tlogsync-postgres-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no postgres user to run the server as") from None
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = free_port()
        self.options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        done = subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(argv[:2])}: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")

    def _ctl(self, action: str) -> None:
        pg_ctl = str(self.bin / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-m", "fast", "-o", self.options, action)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """pg_ctl restart, fast mode: every session ended, the server down, then up again."""
        self._ctl("restart")

    def close(self) -> None:
        with contextlib.suppress(Unavailable):
            self._ctl("stop")
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> OwnPostgres:
    cluster = OwnPostgres()
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


class MachineRabbitMQ:
    """The machine's own node, restarted with stop_app/start_app: only where a node of our own cannot start
    and the machine is ours alone (CI), since every other user of that node loses its connections too."""

    def __init__(self, url: str):
        self.url = url

    def restart(self) -> None:
        for action in ("stop_app", "start_app"):
            done = subprocess.run(["rabbitmqctl", "-q", action], capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise Unavailable(f"rabbitmqctl {action}: {done.stdout}{done.stderr}")
        _wait(lambda: port_open("127.0.0.1", 5672), "the machine's node did not come back", 120)

    def close(self) -> None:
        pass
