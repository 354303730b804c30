"""tlogsync's pages in Flower: dead letters by queue, failed and stuck files, the operator actions, and a Retry
button on Flower's own task page.

Added the Flower way: tornado handlers subclassing Flower's `BaseHandler` (so the same authentication, basic auth
or OAuth, guards them: every page is `authenticated`), appended to Flower's URL list before its catch-all
(Flower's `--url_prefix` applies to them too), and templates that extend Flower's `base.html` and use its navbar,
into which a template loader adds our links (and, on `task.html`, our Retry button). Every action is a POST
carrying tornado's xsrf token (`_xsrf` form field matching the `_xsrf` cookie) on top of Flower's own same-origin
checks: Flower skips the token under basic auth, we never do. Blocking work (PostgreSQL, RabbitMQ) runs on Flower's
thread pool, not on its event loop. In Flower's read-only mode (`--read_only`) the buttons are hidden and the POSTs
refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import tornado.web
from flower.views import BaseHandler
from tornado import template
from tornado.ioloop import IOLoop
from tornado.web import url

from worker.adapters import queues
from worker.adapters.postgres.deadletters import PgDeadLetters
from worker.adapters.postgres.operations import PgOperations
from worker.adapters.postgres.pool import Database, open_pool
from worker.adapters.rabbitmq import DeadLetter, list_dead, queue_depths
from worker.monitoring.actions import Actions, Done

log = logging.getLogger("tlogsync.flower")

TEMPLATES = Path(__file__).with_name("templates")
PREFIX = "tlogsync_"  # our templates' names, beside Flower's
SHOWN_PER_QUEUE = 200  # dead letters listed per queue (the count says how many there are)
STUCK_AFTER_SECONDS = 600.0  # a file in flight (or final and unmoved) longer than this is stuck

T = TypeVar("T")

# Where our links go in Flower's navbar, and our Retry button in its task page: after these anchors.
NAVBAR_ANCHOR = "Broker</a>\n        </li>"
NAVBAR_LINKS = """
        {% module Template("tlogsync_nav.html", active_tab=active_tab) %}"""
TASK_ANCHOR = '<div class="detail-actions">'
TASK_ACTIONS = """
      {% module Template("tlogsync_task_actions.html", task=task, read_only=read_only) %}"""


class Loader(template.Loader):
    """Flower's templates with our links and buttons added, and ours (named tlogsync_*) from our folder."""

    def _create_template(self, name: str) -> template.Template:
        if name.startswith(PREFIX):
            text = (TEMPLATES / name).read_text(encoding="utf-8")
        else:
            text = (Path(self.root) / name).read_text(encoding="utf-8")
            if name == "navbar.html":
                text = _insert_after(text, NAVBAR_ANCHOR, NAVBAR_LINKS, name)
            elif name == "task.html":
                text = _insert_after(text, TASK_ANCHOR, TASK_ACTIONS, name)
        return template.Template(text, name=name, loader=self)


def _insert_after(text: str, anchor: str, addition: str, name: str) -> str:
    if anchor not in text:
        log.warning("Flower's %s has changed: tlogsync's additions to it are left out", name)
        return text
    return text.replace(anchor, anchor + addition, 1)


class _Resources:
    """The PostgreSQL pool of the Flower process, opened on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db: Database | None = None
        self.stuck_after_seconds = STUCK_AFTER_SECONDS

    def db(self) -> Database:
        with self._lock:
            if self._db is None:
                from worker.app.runtime import runtime

                self._db = open_pool(
                    runtime.settings.database_url,
                    max_size=4,
                    name="tlogsync-flower",
                    application_name="tlogsync-flower",
                    timeout=10,
                    check=True,
                )
            return self._db


resources = _Resources()


class Page(BaseHandler):  # type: ignore[misc]
    """A tlogsync page or action in Flower: Flower's auth, our xsrf token on every POST."""

    def check_xsrf_cookie(self) -> None:
        super().check_xsrf_cookie()  # Flower's: no cross-site request (Sec-Fetch-Site, Origin)
        tornado.web.RequestHandler.check_xsrf_cookie(self)  # and always the token, whatever the auth

    @property
    def actor(self) -> str:
        """Who is acting: the basic-auth user, the OAuth user, or 'anonymous' (--insecure-local)."""
        header = self.request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                return base64.b64decode(header[6:]).decode("utf-8", "replace").split(":", 1)[0][:200]
            except (binascii.Error, ValueError):
                pass
        user = self.current_user
        return user[:200] if isinstance(user, str) else "anonymous"

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await IOLoop.current().run_in_executor(None, partial(fn, *args))

    def actions(self) -> Actions:
        return Actions(self.capp, resources.db())

    def refuse_when_read_only(self) -> None:
        if self.application.options.read_only:
            raise tornado.web.HTTPError(403, "Flower runs read-only: no actions")

    def done(self, page: str, result: Done, **query: str) -> None:
        """After an action, back to the page (303: a reload does not post again), the result shown there."""
        params = "&".join(
            f"{k}={tornado.escape.url_escape(v)}" for k, v in {**query, "action": str(result.action_id)}.items()
        )
        self.redirect(f"{self.reverse_url(page)}?{params}", status=303)

    def shown_action(self) -> Any:
        raw = self.get_argument("action", None)
        if raw and raw.isdigit():
            return PgOperations(resources.db()).action(int(raw))
        return None


