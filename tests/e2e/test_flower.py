"""Flower as operators use it: basic auth, its real HTTP API to replay a dead-lettered file, and the
dashboard opened in headless Chromium listing the workers and the tasks of a processed batch."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import IN_CI, SESSION_DIR, need, start_worker, vhost_env
from tests.support.waiting import eventually
from worker.demo.sshd import free_port, port_open
from worker.demo.tlogfactory import dumps, make_sale

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")


class Flower:
    def __init__(self, url: str, user: str, password: str, env: dict[str, str]):
        self.url, self.user, self.password, self.env = url, user, password, env

    def request(self, path: str, body: object = None, auth: bool = True) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method="POST" if data else "GET", headers={"Content-Type": "application/json"}
        )
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test server
                text = resp.read().decode()
                return resp.status, json.loads(text) if text.startswith(("{", "[")) else text
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, timeout=120, env=self.env
        )


@pytest.fixture(scope="module")
def flower(celery_worker: object) -> Iterator[Flower]:  # the shared worker fixture writes the retailers file
    with vhost_env("flower", FLOWER_USER="ops", FLOWER_PASSWORD=secrets.token_urlsafe(12)) as env:
        yield from _flower(env)


def _flower(env: dict[str, str]) -> Iterator[Flower]:
    if port_open("127.0.0.1", 15672):
        env["TLOGSYNC_BROKER_API"] = "http://guest:guest@127.0.0.1:15672/api/"
    worker = start_worker(f"flower-{secrets.token_hex(2)}", extra=["-E"], env=env)
    port = free_port()
    log = open(SESSION_DIR / "flower.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "flower",
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
            "--db",
            str(SESSION_DIR / "flower.db"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        assert proc.poll() is None, (SESSION_DIR / "flower.log").read_text()
        assert time.monotonic() < deadline, "flower did not start"
        time.sleep(0.2)
    server = Flower(url, env["FLOWER_USER"], env["FLOWER_PASSWORD"], env)
    deadline = time.monotonic() + 30
    while server.request("/api/workers")[0] != 200 or worker.name not in str(server.request("/api/workers")[1]):
        assert time.monotonic() < deadline, "flower does not see the worker"
        time.sleep(0.5)
    server.worker = worker  # type: ignore[attr-defined]
    server.pid = proc.pid  # type: ignore[attr-defined]  # `tlogsync flower` becomes Flower (exec): same process
    yield server
    proc.terminate()
    proc.wait(timeout=20)
    log.close()
    worker.stop()


def test_flower_refuses_to_start_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    done = subprocess.run([sys.executable, "-m", "worker.cli", "flower"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "FLOWER_USER" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "flower", "--insecure-local", "--address", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "loopback" in done.stderr


def test_the_api_answers_only_with_credentials(flower):
    assert flower.request("/api/workers", auth=False)[0] == 401
    status, workers = flower.request("/api/workers")
    assert status == 200 and flower.worker.name in str(workers)


def test_no_password_is_on_flowers_command_line(flower):
    if "TLOGSYNC_BROKER_API" not in flower.env:
        need(False, "RabbitMQ management API on 127.0.0.1:15672 (rabbitmq-plugins enable rabbitmq_management)")
    argv = Path(f"/proc/{flower.pid}/cmdline").read_bytes().split(b"\0")
    assert any(b"flower" in arg for arg in argv), argv  # it is Flower's process
    command_line = b" ".join(argv).decode()
    assert flower.password not in command_line
    assert flower.env["TLOGSYNC_BROKER_API"] not in command_line and ":guest@" not in command_line
    assert flower.request("/api/queues/length")[0] == 200  # and Flower has the management API all the same


def test_metrics_and_healthcheck_answer_only_with_credentials(flower):
    assert flower.request("/metrics", auth=False)[0] == 401
    assert flower.request("/healthcheck", auth=False)[0] == 401
    status, text = flower.request("/metrics")
    assert status == 200 and "flower_" in str(text)
    assert flower.request("/healthcheck") == (200, "OK")


def test_a_worker_started_without_events_stays_without_them_while_flower_runs(flower):
    quiet = start_worker(f"quiet-{secrets.token_hex(2)}", env=flower.env)  # no -E
    try:
        deadline = time.monotonic() + 30
        while quiet.name not in str(flower.request("/api/workers?refresh=1")[1]):
            assert time.monotonic() < deadline, "flower does not see the worker"  # its broadcasts reach it
            time.sleep(0.5)
        time.sleep(2 * 5 + 1)  # Flower's enable_events timer fires every 5 s
        log = quiet.log.read_text()
        assert "enabled by remote" not in log, [line for line in log.splitlines() if "remote" in line]
    finally:
        quiet.stop()


def test_dead_letter_queues_show_in_flower_queue_lengths(flower):
    if "TLOGSYNC_BROKER_API" not in flower.env:
        need(False, "RabbitMQ management API on 127.0.0.1:15672 (rabbitmq-plugins enable rabbitmq_management)")
    status, body = flower.request("/api/queues/length")
    assert status == 200
    names = {q["name"] for q in body["active_queues"]}
    assert {"tlog.ingest", "tlog.ingest.dead", "brokering.dead"} <= names


def test_a_dead_lettered_file_is_replayed_through_flowers_api(flower, make_retailer, sshd, db, ledger):
    r = make_retailer()
    sale = make_sale(1, "SEND_SALE", order_prefix=f"FL{uuid.uuid4().hex[:4].upper()}")
    r.put("flower.json", dumps(sale))
    # the retailer vanishes from the configuration while its file is in flight: the ingest is dead-lettered
    options = conftest._RETAILERS.pop(r.retailer_id)
    conftest.write_retailers(sshd)
    from worker.services.ports import Claim

    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim("flower.json", str(r.inbound / "flower.json"), 1, 1.0)])
    status, sent = flower.request(
        "/api/task/async-apply/tlogsync.ingest_tlog", {"args": [r.retailer_id, row.id, "flower.json"]}
    )
    assert status == 200, sent
    eventually(lambda: r.retailer_id in flower.cli("dlq", "list", "tlog.ingest", "--json").stdout, "the dead letter")
    conftest._RETAILERS[r.retailer_id] = options
    conftest.write_retailers(sshd)
    status, sent = flower.request(
        "/api/task/async-apply/tlogsync.ops.replay_dead_letters", {"kwargs": {"queue": "tlog.ingest", "all": True}}
    )
    assert status == 200, sent
    eventually(
        lambda: (
            db.execute("SELECT status FROM tlog_files WHERE id = %s AND moved_at IS NOT NULL", (row.id,)).fetchone()
            == ("processed",)
        ),
        "the replayed file processed",
    )
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (1,)
    assert r.retailer_id not in flower.cli("dlq", "list", "tlog.ingest", "--json").stdout
    # and a fixed file from error_dir, replayed the same way
    broken = dict(make_sale(2, "IN_STORE", order_prefix=f"FL{uuid.uuid4().hex[:4].upper()}"))
    good = dumps(broken)
    broken["totalAmount"] += 5
    r.put("fixme.json", dumps(broken))
    assert flower.cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    (r.error / "fixme.json").write_bytes(good)
    status, sent = flower.request(
        "/api/task/async-apply/tlogsync.ops.replay_file", {"args": [r.retailer_id, "fixme.json"]}
    )
    assert status == 200, sent
    eventually(
        lambda: db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (2,),
        "the fixed file stored",
    )


def test_the_dashboard_in_headless_chromium_lists_workers_and_tasks(flower, make_retailer, db):
    if not CHROMIUM.exists():
        need(False, "Chromium (apt-get install chromium)")
    sync_api = (
        pytest.importorskip("playwright.sync_api")
        if not IN_CI
        else __import__("playwright.sync_api", fromlist=["sync_playwright"])
    )
    r = make_retailer()
    names = []
    for seq in range(5):
        name = f"browser{seq}.json"
        r.put(name, dumps(make_sale(seq, "IN_STORE", order_prefix=f"BR{uuid.uuid4().hex[:4].upper()}")))
        names.append(name)
    assert flower.cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    profile = SESSION_DIR / f"chromium-{secrets.token_hex(2)}"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        try:
            context = browser.new_context(http_credentials={"username": flower.user, "password": flower.password})
            page = context.new_page()
            page.goto(flower.url + "/workers", wait_until="networkidle")
            assert flower.worker.name in page.content()
            page.goto(flower.url + "/tasks", wait_until="networkidle")
            page.wait_for_selector("text=tlogsync.ingest_tlog", timeout=20_000)
            body = page.content()
            assert "tlogsync.ingest_tlog" in body and "tlogsync.scan_retailer" in body
            assert "SUCCESS" in body and flower.worker.name in body
            page.screenshot(path=str(SESSION_DIR / "flower-tasks.png"))
            # a task's page shows its arguments: the retailer and the file it is about
            row = page.locator("tr", has_text="tlogsync.ingest_tlog").first
            link = row.locator("a[href*='/task/']").first.get_attribute("href")
            assert link, "no task link in the ingest row"
            page.goto(flower.url + link if link.startswith("/") else link, wait_until="networkidle")
            detail = page.content()
            assert r.retailer_id in detail and any(name in detail for name in names)
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)
