"""Flower, started by `tlogsync flower`, showing the dead-letter queues too, and asking for credentials on
every page.

Flower's broker view and /api/queues/length list only the queues some worker consumes; nothing consumes
`<queue>.dead`, so without this small addition operators would not see dead letters in Flower.
The addition replaces `flower.views.BaseHandler.get_active_queue_names`, a method Flower does not document.
Flower 2.2 also serves `/metrics` (its Prometheus metrics: worker names, task names and counts) and
`/healthcheck` without authentication even when basic auth is on; their `get` is wrapped in tornado's
`authenticated`, as Flower's other pages are. tlogsync's own pages (`flower_pages.py`) are added to Flower's URL
list and templates. This module is the only place that touches Flower's internals,
and only on the Flower minor version it was checked against (TESTED, as pinned in pyproject.toml); on another
version Flower runs as it is, without the dead letters and with those two pages open (said on stderr).
Run as `python -m worker.monitoring.flower <flower options>`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from worker.adapters import queues

TESTED = (2, 2)  # flower>=2.2,<2.3 in pyproject.toml


def _tested(version: str) -> bool:
    try:
        return tuple(int(part) for part in version.split(".")[:2]) == TESTED
    except ValueError:
        return False


def _with_dead_letter_queues(original: Any) -> Any:
    def get_active_queue_names(self: Any) -> list[str]:
        names = set(original(self))
        names |= {queues.dead_letter_queue(q) for q in queues.WORK_QUEUES}
        return sorted(names)

    return get_active_queue_names


def show_dead_letter_queues(handler: Any, version: str) -> bool:
    """Add the dead-letter queues to handler's queue names; False, leaving it as it is, on another version."""
    original = getattr(handler, "get_active_queue_names", None)
    if not _tested(version) or not callable(original):
        return False
    handler.get_active_queue_names = _with_dead_letter_queues(original)
    return True


def require_authentication(handlers: Sequence[Any], version: str) -> bool:
    """Make these handlers' GET ask for credentials like Flower's other pages; False, leaving them as they are,
    on another version or when one has no GET of its own."""
    from tornado.web import authenticated

    gets = [handler.__dict__.get("get") for handler in handlers]
    if not _tested(version) or not all(callable(get) for get in gets):
        return False
    for handler, get in zip(handlers, gets, strict=True):
        if not getattr(get, "_tlogsync_authenticated", False):
            wrapped = authenticated(get)
            wrapped._tlogsync_authenticated = True  # type: ignore[attr-defined]
            handler.get = wrapped
    return True


def add_tlogsync_pages(flower_urls: Any, version: str) -> bool:
    """tlogsync's pages (dead letters, failed files, actions) and the Retry button on Flower's task page
    (worker/monitoring/flower_pages.py); False, leaving Flower as it is, on another version."""
    if not _tested(version) or not isinstance(getattr(flower_urls, "handlers", None), list):
        return False
    from worker.monitoring.flower_pages import install

    install(flower_urls)
    return True


def main(argv: list[str]) -> None:
    import flower
    import flower.urls
    from celery.bin.celery import main as celery_main
    from flower.views import BaseHandler, monitor

    if not show_dead_letter_queues(BaseHandler, flower.__version__):
        print(
            f"tlogsync flower: Flower {flower.__version__} is not {TESTED[0]}.{TESTED[1]}: the dead-letter queues"
            " are not listed in its broker view",
            file=sys.stderr,
        )
    if not require_authentication([monitor.Metrics, monitor.Healthcheck], flower.__version__):
        print(
            f"tlogsync flower: Flower {flower.__version__} is not {TESTED[0]}.{TESTED[1]}: /metrics and /healthcheck"
            " may answer without authentication",
            file=sys.stderr,
        )
    if not add_tlogsync_pages(flower.urls, flower.__version__):
        print(
            f"tlogsync flower: Flower {flower.__version__} is not {TESTED[0]}.{TESTED[1]}: tlogsync's pages (dead"
            " letters, failed files, Retry) are not added",
            file=sys.stderr,
        )
    sys.argv = ["celery", "-A", "worker", "flower", *argv]
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
