"""Flower, started by `tlogsync flower`, showing the dead-letter queues too.

Flower's broker view and /api/queues/length list only the queues some worker consumes; nothing consumes
`<queue>.dead`, so without this small addition operators would not see dead letters in Flower.
Run as `python -m worker.monitoring.flower <flower options>`.
"""

from __future__ import annotations

import sys
from typing import Any

from worker.app import queues


def _with_dead_letter_queues(original: Any) -> Any:
    def get_active_queue_names(self: Any) -> list[str]:
        names = set(original(self))
        names |= {queues.dead_letter_queue(q) for q in queues.WORK_QUEUES}
        return sorted(names)

    return get_active_queue_names


def main(argv: list[str]) -> None:
    from celery.bin.celery import main as celery_main
    from flower.views import BaseHandler

    BaseHandler.get_active_queue_names = _with_dead_letter_queues(BaseHandler.get_active_queue_names)
    sys.argv = ["celery", "-A", "worker", "flower", *argv]
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
