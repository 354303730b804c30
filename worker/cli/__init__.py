"""The `tlogsync` command: `main` parses the command line (worker/cli/main.py) and runs one command group's
module: setup, scan, status, flower, routing, dlq, audit; common holds what they share."""

import importlib.util

if importlib.util.find_spec("rich") is None:  # the worker needs no rich; the command line is the ops extra
    raise SystemExit("tlogsync: the command line needs the ops extra: pip install 'tlogsync[ops]'")

from worker.cli.main import main  # noqa: E402 - after the check above, so a missing extra is one clear line

__all__ = ["main"]
