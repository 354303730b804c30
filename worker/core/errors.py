"""The errors the task base classifies, in one place.

Transient errors are retried with backoff; permanent ones (`Permanent` and its kinds) are
dead-lettered with their reason. A bad *file* is neither: it is recorded as failed.
"""

from __future__ import annotations


class TransientError(Exception):
    """Worth retrying: the SFTP host, the network or the database did not answer."""


class Oversell(TransientError):
    """A reservation found less stock than the plan expected; retried from a fresh, locked snapshot."""


class Permanent(Exception):
    """Retrying cannot help: the message is dead-lettered with this reason."""


class NotFound(Permanent):
    """A message names something that does not exist (ledger row, order, feed): retrying cannot help."""


class GaveUp(NotFound):
    """Started too many times without finishing (a poison message): recorded as failed, then dead-lettered."""


class UnknownRetailer(Permanent):
    """A message names a retailer the retailers file does not have."""


class SftpConfigError(Permanent):
    """Credentials or known_hosts cannot be used: a permanent problem until ops fix the config."""


class HostKeyRejected(Permanent):
    """The server's host key is not the one in known_hosts."""


class FileTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"file is larger than the {limit}-byte limit")
        self.limit = limit


class FileMissing(Exception):
    """The remote path does not exist."""
