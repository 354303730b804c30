"""The SFTP file source (paramiko), one reused connection per retailer per process.

Host keys are always verified against the retailer's known_hosts file: there is no auto-add.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import paramiko

from worker.adapters.sftp_fastpath import close_unanswered, read_all
from worker.core.errors import FileMissing, FileTooLarge, HostKeyRejected, SftpConfigError, TransientError
from worker.core.retailers import SftpConfig
from worker.services.ports import RemoteFile

log = logging.getLogger(__name__)

# Called with each new SFTP session right after it connects (Runtime.sftp_connect_hooks).
ConnectHook = Callable[[paramiko.SFTPClient], None]


def _private_key(path: str) -> paramiko.PKey:
    """Load the key once, here, so a missing or unreadable key is a configuration error, not a retry."""
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise SftpConfigError(f"private_key {path}: no such file") from None
    except PermissionError:
        raise SftpConfigError(f"private_key {path}: not readable") from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise SftpConfigError(f"private_key {path}: not a usable private key ({type(exc).__name__})") from None


def _connect(
    cfg: SftpConfig, timeout: float, on_connect: Sequence[ConnectHook] = ()
) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(cfg.known_hosts)
    except OSError as exc:
        raise SftpConfigError(f"known_hosts {cfg.known_hosts}: {exc.strerror or exc}") from None
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    password = None
    if cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if password is None:
            raise SftpConfigError(f"environment variable {cfg.password_env} (password_env) is not set")
    pkey = _private_key(cfg.private_key) if cfg.private_key else None
    sock = socket.create_connection((cfg.host, cfg.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SFTP is request/response: no Nagle delay
    try:
        client.connect(
            cfg.host,
            port=cfg.port,
            username=cfg.username,
            pkey=pkey,
            password=password,
            sock=sock,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        sftp = client.open_sftp()
    except paramiko.AuthenticationException:
        # wrong key or password: retrying cannot help, and the message must not carry the secret
        _close_quietly(client, sock)
        raise SftpConfigError(f"{cfg.host}:{cfg.port}: authentication failed for user {cfg.username}") from None
    except paramiko.BadHostKeyException as exc:
        _close_quietly(client, sock)
        raise HostKeyRejected(f"{cfg.host}:{cfg.port}: host key does not match known_hosts ({exc})") from None
    except paramiko.SSHException as exc:
        _close_quietly(client, sock)
        if "not found in known_hosts" in str(exc):
            raise HostKeyRejected(f"{cfg.host}:{cfg.port}: host key not in {cfg.known_hosts}") from None
        raise
    except BaseException:
        _close_quietly(client, sock)
        raise
    for hook in on_connect:
        hook(sftp)
    channel = sftp.get_channel()
    if channel is not None:
        channel.settimeout(timeout)
    return client, sftp


def _close_quietly(client: paramiko.SSHClient, sock: socket.socket) -> None:
    try:
        client.close()
    finally:
        sock.close()


def _is_missing(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT


def _stat_exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except OSError as exc:
        if _is_missing(exc):
            return False
        raise
    return True


class SftpSource:
    """FileSource over one reused SFTP session; reconnects after a failure.

    Not thread-safe on its own; SftpSessions hands one session to one task at a time.
    """

    def __init__(self, cfg: SftpConfig, timeout: float = 20.0, on_connect: Sequence[ConnectHook] = ()):
        self.cfg, self.timeout, self.on_connect = cfg, timeout, on_connect
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        transport = self._client.get_transport() if self._client else None
        if self._sftp is None or transport is None or not transport.is_active():
            self.close()
            try:
                self._client, self._sftp = _connect(self.cfg, self.timeout, self.on_connect)
            except (SftpConfigError, HostKeyRejected):
                raise
            except (OSError, paramiko.SSHException, EOFError) as exc:
                raise TransientError(f"sftp {self.cfg.host}:{self.cfg.port}: cannot connect: {exc}") from exc
        return self._sftp

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None

    @contextmanager
    def _io(self, what: str) -> Iterator[paramiko.SFTPClient]:
        sftp = self.sftp
        try:
            yield sftp
        except (FileMissing, FileTooLarge):
            raise
        except FileNotFoundError:
            raise
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            if (
                isinstance(exc, OSError)
                and not isinstance(exc, socket.timeout)
                and exc.errno is not None
                and exc.errno != errno.ECONNRESET
            ):
                raise  # a real file-system answer (permission denied...), not a broken connection
            self.close()  # the session may be half-dead: start a fresh one next time
            raise TransientError(f"sftp {self.cfg.host}:{self.cfg.port}: {what}: {exc!r}") from exc

    def list(self, directory: str) -> Sequence[RemoteFile]:
        with self._io(f"list {directory}") as sftp:
            return [
                RemoteFile(a.filename, a.st_size or 0, float(a.st_mtime or 0), stat.S_ISREG(a.st_mode or 0))
                for a in sftp.listdir_attr(directory)
            ]

    def read(self, path: str, max_bytes: int, size_hint: int | None = None) -> bytes:
        with self._io(f"read {path}") as sftp:
            try:
                fh = sftp.open(path, "rb")
            except FileNotFoundError:
                raise FileMissing(path) from None
            try:
                return read_all(fh, max_bytes, size_hint)
            finally:
                # Closing does not need its answer: send it and move on (one round trip saved per file).
                close_unanswered(fh)

    def move(self, src: str, dst: str) -> bool:
        """SFTP's plain rename, which never replaces an existing file (OpenSSH links the new name, then
        unlinks the old): FileExistsError when dst exists, False when src does not."""
        with self._io(f"move {src}") as sftp:
            try:
                sftp.rename(src, dst)
            except OSError as exc:
                if _is_missing(exc):
                    if not _stat_exists(sftp, src):
                        return False  # the source is gone: moved already, or removed by hand
                    # The source is there, so it is the destination folder that is missing: ops must fix it.
                    raise SftpConfigError(
                        f"cannot move {src} to {dst}: the destination folder does not exist"
                    ) from None
                if _stat_exists(sftp, dst):
                    # the server answers a plain "Failure": say what it is, and nothing was replaced
                    raise FileExistsError(
                        errno.EEXIST, f"refusing to replace an existing file (moving {src})", dst
                    ) from None
                raise
            return True

    def write(self, path: str, data: bytes) -> None:
        with self._io(f"write {path}") as sftp:
            try:
                fh = sftp.open(path, "wb")
            except FileNotFoundError:
                raise SftpConfigError(f"cannot write {path}: its folder does not exist") from None
            with fh:
                fh.write(data)

    def exists(self, path: str) -> bool:
        with self._io(f"stat {path}") as sftp:
            try:
                sftp.stat(path)
            except OSError as exc:
                if _is_missing(exc):
                    return False
                raise
            return True


class SftpSessions:
    """Per-process cache: one SftpSource per retailer, reused across tasks (threads take turns)."""

    def __init__(self, timeout: float, on_connect: Sequence[ConnectHook] = ()):
        self.timeout, self.on_connect = timeout, on_connect
        self._sources: dict[str, tuple[SftpConfig, SftpSource, threading.Lock]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def source(self, retailer_id: str, cfg: SftpConfig) -> Iterator[SftpSource]:
        with self._guard:
            entry = self._sources.get(retailer_id)
            if entry is None or entry[0] != cfg:  # config changed (new key, new host): reconnect
                if entry is not None:
                    entry[1].close()
                entry = (cfg, SftpSource(cfg, self.timeout, self.on_connect), threading.Lock())
                self._sources[retailer_id] = entry
        _, src, lock = entry
        with lock:
            yield src

    def close(self) -> None:
        with self._guard:
            for _, src, _ in self._sources.values():
                src.close()
            self._sources.clear()


def paramiko_quiet(**_: Any) -> None:
    """paramiko logs every connection at INFO; keep our logs for our events."""
    logging.getLogger("paramiko").setLevel(logging.WARNING)
