"""tlogsync's pages in Flower, driven as an operator would in headless Chromium (playwright on Debian's
/usr/bin/chromium): dead letters replayed and purged from their page, a failed file replayed after its fix, Retry
on a failed task's page, every action refused without the xsrf token and recorded with who, when and what.
Screenshots of every page are written under the test's temporary folder."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import conftest
from tests.conftest import IN_CI, need, vhost_env
from tests.e2e.test_flower import CHROMIUM, Flower, _flower
from tests.support.waiting import eventually
from worker.demo.tlogfactory import dumps, make_sale
from worker.services.ports import Claim

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def flower(celery_worker: object) -> Iterator[Flower]:
    # scans get no retry here: one that cannot reach its SFTP host gives up at once
    with vhost_env(
        "pages", FLOWER_USER="ops", FLOWER_PASSWORD=secrets.token_urlsafe(12), TLOGSYNC_SCAN_MAX_RETRIES="0"
    ) as env:
        yield from _flower(env)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flower-screenshots")


@pytest.fixture(scope="module")
def browser(flower: Flower) -> Iterator[Any]:
    if not CHROMIUM.exists():
        need(False, "Chromium (apt-get install chromium)")
    sync_api = (
        pytest.importorskip("playwright.sync_api")
        if not IN_CI
        else __import__("playwright.sync_api", fromlist=["sync_playwright"])
    )
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(
                http_credentials={"username": flower.user, "password": flower.password},
                viewport={"width": 1400, "height": 900},
            )
            yield context
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of Purge and the "all" buttons
    yield page
    page.close()


def _dead_letter_an_ingest(r: Any, flower: Flower, ledger: Any, name: str) -> tuple[int, str, dict[str, object]]:
    """The retailer vanishes from the configuration while its file is in flight: its ingest is dead-lettered.
    Returns the ledger id, the task id and the retailer's options (to put back: the fix)."""
    r.put(name, dumps(make_sale(1, "SEND_SALE", order_prefix=f"FP{uuid.uuid4().hex[:5].upper()}")))
    options = conftest._RETAILERS.pop(r.retailer_id)
    conftest.write_retailers(flower.sshd)  # type: ignore[attr-defined]
    with ledger.scan_transaction(r.retailer_id, "orders") as tx:
        [row] = tx.claim([Claim(name, str(r.inbound / name), 1, 1.0)])
    status, sent = flower.request("/api/task/async-apply/tlogsync.ingest_tlog", {"args": [r.retailer_id, row.id, name]})
    assert status == 200, sent
    task_id = sent["task-id"]  # type: ignore[index]
    return row.id, task_id, options


def _fix_retailer(flower: Flower, r: Any, options: dict[str, object]) -> None:
    conftest._RETAILERS[r.retailer_id] = options
    conftest.write_retailers(flower.sshd)  # type: ignore[attr-defined]


def _dead(db: Any, task_id: str) -> bool:
    return db.execute("SELECT 1 FROM dead_letters WHERE task_id = %s", (task_id,)).fetchone() is not None


def _processed(db: Any, file_id: int) -> bool:
    row = db.execute("SELECT status, moved_at IS NOT NULL FROM tlog_files WHERE id = %s", (file_id,)).fetchone()
    return row == ("processed", True)


def _latest_processed(db: Any, retailer_id: str, name: str) -> bool:
    row = db.execute(
        "SELECT status FROM tlog_files WHERE retailer_id = %s AND file_name = %s ORDER BY id DESC LIMIT 1",
        (retailer_id, name),
    ).fetchone()
    return row == ("processed",)


def _goto(page: Any, flower: Flower, path: str, shots: Path | None = None, shot: str | None = None) -> str:
    page.goto(flower.url + path, wait_until="networkidle")
    if shots is not None and shot:
        page.screenshot(path=str(shots / shot), full_page=True)
    return page.content()


def _until_listed(page: Any, locator: Any, what: str) -> None:
    def listed() -> bool:
        if locator.count() == 1:
            return True
        page.reload(wait_until="networkidle")
        return False

    eventually(listed, what)


