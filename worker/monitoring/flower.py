"""Flower, started by `tlogsync flower`, showing the dead-letter queues too.

Flower's broker view and /api/queues/length list only the queues some worker consumes; nothing consumes
`<queue>.dead`, so without this small addition operators would not see dead letters in Flower.
The addition replaces `flower.views.BaseHandler.get_active_queue_names`, a method Flower does not document:
this module is the only place that touches it, and only on the Flower minor version it was checked against
(TESTED, as pinned in pyproject.toml); on another version Flower runs as it is, without the dead letters.
Run as `python -m worker.monitoring.flower <flower options>`.
"""

from __future__ import annotations

import sys
from typing import Any

from worker.adapters import queues

TESTED = (2, 2)  # flower>=2.2,<2.3 in pyproject.toml


def _with_dead_letter_queues(original: Any) -> Any:
    def get_active_queue_names(self: Any) -> list[str]:
        names = set(original(self))
        names |= {queues.dead_letter_queue(q) for q in queues.WORK_QUEUES}
        return sorted(names)

    return get_active_queue_names


def show_dead_letter_queues(handler: Any, version: str) -> bool:
    """Add the dead-letter queues to handler's queue names; False, leaving it as it is, on another version."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    original = getattr(handler, "get_active_queue_names", None)
    if major_minor != TESTED or not callable(original):
        return False
    handler.get_active_queue_names = _with_dead_letter_queues(original)
    return True


def main(argv: list[str]) -> None:
    import flower
    from celery.bin.celery import main as celery_main
    from flower.views import BaseHandler

    if not show_dead_letter_queues(BaseHandler, flower.__version__):
        print(
            f"tlogsync flower: Flower {flower.__version__} is not {TESTED[0]}.{TESTED[1]}: the dead-letter queues"
            " are not listed in its broker view",
            file=sys.stderr,
        )
    sys.argv = ["celery", "-A", "worker", "flower", *argv]
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
