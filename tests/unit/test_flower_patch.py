"""The Flower internals we touch (the queue names of its broker view; authentication on /metrics and
/healthcheck), on the pinned version only."""

from __future__ import annotations

import re
from pathlib import Path

import flower
import pytest
from flower.views import BaseHandler, monitor
from tornado.web import HTTPError

from worker.adapters import queues
from worker.monitoring.flower import TESTED, require_authentication, show_dead_letter_queues

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


def open_handlers() -> list[type]:
    """Subclasses of Flower's /metrics and /healthcheck handlers, each with a GET of its own as Flower's have."""

    class Metrics(monitor.Metrics):  # type: ignore[misc]
        async def get(self) -> str:
            return "metrics"

    class Healthcheck(monitor.Healthcheck):  # type: ignore[misc]
        async def get(self) -> str:
            return "OK"

    return [Metrics, Healthcheck]


class Unauthenticated:
    """What tornado's `authenticated` sees of a request whose credentials Flower refused."""

    @property
    def current_user(self) -> object:
        raise HTTPError(401)


def test_flowers_metrics_and_healthcheck_have_their_own_get_to_wrap():
    assert "get" in vars(monitor.Metrics) and "get" in vars(monitor.Healthcheck)


def test_on_the_tested_version_metrics_and_healthcheck_ask_for_credentials():
    handlers = open_handlers()
    assert require_authentication(handlers, f"{TESTED[0]}.{TESTED[1]}.0")
    assert require_authentication(handlers, f"{TESTED[0]}.{TESTED[1]}.0")  # twice: wrapped once
    for handler in handlers:
        with pytest.raises(HTTPError) as refused:
            handler.get(Unauthenticated())
        assert refused.value.status_code == 401
        assert not hasattr(handler.get.__wrapped__, "__wrapped__")


def test_on_another_version_metrics_and_healthcheck_are_left_as_they_are():
    handlers = open_handlers()
    originals = [vars(h)["get"] for h in handlers]
    assert not require_authentication(handlers, f"{TESTED[0]}.{TESTED[1] + 1}.0")
    assert not require_authentication(handlers, "dev")
    assert [vars(h)["get"] for h in handlers] == originals

    class Bare:
        pass

    assert not require_authentication([Bare], f"{TESTED[0]}.{TESTED[1]}.0")


def test_tlogsync_pages_go_before_flowers_catch_all_and_its_templates_get_our_links_and_retry_button():
    import importlib

    import flower.urls

    from worker.monitoring import flower_pages
    from worker.monitoring.flower import add_tlogsync_pages

    urls = importlib.reload(flower.urls)  # a fresh copy of Flower's URL list
    assert not add_tlogsync_pages(urls, f"{TESTED[0]}.{TESTED[1] + 1}.0")
    assert add_tlogsync_pages(urls, f"{TESTED[0]}.{TESTED[1]}.0")
    add_tlogsync_pages(urls, f"{TESTED[0]}.{TESTED[1]}.0")  # twice: added once
    names = [getattr(h, "name", None) for h in urls.handlers]
    assert names.count("tlogsync-dead-letters") == 1
    assert urls.handlers[-1][0] == r".*"  # Flower's catch-all stays last
    loader = urls.settings["template_loader"]
    assert isinstance(loader, flower_pages.Loader)
    # the anchors our additions follow are in Flower's templates as pinned: a change there is caught here
    navbar = loader.load("navbar.html").code
    assert "tlogsync_nav.html" in navbar
    assert "tlogsync_task_actions.html" in loader.load("task.html").code
    for page in ("dead_letters", "files", "actions", "nav", "task_actions", "shown"):
        loader.load(f"tlogsync_{page}.html")  # they compile
    importlib.reload(flower.urls)
