"""Structured logs: one JSON object per line when TLOGSYNC_LOG_FORMAT=json (the default is Celery's text).

Task events carry retailer, file, order id, task id, queue, outcome and duration as fields. Every line logged
while a task runs, by any module (the ledger, the SFTP adapter, a retry, a dead letter), carries the task's
context too: its name, id and queue, and the retailer, file or order its arguments name (`context`, set by the
task base class; a filter on the handlers adds what a line does not say itself). Nothing here reads
credentials: the SFTP password and keys never reach a log record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = (
    "task",
    "task_id",
    "queue",
    "retailer",
    "file",
    "file_id",
    "order_id",
    "outcome",
    "duration_ms",
    "error",
    "retries",
)
CONTEXT_FIELDS = ("task", "task_id", "queue", "retailer", "file", "file_id", "order_id")

_context: ContextVar[dict[str, Any]] = ContextVar("tlogsync_log_context", default={})  # noqa: B039 - never mutated


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Every log line inside carries these fields (those it does not set itself); None values are left out."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds the current task's context to a record that lacks it (runs after `extra=`, so never overrides)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def install(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of logger the task context filter, and the JSON formatter when JSON logs are asked for
    (Settings.log_format)."""
    for handler in logger.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