@pytest.fixture(autouse=True)
def _sshd_on_flower(flower: Flower, sshd: Any) -> None:
    flower.sshd = sshd  # type: ignore[attr-defined]


def test_the_pages_are_in_flowers_navigation_behind_its_auth(flower, page, shots):
    html = _goto(page, flower, "/workers")
    for label, path in (("Dead letters", "/tlogsync/dead-letters"), ("Failed files", "/tlogsync/files")):
        assert label in html
        page.click(f"nav >> text={label}")
        page.wait_for_load_state("networkidle")
        assert page.url.endswith(path)
        assert "Workers" in page.content() and "Broker" in page.content()  # Flower's own navbar, same look
    page.click("nav >> text=Actions")
    page.wait_for_load_state("networkidle")
    assert page.url.endswith("/tlogsync/actions")
    for path in ("/tlogsync/dead-letters", "/tlogsync/files", "/tlogsync/actions", "/tlogsync/api/dead-letters"):
        assert flower.request(path, auth=False)[0] == 401, path


def test_replay_on_the_dead_letter_page_after_fixing_the_cause_processes_the_file(
    flower, page, shots, make_retailer, ledger, db
):
    r = make_retailer()
    file_id, task_id, options = _dead_letter_an_ingest(r, flower, ledger, "deadletter.json")
    eventually(lambda: _dead(db, task_id), "the dead letter recorded")
    html = _goto(page, flower, "/tlogsync/dead-letters?queue=tlog.ingest")
    row = page.locator(f"tr[data-task-id='{task_id}']")
    _until_listed(page, row, "the letter listed")
    text = row.inner_text()
    assert "tlogsync.ingest_tlog" in text and "UnknownRetailer" in text and "deadletter.json" in text
    assert f'["{r.retailer_id}", {file_id}, "deadletter.json"]' in html.replace("&quot;", '"')  # JSON, whole
    page.screenshot(path=str(shots / "dead-letters.png"), full_page=True)
    _fix_retailer(flower, r, options)  # the cause fixed
    row.locator("button[data-action='replay']").click()
    page.wait_for_load_state("networkidle")
    assert "replayed 1 from tlog.ingest.dead" in page.locator("#tlogsync-action-result").inner_text()
    eventually(lambda: _processed(db, file_id), "the replayed file processed")
    assert db.execute("SELECT count(*) FROM orders WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (1,)
    eventually(
        lambda: (
            db.execute("SELECT resolved_at IS NOT NULL FROM dead_letters WHERE task_id = %s", (task_id,)).fetchone()
            == (True,)
        ),
        "the dead letter resolved by its replay's success",
    )
    action = db.execute(
        "SELECT actor, action, target->>'task_id', ok, result, at IS NOT NULL FROM operator_actions"
        " WHERE target->>'task_id' = %s",
        (task_id,),
    ).fetchone()
    assert action[:4] == ("ops", "replay dead letter", task_id, True) and action[5], action
    _goto(page, flower, "/tlogsync/dead-letters")
    assert page.locator(f"tr[data-task-id='{task_id}']").count() == 0  # not in the queue any more


def test_purge_on_the_dead_letter_page_removes_it_and_marks_it(flower, page, shots, make_retailer, ledger, db):
    r = make_retailer()
    _, task_id, options = _dead_letter_an_ingest(r, flower, ledger, "purgeme.json")
    eventually(lambda: _dead(db, task_id), "the dead letter recorded")
    _fix_retailer(flower, r, options)
    _goto(page, flower, "/tlogsync/dead-letters?queue=tlog.ingest")
    row = page.locator(f"tr[data-task-id='{task_id}']")
    _until_listed(page, row, "the letter listed")
    row.locator("button[data-action='purge']").click()
    page.wait_for_load_state("networkidle")
    assert "purged 1 from tlog.ingest.dead" in page.locator("#tlogsync-action-result").inner_text()
    assert db.execute(
        "SELECT purged_by, purged_at IS NOT NULL FROM dead_letters WHERE task_id = %s", (task_id,)
    ).fetchone() == ("ops", True)
    assert page.locator(f"tr[data-task-id='{task_id}']").count() == 0
    # the purged letter shows in the page's history, and counts as dead no more
    assert task_id in page.content()
    open_ = db.execute(
        "SELECT count(*) FROM dead_letters WHERE task_id = %s AND resolved_at IS NULL AND purged_at IS NULL",
        (task_id,),
    ).fetchone()
    assert open_ == (0,)


def _bad_file(r: Any, flower: Flower, name: str) -> bytes:
    """A sale whose total does not add up: failed and moved to error_dir. Returns the good bytes (the fix)."""
    sale = dict(make_sale(2, "IN_STORE", order_prefix=f"FP{uuid.uuid4().hex[:5].upper()}"))
    good = dumps(sale)
    sale["totalAmount"] += 5
    r.put(name, dumps(sale))
    assert flower.cli("scan", r.retailer_id, "--wait", "--timeout", "60").returncode == 0
    return good


def test_a_bad_files_ingest_is_a_failure_in_flower_and_replay_file_processes_it_once_fixed(
    flower, page, shots, make_retailer, db
):
    r = make_retailer()
    good = _bad_file(r, flower, "fixme.json")
    file_id, moved_to = db.execute(
        "SELECT id, moved_to FROM tlog_files WHERE retailer_id = %s AND file_name = 'fixme.json' AND status = 'failed'",
        (r.retailer_id,),
    ).fetchone()
    # the ingest ended FAILURE with the reason, neither retried nor dead-lettered: Flower's Failed filter has it
    [failure] = db.execute("SELECT task_id, kind, reason FROM task_failures WHERE file_id = %s", (file_id,)).fetchall()
    assert failure[1] == "file_failed" and "fixme.json" in failure[2]
    assert db.execute("SELECT count(*) FROM dead_letters WHERE retailer_id = %s", (r.retailer_id,)).fetchone() == (0,)
    eventually(lambda: failure[0] in str(flower.request("/api/tasks?state=FAILURE")[1]), "the failed ingest in Flower")
    _, tasks = flower.request("/api/tasks?state=FAILURE")
    task = tasks[failure[0]]  # type: ignore[index]
    assert "FileFailed" in task["exception"] and "fixme.json" in task["exception"]
    assert r.retailer_id in task["args"] and "fixme.json" in task["args"]  # which retailer and file it is about
    _goto(page, flower, "/tasks", shots, "flower-tasks.png")
    page.click("button[data-task-state='FAILURE']")
    page.wait_for_selector(f"text={failure[0][:8]}", timeout=20_000)
    page.screenshot(path=str(shots / "flower-failed-tasks.png"), full_page=True)
    # the files page lists it by retailer with the reason; the fix goes into error_dir, then Replay file
    _goto(page, flower, f"/tlogsync/files?retailer={r.retailer_id}")
    row = page.locator(f"tr[data-file-id='{file_id}']")
    assert row.count() == 1 and "failed" in row.inner_text() and "fixme.json" in row.inner_text()
    _goto(page, flower, "/tlogsync/files", shots, "failed-files.png")
    (r.error / Path(moved_to).name).write_bytes(good)
    page.locator(f"tr[data-file-id='{file_id}'] button[data-action='replay-file']").click()
    page.wait_for_load_state("networkidle")
    shown = page.locator("#tlogsync-action-result").inner_text()  # sent to a worker, or done by it already
    assert "replay file by ops" in shown and "fixme.json" in shown, shown
    eventually(lambda: _latest_processed(db, r.retailer_id, "fixme.json"), "the fixed file processed")
    eventually(
        lambda: (
            db.execute(
                "SELECT ok FROM operator_actions WHERE action = 'replay file' AND (target->>'file_id')::bigint = %s",
                (file_id,),
            ).fetchone()
            == (True,)
        ),
        "the worker's result on the action",
    )
    _goto(page, flower, f"/tlogsync/files?retailer={r.retailer_id}")
    assert page.locator(f"tr[data-file-id='{file_id}']").count() == 0  # replayed: no longer waiting for a fix


def test_retry_on_a_failed_tasks_page_resends_it_with_the_arguments_from_postgresql(
    flower, page, shots, make_retailer, ledger, db
):
    r = make_retailer()
    file_id, task_id, options = _dead_letter_an_ingest(r, flower, ledger, "retryme.json")
    eventually(lambda: _dead(db, task_id), "the dead letter recorded")
    eventually(lambda: "FAILURE" in str(flower.request(f"/api/task/info/{task_id}")[1]), "Flower has it FAILURE")
    _fix_retailer(flower, r, options)
    _goto(page, flower, f"/task/{task_id}", shots, "task-retry.png")
    page.click("#tlogsync-retry")
    page.wait_for_load_state("networkidle")
    assert page.url.split("?")[0].endswith("/tlogsync/actions")
    result = page.locator("#tlogsync-action-result").inner_text()
    assert "sent tlogsync.ingest_tlog again as task" in result and "arguments from dead_letters" in result
    eventually(lambda: _processed(db, file_id), "the retried file processed")
    letter = db.execute(
        "SELECT replayed_by, replayed_as, resolved_at IS NOT NULL FROM dead_letters WHERE task_id = %s", (task_id,)
    ).fetchone()
    assert letter[0] == "ops" and letter[1]
    eventually(
        lambda: (
            db.execute("SELECT resolved_at IS NOT NULL FROM dead_letters WHERE task_id = %s", (task_id,)).fetchone()
            == (True,)
        ),
        "resolved by the retry's success",
    )
    _goto(page, flower, "/tlogsync/actions", shots, "actions.png")
    assert task_id in page.content()
    assert page.locator(f"a[href$='/task/{letter[1]}']", has_text="open the task").count() == 1


def test_retry_on_a_failed_files_task_page_replays_the_file(flower, page, make_retailer, db):
    r = make_retailer()
    good = _bad_file(r, flower, "retryfile.json")
    file_id, moved_to = db.execute(
        "SELECT id, moved_to FROM tlog_files WHERE retailer_id = %s AND file_name = 'retryfile.json'",
        (r.retailer_id,),
    ).fetchone()
    [(task_id,)] = db.execute("SELECT task_id FROM task_failures WHERE file_id = %s", (file_id,)).fetchall()
    (r.error / Path(moved_to).name).write_bytes(good)
    eventually(lambda: "FAILURE" in str(flower.request(f"/api/task/info/{task_id}")[1]), "Flower has it FAILURE")
    _goto(page, flower, f"/task/{task_id}")
    page.click("#tlogsync-retry")
    page.wait_for_load_state("networkidle")
    assert "retryfile.json" in page.locator("#tlogsync-action-result").inner_text()
    eventually(lambda: _latest_processed(db, r.retailer_id, "retryfile.json"), "the fixed file processed")


def _post(flower: Flower, path: str, body: bytes, headers: dict[str, str]) -> int:
    token = base64.b64encode(f"{flower.user}:{flower.password}".encode()).decode()
    req = urllib.request.Request(
        flower.url + path,
        data=body,
        method="POST",
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test server
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_action_without_the_xsrf_token_or_from_another_site_is_refused_and_not_done(flower, page, db):
    before = db.execute("SELECT count(*) FROM operator_actions").fetchone()
    # with the right credentials, but no token: what a forged form on another site would send
    assert _post(flower, "/tlogsync/dead-letters/purge", b"queue=tlog.ingest&all=1", {}) == 403
    assert _post(flower, "/tlogsync/task/abc/retry", b"", {}) == 403
    # with a token and its cookie, but from another site
    _goto(page, flower, "/tlogsync/dead-letters")
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "_xsrf")
    headers = {"Cookie": f"_xsrf={cookie}", "Sec-Fetch-Site": "cross-site"}
    assert _post(flower, "/tlogsync/files/replay", f"file_id=1&_xsrf={cookie}".encode(), headers) == 403
    assert db.execute("SELECT count(*) FROM operator_actions").fetchone() == before
    # and the same request from the page's own origin, with the token, is taken (and recorded)
    headers["Sec-Fetch-Site"] = "same-origin"
    assert _post(flower, "/tlogsync/files/replay", f"file_id=0&_xsrf={cookie}".encode(), headers) in (200, 303)
    [(actor, ok, result)] = db.execute(
        "SELECT actor, ok, result FROM operator_actions WHERE action = 'replay file' AND target->>'file_id' = '0'"
    ).fetchall()
    assert actor == "ops" and ok is False and "no ledger row 0" in result


def test_the_json_api_lists_dead_letters_whole(flower, make_retailer, ledger, db):
    r = make_retailer()
    file_id, task_id, options = _dead_letter_an_ingest(r, flower, ledger, "api.json")
    eventually(lambda: _dead(db, task_id), "the dead letter recorded")
    try:
        status, letters = flower.request("/tlogsync/api/dead-letters?queue=tlog.ingest")
        assert status == 200
        [mine] = [d for d in letters if d["task_id"] == task_id]  # type: ignore[union-attr]
        assert mine["body_args"] == [r.retailer_id, file_id, "api.json"] and "UnknownRetailer" in mine["reason"]
        assert mine["state"] == "dead"
    finally:
        _fix_retailer(flower, r, options)


def test_a_scan_out_of_retries_is_not_dead_lettered_and_retry_on_its_page_scans_again(
    flower, page, shots, make_retailer, sshd, db
):
    import dataclasses

    from worker.adapters.postgres.pool import open_pool
    from worker.demo.sshd import free_port
    from worker.monitoring.deadletter_metrics import DeadLetterCollector

    r = make_retailer()
    # its SFTP host unreachable (nothing listens on that port): the scan's one try fails, transiently
    others = [d for d in conftest._RETAILERS.values() if d.retailer_id != r.retailer_id]
    broken = conftest.render_retailers(dataclasses.replace(sshd, port=free_port()), [r])
    conftest.RETAILERS_PATH.with_suffix(".tmp").write_text(conftest.render_retailers(sshd, others) + "\n" + broken)
    conftest.RETAILERS_PATH.with_suffix(".tmp").replace(conftest.RETAILERS_PATH)
    status, sent = flower.request("/api/task/async-apply/tlogsync.scan_retailer", {"args": [r.retailer_id]})
    assert status == 200, sent
    task_id = sent["task-id"]  # type: ignore[index]
    eventually(
        lambda: db.execute("SELECT kind FROM task_failures WHERE task_id = %s", (task_id,)).fetchone() == ("gave_up",),
        "the scan given up and recorded",
    )
    assert db.execute("SELECT count(*) FROM dead_letters WHERE task_id = %s", (task_id,)).fetchone() == (0,)
    eventually(lambda: "gave up, not dead-lettered" in flower.worker.log.read_text(), "the log line")
    eventually(lambda: "LeftToSchedule" in str(flower.request(f"/api/task/info/{task_id}")[1]), "FAILURE in Flower")
    # counted: tlogsync_scans_given_up_total{retailer}
    with open_pool(flower.env["TLOGSYNC_DATABASE_URL"], max_size=1) as pool:
        families = {f.name: f for f in DeadLetterCollector(pool, lambda: [r.retailer_id]).collect()}
    [sample] = [s for s in families["tlogsync_scans_given_up"].samples if s.labels == {"retailer": r.retailer_id}]
    assert sample.name == "tlogsync_scans_given_up_total" and sample.value == 1.0
    conftest.write_retailers(sshd)  # the host is back
    r.put("afterretry.json", dumps(make_sale(3, "SEND_SALE", order_prefix=f"FP{uuid.uuid4().hex[:5].upper()}")))
    _goto(page, flower, f"/task/{task_id}")
    page.click("#tlogsync-retry")
    page.wait_for_load_state("networkidle")
    assert "sent tlogsync.scan_retailer again" in page.locator("#tlogsync-action-result").inner_text()
    eventually(lambda: _latest_processed(db, r.retailer_id, "afterretry.json"), "the retried scan's file processed")


def test_dlq_purge_on_the_command_line_marks_what_it_removes(flower, make_retailer, ledger, db):
    r = make_retailer()
    _, task_id, options = _dead_letter_an_ingest(r, flower, ledger, "clipurge.json")
    eventually(lambda: _dead(db, task_id), "the dead letter recorded")
    _fix_retailer(flower, r, options)
    status = flower.cli("status", "--json")
    assert json.loads(status.stdout)["dead_letters_unresolved"]["tlog.ingest"] >= 1, status
    refused = flower.cli("dlq", "purge")
    assert refused.returncode == 2 and "--all" in refused.stderr
    assert flower.cli("dlq", "purge", "tlog.nope").returncode == 2
    missing = flower.cli("dlq", "purge", "tlog.ingest", "--id", "no-such-task")
    assert missing.returncode == 1 and "no-such-task" in missing.stderr
    done = flower.cli("dlq", "purge", "tlog.ingest", "--id", task_id)
    assert done.returncode == 0 and "purged 1 from tlog.ingest.dead" in done.stdout, done
    purged_by, purged = db.execute(
        "SELECT purged_by, purged_at IS NOT NULL FROM dead_letters WHERE task_id = %s", (task_id,)
    ).fetchone()
    assert purged and purged_by.endswith("(tlogsync cli)")
    assert db.execute(
        "SELECT action, ok FROM operator_actions WHERE target->>'task_id' = %s AND actor = %s", (task_id, purged_by)
    ).fetchone() == ("purge dead letter", True)
    assert task_id not in flower.cli("dlq", "list", "tlog.ingest", "--json").stdout


def test_replay_all_and_purge_all_act_on_the_whole_queue(flower, page, make_retailer, ledger, db):
    r = make_retailer()
    first, t1, options = _dead_letter_an_ingest(r, flower, ledger, "all1.json")
    conftest._RETAILERS[r.retailer_id] = options  # back for a moment: the helper takes it out again
    second, t2, _ = _dead_letter_an_ingest(r, flower, ledger, "all2.json")
    eventually(lambda: _dead(db, t1) and _dead(db, t2), "both dead letters recorded")
    _fix_retailer(flower, r, options)
    _goto(page, flower, "/tlogsync/dead-letters?queue=tlog.ingest")
    _until_listed(page, page.locator(f"tr[data-task-id='{t2}']"), "the second letter listed")
    page.click("#replay-all-tlog\\.ingest")
    page.wait_for_load_state("networkidle")
    assert "replay dead-letter queue by ops" in page.locator("#tlogsync-action-result").inner_text()
    eventually(lambda: _processed(db, first) and _processed(db, second), "both replayed files processed")
    r2 = make_retailer()
    _, t3, options2 = _dead_letter_an_ingest(r2, flower, ledger, "all3.json")
    eventually(lambda: _dead(db, t3), "the third dead letter recorded")
    _fix_retailer(flower, r2, options2)
    _goto(page, flower, "/tlogsync/dead-letters?queue=tlog.ingest")
    _until_listed(page, page.locator(f"tr[data-task-id='{t3}']"), "the third letter listed")
    page.click("#purge-all-tlog\\.ingest")
    page.wait_for_load_state("networkidle")
    assert "purged" in page.locator("#tlogsync-action-result").inner_text()
    assert db.execute("SELECT purged_by FROM dead_letters WHERE task_id = %s", (t3,)).fetchone() == ("ops",)
    assert page.locator("tr.tlogsync-dead-letter").count() == 0  # the queue is empty
    assert "No dead letters." in page.locator("#queue-tlog\\.ingest").inner_text()
