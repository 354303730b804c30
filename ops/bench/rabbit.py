"""RabbitMQ for the benchmark: a vhost per run through the management API (no rabbitmqctl, whose Erlang VM
would cost more CPU than the run it measures), queue depths and publish counters, and the real-time depth and
consumer count of a queue over AMQP (a passive declare).

The management API's figures are refreshed by the broker every few seconds (collect_statistics_interval,
5 s by default); the AMQP figures are exact at the moment they are asked.
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from kombu import Connection

from worker.adapters.queues import WORK_QUEUES

API = "http://127.0.0.1:15672/api"
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def api(method: str, path: str, body: object | None = None, timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{API}/{path}", data=data, method=method)  # noqa: S310 - a fixed http URL
    request.add_header("Authorization", AUTH)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        raw = response.read()
    return json.loads(raw) if raw else None


def quoted(vhost: str) -> str:
    return urllib.parse.quote(vhost, safe="")


def available() -> bool:
    try:
        api("GET", "overview", timeout=3)
    except (OSError, urllib.error.URLError):
        return False
    return True


def create_vhost(vhost: str) -> None:
    api("PUT", f"vhosts/{quoted(vhost)}", {})
    api("PUT", f"permissions/{quoted(vhost)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})


def delete_vhost(vhost: str) -> None:
    with contextlib.suppress(OSError, urllib.error.URLError):
        api("DELETE", f"vhosts/{quoted(vhost)}")


def work_queues(vhost: str) -> dict[str, dict[str, Any]]:
    """The management API's view of the work queues (messages, ready, unacked, message_stats)."""
    rows = api(
        "GET", f"queues/{quoted(vhost)}?columns=name,messages,messages_ready,messages_unacknowledged,message_stats"
    )
    return {row["name"]: row for row in rows if row["name"] in WORK_QUEUES}


def published(vhost: str) -> dict[str, int]:
    """Messages published to each work queue so far (tasks sent, retries included)."""
    return {name: int((row.get("message_stats") or {}).get("publish", 0)) for name, row in work_queues(vhost).items()}


class Depth:
    """Real-time ready messages and consumers of the work queues, over one AMQP connection."""

    def __init__(self, url: str):
        self.conn = Connection(url, connect_timeout=5)

    def queue(self, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue, None while it does not exist."""
        try:
            with self.conn.channel() as channel:
                ok = channel.queue_declare(queue=name, passive=True)
        except Exception as exc:  # noqa: BLE001 - a missing queue closes the channel with 404 NOT_FOUND
            if "NOT_FOUND" in str(exc) or "404" in str(exc):
                return None
            raise
        return int(ok.message_count), int(ok.consumer_count)

    def ready(self) -> int:
        return sum((self.queue(name) or (0, 0))[0] for name in WORK_QUEUES)

    def close(self) -> None:
        self.conn.release()
