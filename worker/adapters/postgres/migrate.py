"""Numbered plain-SQL migrations (worker/adapters/postgres/migrations/NNN_name.sql), applied once each, in order."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

LOCK_KEY = 0x746C6F67  # 'tlog': one migrator at a time


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration shipped with the package."""
    found = []
    for entry in resources.files("worker.adapters.postgres.migrations").iterdir():
        match = re.match(r"^(\d{3})_(.+)\.sql$", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, script in available():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(script.encode())  # bytes: run as one simple-query script
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied.append(f"{version:03d}_{name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied


def ensure_database(dsn: str, *, recreate: bool = False) -> bool:
    """Create the database named in dsn if it does not exist (demo, tests, bench); True if created.

    recreate: drop it first (its sessions ended), for a run that must start empty.
    """
    name = _database_name(dsn)
    if not name:
        return False
    with psycopg.connect(_admin_dsn(dsn), autocommit=True) as conn:
        if recreate:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        elif conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(dsn: str) -> None:
    """Drop the database named in dsn if it exists, ending its sessions (tests' teardown)."""
    name = _database_name(dsn)
    if name:
        with psycopg.connect(_admin_dsn(dsn), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _database_name(dsn: str) -> str | None:
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(dsn)
    return info.get("dbname")


def _admin_dsn(dsn: str) -> str:
    """The same server, its maintenance database: where CREATE and DROP DATABASE run."""
    return psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