def _json(value: Any, limit: int = 2000) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} characters more]"


def _age(when: datetime | None) -> str:
    if when is None:
        return "?"
    seconds = (datetime.now(UTC) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _when(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


SENT_TASK = re.compile(r"as task ([0-9a-f-]{36})")


def _sent_task(result: str | None) -> str | None:
    """The id of the task an action sent, named in its result, to link to Flower's page of it."""
    match = SENT_TASK.search(result or "")
    return match.group(1) if match else None


HELPERS = {"as_json": _json, "age": _age, "when": _when, "sent_task": _sent_task}


def dead_letter_view(app: Any, db: Database, queue: str | None) -> dict[str, Any]:
    """Everything the dead-letter page shows, read in one go (blocking: run on the thread pool)."""
    dead = PgDeadLetters(db)
    dead.resolve_done()  # those whose work was done another way since show as resolved
    names = [queue] if queue else list(queues.WORK_QUEUES)
    depths = queue_depths(app)
    letters: list[DeadLetter] = list_dead(app, names, dead.reasons, limit=SHOWN_PER_QUEUE)
    rows = dead.letters([d.task_id for d in letters])
    by_queue: dict[str, list[tuple[DeadLetter, Any]]] = {name: [] for name in names}
    for letter in letters:
        by_queue.setdefault(letter.queue, []).append((letter, rows.get(letter.task_id)))
    return {
        "queues": [(name, depths.get(name, 0), by_queue.get(name, [])) for name in names],
        "history": dead.history(30),
        "open": dict(dead.open_by_queue()),
    }


class DeadLettersPage(Page):
    @tornado.web.authenticated
    async def get(self) -> None:
        queue = self.get_argument("queue", None) or None
        if queue is not None and queue not in queues.WORK_QUEUES:
            raise tornado.web.HTTPError(404, f"no queue {queue}")
        view = await self.blocking(dead_letter_view, self.capp, resources.db(), queue)
        shown = await self.blocking(self.shown_action)
        self.render(
            "tlogsync_dead_letters.html",
            queue=queue,
            shown=shown,
            read_only=self.application.options.read_only,
            all_queues=queues.WORK_QUEUES,
            **view,
            **HELPERS,
        )


class DeadLetterAction(Page):
    @tornado.web.authenticated
    async def post(self, verb: str) -> None:
        self.refuse_when_read_only()
        queue = self.get_argument("queue", "")
        if queue not in queues.WORK_QUEUES:
            raise tornado.web.HTTPError(400, f"unknown queue {queue!r}")
        task_id = self.get_argument("task_id", "") or None
        if task_id is None and self.get_argument("all", "") != "1":
            raise tornado.web.HTTPError(400, "give task_id, or all=1 for the whole queue")
        actions = self.actions()
        if verb == "replay":
            result = await self.blocking(actions.replay_dead, self.actor, queue, task_id, self.request.remote_ip)
        else:
            ids = [task_id] if task_id else None
            result = await self.blocking(actions.purge_dead, self.actor, queue, ids, self.request.remote_ip)
        back = self.get_argument("back", "")
        self.done("tlogsync-dead-letters", result, **({"queue": back} if back in queues.WORK_QUEUES else {}))


class FilesPage(Page):
    @tornado.web.authenticated
    async def get(self) -> None:
        retailer = self.get_argument("retailer", None) or None
        ops = PgOperations(resources.db())
        files = await self.blocking(ops.problem_files, retailer, resources.stuck_after_seconds)
        shown = await self.blocking(self.shown_action)
        grouped: dict[str, list[Any]] = {}
        for f in files:
            grouped.setdefault(f.retailer_id, []).append(f)
        self.render(
            "tlogsync_files.html",
            retailer=retailer,
            grouped=grouped,
            shown=shown,
            stuck_after=resources.stuck_after_seconds,
            read_only=self.application.options.read_only,
            **HELPERS,
        )


class FileAction(Page):
    @tornado.web.authenticated
    async def post(self, verb: str) -> None:
        self.refuse_when_read_only()
        file_id = self.get_argument("file_id", "")
        if not file_id.isdigit() or len(file_id) > 18:
            raise tornado.web.HTTPError(400, "file_id: a ledger row id")
        actions = self.actions()
        act = actions.replay_file if verb == "replay" else actions.dispatch_file
        result = await self.blocking(act, self.actor, int(file_id), self.request.remote_ip)
        retailer = self.get_argument("back", "")
        self.done("tlogsync-files", result, **({"retailer": retailer} if retailer else {}))


class RetryTask(Page):
    @tornado.web.authenticated
    async def post(self, task_id: str) -> None:
        self.refuse_when_read_only()
        if len(task_id) > 200:
            raise tornado.web.HTTPError(400, "not a task id")
        result = await self.blocking(self.actions().retry_task, self.actor, task_id, self.request.remote_ip)
        self.done("tlogsync-actions", result)


class ActionsPage(Page):
    @tornado.web.authenticated
    async def get(self) -> None:
        ops = PgOperations(resources.db())
        rows = await self.blocking(ops.actions, 200)
        shown = await self.blocking(self.shown_action)
        self.render("tlogsync_actions.html", rows=rows, shown=shown, **HELPERS)


class Api(Page):
    """The same lists as JSON (whole, not Flower's 1,024-character repr of a task result)."""

    @tornado.web.authenticated
    async def get(self, what: str) -> None:
        db = resources.db()
        if what == "dead-letters":
            queue = self.get_argument("queue", None) or None
            if queue is not None and queue not in queues.WORK_QUEUES:
                raise tornado.web.HTTPError(404, f"no queue {queue}")
            view = await self.blocking(dead_letter_view, self.capp, db, queue)
            out: Any = [
                {
                    **{k: v for k, v in letter.__dict__.items() if k not in ("args", "kwargs")},
                    "argsrepr": letter.args,
                    "state": row.state if row else "dead",
                    "resolution": row.resolution if row else None,
                }
                for _, _, letters in view["queues"]
                for letter, row in letters
            ]
        elif what == "files":
            rows = await self.blocking(
                PgOperations(db).problem_files,
                self.get_argument("retailer", None) or None,
                resources.stuck_after_seconds,
            )
            out = [f.__dict__ for f in rows]
        elif what == "actions":
            out = [a.__dict__ for a in await self.blocking(PgOperations(db).actions, 200)]
        else:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.write(json.dumps(out, default=str))


HANDLERS = [
    url(r"/tlogsync/dead-letters", DeadLettersPage, name="tlogsync-dead-letters"),
    url(r"/tlogsync/dead-letters/(replay|purge)", DeadLetterAction, name="tlogsync-dead-letter-action"),
    url(r"/tlogsync/files", FilesPage, name="tlogsync-files"),
    url(r"/tlogsync/files/(replay|dispatch)", FileAction, name="tlogsync-file-action"),
    url(r"/tlogsync/task/([^/]+)/retry", RetryTask, name="tlogsync-retry"),
    url(r"/tlogsync/actions", ActionsPage, name="tlogsync-actions"),
    url(r"/tlogsync/api/(dead-letters|files|actions)", Api, name="tlogsync-api"),
]


def install(flower_urls: Any) -> None:
    """Add our handlers to Flower's URL list, before its catch-all, and our template loader to its settings.
    flower_urls: the module `flower.urls` (its `handlers` list is the one Flower's app is built from)."""
    handlers: list[Any] = flower_urls.handlers
    if any(getattr(h, "name", None) == "tlogsync-dead-letters" for h in handlers):
        return
    at = next((i for i, h in enumerate(handlers) if isinstance(h, tuple) and h[0] == r".*"), len(handlers))
    handlers[at:at] = HANDLERS
    flower_urls.settings["template_loader"] = Loader(flower_urls.settings["template_path"])
