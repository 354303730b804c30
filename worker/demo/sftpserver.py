"""An embedded SFTP server (asyncssh) over a local folder, for the demo and the benchmark.

Loopback only, throw-away keys written next to the folder, host key published in a known_hosts
file so clients verify it exactly as they would in production.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import asyncssh


@dataclass(frozen=True)
class SftpEndpoint:
    host: str
    port: int
    username: str
    private_key: Path
    known_hosts: Path
    root: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _RootedSFTP(asyncssh.SFTPServer):
    root = b"/"

    def __init__(self, chan: asyncssh.SSHServerChannel):
        super().__init__(chan, chroot=self.root)


class EmbeddedSftpServer:
    """Start with .start(), stop with .stop(); remote paths are absolute paths under root."""

    def __init__(self, root: Path, keys_dir: Path, username: str = "tlogsync", port: int | None = None):
        self.root, self.keys_dir, self.username = root, keys_dir, username
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sftp-server", daemon=True)
        self._server: asyncssh.SSHAcceptor | None = None

    def start(self) -> SftpEndpoint:
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        client_path = self.keys_dir / "client_ed25519"
        client_key.write_private_key(str(client_path))
        client_path.chmod(0o600)
        known_hosts = self.keys_dir / "known_hosts"
        public = host_key.export_public_key("openssh").decode().strip()
        known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key("openssh").decode())
        rooted = type("RootedSFTP", (_RootedSFTP,), {"root": str(self.root).encode()})
        self._thread.start()

        async def listen() -> asyncssh.SSHAcceptor:
            return await asyncssh.listen(
                "127.0.0.1",
                self.port,
                server_host_keys=[host_key],
                authorized_client_keys=authorized,
                sftp_factory=rooted,
                allow_scp=False,
                encoding=None,
            )

        future = asyncio.run_coroutine_threadsafe(listen(), self._loop)
        self._server = future.result(timeout=10)
        return SftpEndpoint("127.0.0.1", self.port, self.username, client_path, known_hosts, self.root)

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
