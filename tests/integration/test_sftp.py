"""The paramiko SFTP adapter against a real OpenSSH sshd (internal-sftp)."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from worker.adapters.sftp import SftpSource
from worker.core.errors import FileMissing, FileTooLarge, HostKeyRejected, SftpConfigError, TransientError
from worker.core.retailers import SftpConfig


@pytest.fixture
def folder(sshd, tmp_path_factory):
    base = sshd.root / f"adapter{len(list(sshd.root.iterdir()))}"
    (base / "in" / "archive").mkdir(parents=True)
    return base


def config(sshd, folder, **changes) -> SftpConfig:
    cfg = SftpConfig(sshd.host, sshd.port, sshd.username, str(sshd.known_hosts), f"{folder}/in",
                     f"{folder}/in/archive", f"{folder}/in/error", private_key=str(sshd.private_key))
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
    from tests.support.sshd import free_port

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
