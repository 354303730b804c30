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


class WrongRetailer(NotFound):
    """A message names a ledger row or order of another retailer: refused before anything is touched."""


class WrongFeed(NotFound):
    """A message names a ledger row of the retailer's other feed (a variance file for ingest, or back)."""


class GaveUp(NotFound):
    """Started too many times without finishing (a poison message): recorded as failed, then dead-lettered."""


class UnknownRetailer(Permanent):
    """A message names a retailer the retailers file does not have."""


class SftpConfigError(Permanent):
    """Credentials or known_hosts cannot be used: a permanent problem until ops fix the config."""


class HostKeyRejected(Permanent):
    """The server's host key is not the one in known_hosts."""


class FileFailed(Exception):
    """A file was recorded failed (bad input) and moved to error_dir: the task ends in FAILURE with this reason, so
    Flower's Failed filter shows it, but it is neither retried nor dead-lettered (the fix is a replay of the file)."""


class LeftToSchedule(Exception):
    """A scheduled task ran out of retries: it ends in FAILURE without a dead letter, the next scheduled run redoes
    its work (a scan of the retailer)."""


class FileTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"file is larger than the {limit}-byte limit")
        self.limit = limit


class FileMissing(Exception):
    """The remote path does not exist."""


# What a reason or a log line keeps of a text that came from outside (a message's argument, a database error):
# enough to recognise it, never megabytes.
TEXT_LIMIT = 2000


def bounded(text: str, limit: int = TEXT_LIMIT) -> str:
    """text, or its first limit characters and a marker saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} characters cut]"
