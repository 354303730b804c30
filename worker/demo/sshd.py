"""A throw-away OpenSSH sshd (internal-sftp) on a free loopback port, with keys made for it: for local runs
(the test suite, the benchmark). Runs as the current user; SFTP paths are the local absolute paths."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    host: str
    port: int
    username: str
    private_key: Path
    known_hosts: Path
    root: Path  # a folder for the caller's files; SFTP paths are the same absolute paths
    process: subprocess.Popen[bytes]
    config: Path
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def start(self) -> None:
        self.process = _run(self.config, self.log)
        _wait_port(self.port)


def _run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)])


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not listen on {port}")
        time.sleep(0.05)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(base: Path) -> Sshd:
    """Keys, config and a running sshd under base; base/sftp is the folder for files."""
    base.mkdir(parents=True, exist_ok=True)
    host_key, user_key = base / "host_ed25519", base / "user_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    authorized = base / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    kind, key = host_key.with_suffix(".pub").read_text().split()[:2]
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    config = base / "sshd_config"
    config.write_text(f"""
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {base / "sshd.pid"}
AuthorizedKeysFile {authorized}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowUsers {user}
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 100
LogLevel INFO
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    log = base / "sshd.log"
    proc = _run(config, log)
    try:
        _wait_port(port)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"sshd failed to start: {log.read_text() if log.exists() else ''}") from None
    root = base / "sftp"
    root.mkdir(exist_ok=True)
    return Sshd("127.0.0.1", port, user, user_key, known_hosts, root, proc, config, log)
