"""The paramiko SFTP adapter against a real OpenSSH sshd (internal-sftp)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import paramiko
import pytest

from worker.adapters import sftp_fastpath
from worker.adapters.sftp import SftpSessions, SftpSource
from worker.core.errors import FileMissing, FileTooLarge, HostKeyRejected, SftpConfigError, TransientError
from worker.core.retailers import SftpConfig


@pytest.fixture
def folder(sshd, tmp_path_factory):
    base = sshd.root / f"adapter{len(list(sshd.root.iterdir()))}"
    (base / "in" / "archive").mkdir(parents=True)
    return base


def config(sshd, folder, **changes) -> SftpConfig:
    cfg = SftpConfig(
        sshd.host,
        sshd.port,
        sshd.username,
        str(sshd.known_hosts),
        f"{folder}/in",
        f"{folder}/in/archive",
        f"{folder}/in/error",
        private_key=str(sshd.private_key),
    )
    return dataclasses.replace(cfg, **changes)


def test_list_read_move_write_on_one_connection(sshd, folder):
    (folder / "in" / "a.json").write_bytes(b'{"x": 1}')
    src = SftpSource(config(sshd, folder))
    try:
        listing = {e.name: e for e in src.list(f"{folder}/in")}
        assert listing["a.json"].size == 8 and listing["a.json"].is_file
        assert not listing["archive"].is_file
        assert src.read(f"{folder}/in/a.json", 100) == b'{"x": 1}'
        transport = src._client.get_transport()
        assert src.move(f"{folder}/in/a.json", f"{folder}/in/archive/a.json")
        assert not src.move(f"{folder}/in/a.json", f"{folder}/in/archive/a.json")
        assert src.exists(f"{folder}/in/archive/a.json") and not src.exists(f"{folder}/in/a.json")
        src.write(f"{folder}/in/archive/a.json.error.txt", b"why")
        assert (folder / "in" / "archive" / "a.json.error.txt").read_bytes() == b"why"
        assert src._client.get_transport() is transport  # the same SSH session throughout
    finally:
        src.close()


def test_read_limits_and_missing_files(sshd, folder):
    (folder / "in" / "big.json").write_bytes(b"x" * 5000)
    src = SftpSource(config(sshd, folder))
    try:
        with pytest.raises(FileTooLarge):
            src.read(f"{folder}/in/big.json", 4999)
        assert len(src.read(f"{folder}/in/big.json", 5000)) == 5000
        with pytest.raises(FileMissing):
            src.read(f"{folder}/in/none.json", 10)
    finally:
        src.close()


def test_host_key_mismatch_is_refused(sshd, folder, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    src = SftpSource(config(sshd, folder, known_hosts=str(wrong)))
    with pytest.raises((HostKeyRejected, TransientError)) as info:
        src.list(f"{folder}/in")
    assert "host key" in str(info.value) or "known_hosts" in str(info.value)


def test_unknown_host_is_refused_not_added(sshd, folder, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    src = SftpSource(config(sshd, folder, known_hosts=str(empty)))
    with pytest.raises(HostKeyRejected, match="not in"):
        src.list(f"{folder}/in")
    assert empty.read_text() == ""


def test_missing_known_hosts_is_a_config_error(sshd, folder, tmp_path):
    src = SftpSource(config(sshd, folder, known_hosts=str(tmp_path / "absent")))
    with pytest.raises(SftpConfigError):
        src.list(f"{folder}/in")


def test_missing_password_env_is_a_config_error(sshd, folder):
    src = SftpSource(config(sshd, folder, private_key=None, password_env="TLOGSYNC_TEST_NO_SUCH_VAR"))
    with pytest.raises(SftpConfigError, match="TLOGSYNC_TEST_NO_SUCH_VAR"):
        src.list(f"{folder}/in")


def test_unreachable_server_is_transient(sshd, folder):
    from worker.demo.sshd import free_port

    src = SftpSource(config(sshd, folder, port=free_port()))
    with pytest.raises(TransientError, match="cannot connect"):
        src.list(f"{folder}/in")


def test_reconnects_after_the_session_dies(sshd, folder):
    (folder / "in" / "a.json").write_bytes(b"{}")
    src = SftpSource(config(sshd, folder))
    try:
        src.list(f"{folder}/in")
        src._client.get_transport().close()  # the server or the network dropped us
        assert [e.name for e in src.list(f"{folder}/in") if e.is_file] == ["a.json"]
    finally:
        src.close()


def test_a_refused_password_never_appears_in_errors_or_logs(sshd, folder, monkeypatch, caplog):
    secret = "s3cret-do-not-log"
    monkeypatch.setenv("TLOGSYNC_TEST_SFTP_PASSWORD", secret)
    src = SftpSource(config(sshd, folder, private_key=None, password_env="TLOGSYNC_TEST_SFTP_PASSWORD"))
    caplog.set_level("DEBUG")
    with pytest.raises(SftpConfigError, match="authentication failed") as info:
        src.list(f"{folder}/in")
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert secret not in caplog.text


def test_a_missing_destination_folder_is_a_configuration_error_and_the_file_stays(sshd, folder):
    (folder / "in" / "a.json").write_bytes(b"{}")
    src = SftpSource(config(sshd, folder))
    try:
        with pytest.raises(SftpConfigError, match="destination folder does not exist"):
            src.move(f"{folder}/in/a.json", f"{folder}/nowhere/a.json")
        assert (folder / "in" / "a.json").exists()
        assert not src.move(f"{folder}/in/gone.json", f"{folder}/in/archive/gone.json")  # source gone: False
    finally:
        src.close()


def test_a_missing_or_unusable_private_key_is_a_configuration_error(sshd, folder, tmp_path):
    with pytest.raises(SftpConfigError, match="no such file"):
        SftpSource(config(sshd, folder, private_key=str(tmp_path / "absent"))).list(f"{folder}/in")
    junk = tmp_path / "junk_key"
    junk.write_text("not a key\n")
    with pytest.raises(SftpConfigError, match="not a usable private key"):
        SftpSource(config(sshd, folder, private_key=str(junk))).list(f"{folder}/in")


def test_reads_with_and_without_the_listed_size_return_the_whole_file(sshd, folder):
    src = SftpSource(config(sshd, folder))
    try:
        for size in (0, 1, 32768, 32769, 255 * 1024, 255 * 1024 + 1, 600_000):
            path = folder / "in" / f"f{size}"
            data = os.urandom(size)
            path.write_bytes(data)
            assert src.read(str(path), 10**7) == data
            assert src.read(str(path), 10**7, size) == data
            if size:
                assert src.read(str(path), 10**7, size - 1) == data  # grew since it was listed
    finally:
        src.close()


# ------------------------------------------------------------ the fast path (paramiko internals) and its fallback


@pytest.fixture(params=[True, False], ids=["fast-path", "public-api"])
def fast(request, monkeypatch) -> bool:
    monkeypatch.setattr(sftp_fastpath, "FAST", request.param)
    return request.param


def counting(src: SftpSource) -> list[int]:
    """Count the requests sent on src's session from now on (connecting it first)."""
    sent = [0]
    assert sftp_fastpath.observe_requests(src.sftp, lambda: sent.__setitem__(0, sent[0] + 1))
    return sent


