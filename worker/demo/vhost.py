"""The demo's own RabbitMQ virtual host, so `make demo` never shares queues with production commands on `/`.

`demo_broker_url()` recreates the vhost `tlogsync-demo` (TLOGSYNC_DEMO_VHOST to change it) on the broker of
TLOGSYNC_BROKER_URL (default guest:guest on 127.0.0.1), with full permissions for that URL's user, and returns
the URL of that vhost. It uses RabbitMQ's management API (TLOGSYNC_DEMO_MANAGEMENT_URL, default port 15672 of the
broker's host, the broker's user and password), or `rabbitmqctl` where the API does not answer.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_VHOST = "tlogsync-demo"


class VhostError(RuntimeError):
    """The demo's vhost could not be made; the message says how to make it by hand."""


def demo_broker_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    base = urllib.parse.urlsplit(env.get("TLOGSYNC_BROKER_URL") or DEFAULT_BROKER)
    vhost = env.get("TLOGSYNC_DEMO_VHOST") or DEFAULT_VHOST
    user = urllib.parse.unquote(base.username or "guest")
    password = urllib.parse.unquote(base.password or "guest")
    api = env.get("TLOGSYNC_DEMO_MANAGEMENT_URL") or f"http://{base.hostname or '127.0.0.1'}:15672"
    try:
        _recreate_by_api(api.rstrip("/"), vhost, user, password)
    except (urllib.error.URLError, OSError) as exc:
        _recreate_by_rabbitmqctl(vhost, user, reason=str(exc))
    return urllib.parse.urlunsplit((base.scheme, base.netloc, "/" + urllib.parse.quote(vhost, safe=""), "", ""))


def _recreate_by_api(api: str, vhost: str, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    name = urllib.parse.quote(vhost, safe="")

    def call(method: str, path: str, body: bytes | None = None, missing_ok: bool = False) -> None:
        request = urllib.request.Request(  # noqa: S310 - the operator's own broker
            f"{api}{path}", data=body, method=method, headers={"Authorization": f"Basic {auth}"}
        )
        request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
        except urllib.error.HTTPError as exc:
            if not (missing_ok and exc.code == 404):
                raise

    call("DELETE", f"/api/vhosts/{name}", missing_ok=True)  # a fresh vhost: no queues left by an earlier run
    call("PUT", f"/api/vhosts/{name}", b"{}")
    call(
        "PUT",
        f"/api/permissions/{name}/{urllib.parse.quote(user, safe='')}",
        b'{"configure": ".*", "write": ".*", "read": ".*"}',
    )


def _recreate_by_rabbitmqctl(vhost: str, user: str, reason: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise VhostError(
            f"the demo's RabbitMQ vhost {vhost!r} could not be made: the management API did not answer ({reason})"
            f" and rabbitmqctl is not installed; make it by hand (rabbitmqctl add_vhost {vhost}) or set"
            " TLOGSYNC_DEMO_MANAGEMENT_URL"
        )
    subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True, check=False)
    for args in (["add_vhost", vhost], ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]):
        done = subprocess.run([ctl, "-q", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise VhostError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.returncode}")
