"""A retailer's inbound folders (feeds), and the file names that may be trusted in a path."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from dataclasses import dataclass

from worker.core.retailers import Retailer

ORDERS_FEED, VARIANCE_FEED, FULFILLMENT_FEED = "orders", "variance", "fulfillment"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ ()+=@,-]{0,254}$")


@dataclass(frozen=True)
class Feed:
    """One inbound folder of a retailer and where its files go afterwards."""

    name: str
    directory: str
    archive_dir: str
    error_dir: str
    pattern: str
    min_age_seconds: float


def orders_feed(retailer: Retailer) -> Feed:
    s = retailer.sftp
    return Feed(ORDERS_FEED, s.orders_dir, s.archive_dir, s.error_dir, s.pattern, s.min_age_seconds)


def variance_feed(retailer: Retailer) -> Feed | None:
    """The retailer's inventory variance feed, or None when it has none (no variance_dir)."""
    s = retailer.sftp
    if not s.variance_dir or not s.variance_archive_dir or not s.variance_error_dir:
        return None
    return Feed(
        VARIANCE_FEED,
        s.variance_dir,
        s.variance_archive_dir,
        s.variance_error_dir,
        s.variance_pattern,
        s.min_age_seconds,
    )


def fulfillment_feed(retailer: Retailer) -> Feed | None:
    """The retailer's fulfilment feed (stores' SHIPPED / REJECTED records), or None (no fulfillment_dir)."""
    s = retailer.sftp
    if not s.fulfillment_dir or not s.fulfillment_archive_dir or not s.fulfillment_error_dir:
        return None
    return Feed(
        FULFILLMENT_FEED,
        s.fulfillment_dir,
        s.fulfillment_archive_dir,
        s.fulfillment_error_dir,
        s.fulfillment_pattern,
        s.min_age_seconds,
    )


def feeds(retailer: Retailer) -> list[Feed]:
    """Every feed a scan of this retailer covers."""
    optional = (variance_feed(retailer), fulfillment_feed(retailer))
    return [orders_feed(retailer)] + [f for f in optional if f is not None]


def unsafe_name_reason(name: str) -> str | None:
    """Why a remote file name cannot be trusted in a path, or None when it can."""
    if "/" in name or "\\" in name or "\x00" in name:
        return "file name contains a path separator or NUL"
    if name in (".", "..") or name.startswith(".."):
        return "file name is a relative path component"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "file name contains control characters"
    if not SAFE_NAME.match(name):
        return "file name has characters outside letters, digits and ._ ()+=@,-"
    return None


def safe_local_name(name: str) -> str:
    """A name safe to use as a path component anywhere: unsafe characters become '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "unnamed"
    return cleaned[:200]


def join(directory: str, name: str) -> str:
    """Join a trusted directory and a file name that must stay inside it."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"refusing to join {name!r}: not a plain file name")
    return posixpath.join(directory, name)
