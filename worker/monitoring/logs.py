"""Structured logs: one JSON object per line when TLOGSYNC_LOG_FORMAT=json (the default is Celery's text).

Task events carry retailer, file, order id, task id, outcome and duration as fields. Nothing here reads
credentials: the SFTP password and keys never reach a log record.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FIELDS = ("task", "task_id", "retailer", "file", "file_id", "order_id", "outcome", "duration_ms", "error", "retries")


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
    """Give every handler of logger the JSON formatter, when JSON logs are asked for (Settings.log_format)."""
    if log_format != "json":
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
