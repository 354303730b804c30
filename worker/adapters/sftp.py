"""The SFTP file source (paramiko), one reused connection per retailer per process.

Host keys are always verified against the retailer's known_hosts file: there is no auto-add.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import re
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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


# Key types OpenSSH knows that paramiko may not (security keys, certificates): a line with one is skipped.
_SSH_KEY_TYPE = re.compile(r"(ssh|ecdsa|sk|rsa|x509v3)-[A-Za-z0-9@._-]+")


@dataclass
class KnownHosts:
    """A known_hosts file as we read it: the host keys to trust and the revoked keys (blob: line number)."""

    entries: list[tuple[list[str], paramiko.PKey]] = field(default_factory=list)
    revoked: dict[bytes, int] = field(default_factory=dict)


def load_known_hosts(path: str) -> KnownHosts:
    """Read known_hosts line by line. A line we cannot use is named by file and line number, never quoted (it
    may hold anything, a secret pasted by mistake): SftpConfigError. @cert-authority lines are skipped with a
    warning (paramiko checks no host certificates); a key on a @revoked line is refused for every host."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SftpConfigError(f"known_hosts {path}: {exc.strerror or exc}") from None
    known, trusted = KnownHosts(), []
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"known_hosts {path} line {number}"
        try:
            fields_ = raw.decode("utf-8").split()
        except UnicodeDecodeError:
            raise SftpConfigError(f"{where}: not UTF-8") from None
        if not fields_ or fields_[0].startswith("#"):
            continue
        marker = fields_.pop(0) if fields_[0].startswith("@") else None
        if marker == "@cert-authority":
            log.warning(
                "%s: @cert-authority lines are not supported (no host certificates are checked); skipped", where
            )
            continue
        if marker not in (None, "@revoked"):
            raise SftpConfigError(f"{where}: unknown marker (known_hosts has only @revoked and @cert-authority)")
        if len(fields_) < 3:
            raise SftpConfigError(f"{where}: not a host key line (host names, key type, key)")
        names, key_type, key_text = fields_[:3]
        try:
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_text, validate=True))
        except paramiko.UnknownKeyType:
            if not _SSH_KEY_TYPE.fullmatch(key_type):
                raise SftpConfigError(f"{where}: not a host key line (unknown key type)") from None
            log.warning("%s: a key type paramiko cannot use; skipped", where)
            continue
        except Exception:  # noqa: BLE001 - binascii, struct, unicode, paramiko errors: all quote the line
            raise SftpConfigError(f"{where}: the key is not valid base64 of a key of its type") from None
        if marker == "@revoked":
            known.revoked.setdefault(key.asbytes(), number)
        else:
            trusted.append((names.split(","), key))
    known.entries = [(names, key) for names, key in trusted if key.asbytes() not in known.revoked]
    return known


class _Refuse(paramiko.MissingHostKeyPolicy):
    """No auto-add: a host key not in known_hosts, or revoked there, is refused."""

    def __init__(self, cfg: SftpConfig, known: KnownHosts):
        self.cfg, self.known = cfg, known

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = self.known.revoked.get(key.asbytes())
        if line is not None:
            raise HostKeyRejected(
                f"{self.cfg.host}:{self.cfg.port}: host key is revoked in {self.cfg.known_hosts} line {line}"
            )
        raise HostKeyRejected(f"{self.cfg.host}:{self.cfg.port}: host key not in {self.cfg.known_hosts}")


def _connect(
    cfg: SftpConfig, timeout: float, on_connect: Sequence[ConnectHook] = ()
) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    client = paramiko.SSHClient()
    known = load_known_hosts(cfg.known_hosts)
    host_keys = client.get_host_keys()
    for names, key in known.entries:
        for name in names:
            host_keys.add(name, key.get_name(), key)
    client.set_missing_host_key_policy(_Refuse(cfg, known))
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
        line = known.revoked.get(exc.key.asbytes())
        if line is not None:
            raise HostKeyRejected(
                f"{cfg.host}:{cfg.port}: host key is revoked in {cfg.known_hosts} line {line}"
            ) from None
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
        except BaseException:
            # interrupted mid-request (the soft time limit): answers may still be on their way, so the
            # session is out of step; the next task starts a fresh one
            self.close()
            raise

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
    """Per-process cache of SFTP sessions, per retailer, reused across tasks. A task takes a session for itself
    and gives it back: a prefork child keeps one per retailer, a thread pool as many as its threads use at once."""

    def __init__(self, timeout: float, on_connect: Sequence[ConnectHook] = (), max_idle: int = 16):
        self.timeout, self.on_connect, self.max_idle = timeout, on_connect, max_idle
        self._idle: dict[str, tuple[SftpConfig, list[SftpSource]]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def source(self, retailer_id: str, cfg: SftpConfig) -> Iterator[SftpSource]:
        with self._guard:
            entry = self._idle.get(retailer_id)
            if entry is None or entry[0] != cfg:  # config changed (new key, new host): new sessions
                if entry is not None:
                    for stale in entry[1]:
                        stale.close()
                entry = (cfg, [])
                self._idle[retailer_id] = entry
            src = entry[1].pop() if entry[1] else SftpSource(cfg, self.timeout, self.on_connect)
        try:
            yield src
        finally:
            with self._guard:
                current = self._idle.get(retailer_id)
                if current is not None and current[0] == cfg and len(current[1]) < self.max_idle:
                    current[1].append(src)
                else:
                    src.close()

    def close(self) -> None:
        with self._guard:
            for _, sources in self._idle.values():
                for src in sources:
                    src.close()
            self._idle.clear()


def paramiko_quiet(**_: Any) -> None:
    """paramiko logs every connection at INFO; keep our logs for our events."""
    logging.getLogger("paramiko").setLevel(logging.WARNING)
