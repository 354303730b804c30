"""paramiko internals, kept in this one module: a file read and closed in the fewest round trips.

With paramiko's public API a file costs two round trips more than it needs: `SFTPFile.read(n)` reads on
after a short read to see the end of the file (one more request), and `SFTPFile.close()` waits for the
answer to CMD_CLOSE, which nothing needs. The fast path sends one CMD_READ of one byte more than the
listed size at a time (`SFTPFile._read`, keeping `_realpos`/`_pos` in step) and sends the close without
waiting (`SFTPFile._close(async_=True)`, what paramiko itself does for a collected file).

Private attributes change without notice, so the fast path is used only on the paramiko minor version it
was checked against (TESTED, the version pinned in pyproject.toml) and when the attributes exist; otherwise
the public API does the same work with the extra round trips (FAST is False).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.file import BufferedFile

from worker.core.errors import FileTooLarge

log = logging.getLogger(__name__)

TESTED = (5, 1)  # paramiko>=5.1,<5.2 in pyproject.toml

# OpenSSH's sftp-server answers reads of up to 256 KiB - 1 KiB in one message; paramiko asks for 32 KiB.
# MAX_REQUEST_SIZE is a public class attribute of SFTPFile, so both paths use the larger reads.
READ_REQUEST = 255 * 1024


def fast_path_available(version: str = paramiko.__version__) -> bool:
    """paramiko is the tested minor version and has the private attributes the fast path uses."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    if major_minor != TESTED:
        return False
    offsets = BufferedFile()  # _pos and _realpos are instance attributes, set by BufferedFile.__init__
    # SFTPFile's own _read and _close (BufferedFile's _read is a stub), SFTPClient's own _async_request
    return (
        "_read" in vars(paramiko.SFTPFile)
        and "_close" in vars(paramiko.SFTPFile)
        and "_async_request" in vars(paramiko.SFTPClient)
        and hasattr(offsets, "_pos")
        and hasattr(offsets, "_realpos")
    )


SUPPORTED = fast_path_available()
FAST = SUPPORTED  # read_all and close_unanswered take the fast path (tests switch it off to test the other)
if not SUPPORTED:
    log.warning(
        "paramiko %s is not the version the SFTP fast path was checked on (%d.%d): using its public API,"
        " two round trips more per file",
        paramiko.__version__,
        *TESTED,
    )


def read_all(fh: paramiko.SFTPFile, max_bytes: int, size_hint: int | None) -> bytes:
    """The whole file, or FileTooLarge past max_bytes; one CMD_READ when the listed size is right."""
    fh.MAX_REQUEST_SIZE = READ_REQUEST
    if not FAST:
        data = fh.read(max_bytes + 1)  # reads until max_bytes + 1 bytes or the end of the file
        if len(data) > max_bytes:
            raise FileTooLarge(max_bytes)
        return data
    # Asking for one byte more than the listed size and getting exactly the listed size means end of file
    # (a regular file's read is short only at its end), so no extra round trip is needed to see EOF.
    chunks: list[bytes] = []
    total = 0
    want = (size_hint + 1) if size_hint is not None else READ_REQUEST
    while True:
        asked = min(max(want, 1), READ_REQUEST)
        try:
            data = fh._read(asked)  # one CMD_READ at the current offset (_realpos)
        except EOFError:  # the server's SFTP_EOF status, not a dropped connection
            break
        if not data:
            break
        chunks.append(data)
        total += len(data)
        fh._realpos = fh._pos = total  # keep paramiko's offsets in step with what we consumed
        if total > max_bytes:
            raise FileTooLarge(max_bytes)
        if size_hint is not None and total == size_hint and len(data) < asked:
            break  # a short read at the listed size: end of file
        want = READ_REQUEST
    return b"".join(chunks)


def close_unanswered(fh: paramiko.SFTPFile) -> None:
    """Close a file read to the end; the fast path sends CMD_CLOSE and does not wait for its answer."""
    if FAST:
        fh._close(async_=True)
    else:
        fh.close()


def observe_requests(sftp: paramiko.SFTPClient, callback: Callable[[], None]) -> bool:
    """Call callback for every request sent on this session (one round trip each, unless pipelined).

    For measurements (the benchmark counts SFTP requests per file); False, and nothing observed, when the
    paramiko version is not the tested one.
    """
    if not SUPPORTED:
        return False
    send = sftp._async_request

    def observed(*args: Any, **kwargs: Any) -> Any:
        callback()
        return send(*args, **kwargs)

    sftp._async_request = observed  # type: ignore[method-assign]
    return True
