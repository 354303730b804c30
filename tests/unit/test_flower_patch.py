"""The one Flower internal we replace (the queue names of its broker view), on the pinned version only."""

from __future__ import annotations

import re
from pathlib import Path

import flower
from flower.views import BaseHandler

from worker.adapters import queues
from worker.monitoring.flower import TESTED, show_dead_letter_queues

ROOT = Path(__file__).resolve().parents[2]


def handler_class() -> type:
    """A subclass of Flower's BaseHandler whose own queue names are the work queues."""

    class Handler(BaseHandler):  # type: ignore[misc]
        def get_active_queue_names(self) -> list[str]:
            return list(queues.WORK_QUEUES)

    return Handler


def test_flower_is_pinned_to_the_minor_version_the_addition_was_checked_on():
    pin = re.search(r'"flower>=([0-9]+)\.([0-9]+),<([0-9]+)\.([0-9]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "flower must be pinned to one minor version, e.g. flower>=2.2,<2.3"
    assert (int(pin[1]), int(pin[2])) == TESTED and (int(pin[3]), int(pin[4])) == (TESTED[0], TESTED[1] + 1)
    assert tuple(int(p) for p in flower.__version__.split(".")[:2]) == TESTED
    assert callable(getattr(BaseHandler, "get_active_queue_names", None))  # the method we replace is there


def test_on_the_tested_version_the_dead_letter_queues_are_listed_too():
    handler = handler_class()
    assert show_dead_letter_queues(handler, f"{TESTED[0]}.{TESTED[1]}.5")
    names = handler.get_active_queue_names(object.__new__(handler))
    assert set(names) == set(queues.WORK_QUEUES) | {queues.dead_letter_queue(q) for q in queues.WORK_QUEUES}
    assert names == sorted(names)


def test_on_another_version_or_without_the_method_flower_is_left_as_it_is():
    handler = handler_class()
    original = handler.get_active_queue_names
    assert not show_dead_letter_queues(handler, f"{TESTED[0]}.{TESTED[1] + 1}.0")
    assert not show_dead_letter_queues(handler, f"{TESTED[0] + 1}.0.0")
    assert not show_dead_letter_queues(handler, "dev")
    assert handler.get_active_queue_names is original

    class Bare:
        pass

    assert not show_dead_letter_queues(Bare, f"{TESTED[0]}.{TESTED[1]}.0")
    assert not hasattr(Bare, "get_active_queue_names")
