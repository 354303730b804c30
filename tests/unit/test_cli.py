"""The `tlogsync` command line behaves like Celery's: click, help on everything, --version, options from the
environment, errors on stderr in one line, and the documented exit codes (0 done, 1 look, 2 usage, 3 unreachable)."""

from __future__ import annotations

import socket
import subprocess
import sys

import click
import pytest

from worker.cli.main import cli, main

EVERY_COMMAND = {
    "migrate", "retailers", "scan", "replay-file", "status", "metrics", "flower",
    "facilities", "inventory", "broker", "dlq", "audit", "demo",
}  # fmt: skip


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


def tlogsync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_the_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in EVERY_COMMAND:
        assert f"  {name} " in out, name
    assert "Exit codes" in out and "TLOGSYNC_" in out
    assert set(cli.commands) >= EVERY_COMMAND


def test_every_command_and_option_has_help_text():
    for path, command in walk(cli):
        assert command.help, path
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, (path, param.name)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tlogsync ")


def test_a_usage_error_is_exit_2_on_stderr(capsys):
    assert main(["scan"]) == 2
    captured = capsys.readouterr()
    assert "Missing argument 'RETAILER'" in captured.err and captured.out == ""
    assert main(["no-such-command"]) == 2


def test_options_come_from_tlogsync_variables(monkeypatch, tmp_path):
    seen = {}

    @cli.command("echo-test", help="a test command")
    @click.option("--timeout", type=float, default=1.0, help="t")
    def echo(timeout):
        seen["timeout"] = timeout

    try:
        monkeypatch.setenv("TLOGSYNC_ECHO_TEST_TIMEOUT", "42")
        assert main(["echo-test"]) == 0
        assert seen["timeout"] == 42.0
    finally:
        del cli.commands["echo-test"]


def test_an_unreachable_database_is_one_line_and_exit_3(tmp_path):
    env = {"TLOGSYNC_DATABASE_URL": f"postgresql://127.0.0.1:{closed_port()}/none", "PATH": "/usr/bin:/bin"}
    done = tlogsync("status", env=env)
    assert done.returncode == 3, done
    assert done.stderr.strip().count("\n") == 0 and "unreachable" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_unreachable_broker_is_one_line_and_exit_3(tmp_path):
    retailers = tmp_path / "retailers.toml"
    retailers.write_text(
        '[retailers.acme]\nproduct_store_id = "P"\ncurrency = "USD"\norder_master = true\npoll_seconds = 60\n'
        '[retailers.acme.sftp]\nhost = "127.0.0.1"\nusername = "u"\nprivate_key = "/k"\nknown_hosts = "/kh"\n'
        'orders_dir = "/in"\narchive_dir = "/in/archive"\nerror_dir = "/in/error"\n'
    )
    env = {
        "TLOGSYNC_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}//",
        "TLOGSYNC_RETAILERS": str(retailers),
        "PATH": "/usr/bin:/bin",
    }
    done = tlogsync("scan", "acme", env=env)
    assert done.returncode == 3, done
    assert "message broker unreachable" in done.stderr and done.stderr.strip().count("\n") == 0
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("argv", [["scan", "--help"], ["dlq", "list", "--help"], ["audit", "--help"]])
def test_sub_command_help_names_its_variables(argv, capsys):
    assert main(argv) == 0
    assert "TLOGSYNC_" in capsys.readouterr().out