def test_both_read_paths_return_the_whole_file_and_refuse_a_large_one(sshd, folder, fast):
    src = SftpSource(config(sshd, folder))
    try:
        for size in (0, 1, 255 * 1024, 255 * 1024 + 1, 600_000):
            path = folder / "in" / f"p{size}"
            data = os.urandom(size)
            path.write_bytes(data)
            assert src.read(str(path), 10**7) == data
            assert src.read(str(path), 10**7, size) == data
            if size:
                assert src.read(str(path), 10**7, size - 1) == data  # grew since it was listed
                with pytest.raises(FileTooLarge):
                    src.read(str(path), size - 1, size)
            assert src.read(str(path), size, size) == data  # exactly the limit is fine
        assert [e.name for e in src.list(f"{folder}/in") if e.is_file]  # the session is still usable
    finally:
        src.close()


def test_the_fast_path_reads_a_listed_file_in_one_request_and_does_not_wait_for_the_close(sshd, folder, fast):
    (folder / "in" / "a.json").write_bytes(b'{"orderId": "A1"}')
    src = SftpSource(config(sshd, folder))
    try:
        sent = counting(src)
        assert src.read(f"{folder}/in/a.json", 1000, 17) == b'{"orderId": "A1"}'
        # open, read, close; the public API reads once more to see the end of the file
        assert sent[0] == (3 if fast else 4)
        assert src.exists(f"{folder}/in/a.json")  # the unanswered close left the session in step
    finally:
        src.close()


def test_the_fast_path_is_on_for_the_paramiko_version_pinned_in_pyproject():
    pin = re.search(
        r'"paramiko>=([0-9]+)\.([0-9]+),<([0-9]+)\.([0-9]+)"',
        (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(),
    )
    assert pin, "paramiko must be pinned to one minor version, e.g. paramiko>=5.1,<5.2"
    assert (int(pin[1]), int(pin[2])) == sftp_fastpath.TESTED
    assert (int(pin[3]), int(pin[4])) == (sftp_fastpath.TESTED[0], sftp_fastpath.TESTED[1] + 1)
    assert sftp_fastpath.SUPPORTED and sftp_fastpath.FAST


def test_the_fast_path_is_off_for_another_paramiko_version_or_a_missing_attribute(monkeypatch):
    tested = "{}.{}".format(*sftp_fastpath.TESTED)
    assert sftp_fastpath.fast_path_available(f"{tested}.0")
    assert sftp_fastpath.fast_path_available(f"{tested}.9")
    assert not sftp_fastpath.fast_path_available(f"{sftp_fastpath.TESTED[0]}.{sftp_fastpath.TESTED[1] + 1}.0")
    assert not sftp_fastpath.fast_path_available(f"{sftp_fastpath.TESTED[0] + 1}.0.0")
    assert not sftp_fastpath.fast_path_available("unknown")
    monkeypatch.delattr(paramiko.SFTPFile, "_read")
    assert not sftp_fastpath.fast_path_available(f"{tested}.0")


def test_no_request_is_observed_when_the_version_is_not_the_tested_one(monkeypatch):
    monkeypatch.setattr(sftp_fastpath, "SUPPORTED", False)

    class Session:
        def _async_request(self) -> None:
            raise AssertionError("not to be called")

    session = Session()
    assert not sftp_fastpath.observe_requests(session, lambda: None)  # type: ignore[arg-type]
    assert session._async_request.__func__ is Session._async_request  # type: ignore[attr-defined]


# ------------------------------------------------------------ known_hosts: read by us, line by line

FAKE_SECRET = "AKIAsecretTOKEN0123456789"


def server_line(sshd) -> str:
    return sshd.known_hosts.read_text().strip()


@pytest.mark.parametrize(
    "garbage",
    [
        FAKE_SECRET,  # a secret pasted by mistake, alone on its line
        f"sftp.example.com ssh-ed25519 {FAKE_SECRET}!",  # not base64
        f"sftp.example.com ssh-ed25519 {FAKE_SECRET[:24]}",  # base64, but not a key
        f"@{FAKE_SECRET} sftp.example.com ssh-ed25519 AAAA",  # an unknown marker
    ],
    ids=["lone-word", "not-base64", "not-a-key", "unknown-marker"],
)
def test_a_known_hosts_line_that_cannot_be_read_is_named_by_file_and_line_never_by_content(
    sshd, folder, tmp_path, caplog, garbage
):
    known = tmp_path / "known_hosts"
    known.write_text(f"# ours\n{server_line(sshd)}\n{garbage}\n")
    caplog.set_level("DEBUG")
    src = SftpSource(config(sshd, folder, known_hosts=str(known)))
    with pytest.raises(SftpConfigError) as info:
        src.list(f"{folder}/in")
    assert str(info.value).startswith(f"known_hosts {known} line 3: ")
    for text in (str(info.value), repr(info.value), repr(info.value.args), caplog.text):
        assert FAKE_SECRET not in text and "secretTOKEN" not in text
    chained = info.value.__cause__ or info.value.__context__
    assert chained is None or FAKE_SECRET not in str(chained)


def test_a_cert_authority_line_is_skipped_with_a_warning_and_the_host_line_still_connects(
    sshd, folder, tmp_path, caplog
):
    key = server_line(sshd).split()[2]
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority *.example.com ssh-ed25519 {key}\n{server_line(sshd)}\n")
    caplog.set_level("WARNING")
    src = SftpSource(config(sshd, folder, known_hosts=str(known)))
    try:
        assert src.list(f"{folder}/in") is not None
    finally:
        src.close()
    assert f"known_hosts {known} line 1: @cert-authority" in caplog.text and key not in caplog.text


def test_a_server_presenting_a_revoked_key_is_refused(sshd, folder, tmp_path):
    host, kind, key = server_line(sshd).split()[:3]
    known = tmp_path / "known_hosts"
    known.write_text(f"{host} {kind} {key}\n@revoked * {kind} {key}\n")
    src = SftpSource(config(sshd, folder, known_hosts=str(known)))
    with pytest.raises(HostKeyRejected, match=f"revoked in {known} line 2"):
        src.list(f"{folder}/in")


def test_hashed_host_names_and_comments_are_read_as_openssh_writes_them(sshd, folder, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"# a comment\n\n{server_line(sshd)} added by ops\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "|1|" in known.read_text()
    src = SftpSource(config(sshd, folder, known_hosts=str(known)))
    try:
        assert src.list(f"{folder}/in") is not None
    finally:
        src.close()


def test_tasks_running_at_once_each_get_a_session_and_sessions_are_reused(sshd, folder):
    sessions = SftpSessions(10.0)
    cfg = config(sshd, folder)
    try:
        with sessions.source("acme", cfg) as first, sessions.source("acme", cfg) as second:
            assert first is not second  # two threads never share one SFTP session
            first.list(f"{folder}/in")
            second.list(f"{folder}/in")
        with sessions.source("acme", cfg) as again:
            assert again in (first, second)  # given back, then reused: no new connection
        with sessions.source("acme", config(sshd, folder, archive_dir=f"{folder}/in/other")) as fresh:
            assert fresh not in (first, second)  # a changed configuration gets new sessions
    finally:
        sessions.close()
