"""BENCH_PROFILE=1: py-spy on a worker (its pool children included) during one run, summarised by package.

`py-spy record --gil --subprocesses --full-filenames --nolineno -f raw` samples each process's Python stacks
while it holds the GIL, so idle waiting is not counted; a sample's last frame is where the time was spent
(self time). Needs py-spy (`.venv/bin/pip install py-spy`), and ptrace rights over the worker (root, or the
same user with kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PYSPY = Path(sys.executable).with_name("py-spy")
ROOT = Path(__file__).resolve().parents[2]
GROUPS = {
    "celery": "celery/kombu/amqp/billiard",
    "kombu": "celery/kombu/amqp/billiard",
    "amqp": "celery/kombu/amqp/billiard",
    "billiard": "celery/kombu/amqp/billiard",
    "vine": "celery/kombu/amqp/billiard",
    "psycopg": "psycopg",
    "psycopg_pool": "psycopg",
    "psycopg_binary": "psycopg",
    "paramiko": "paramiko (and its crypto)",
    "cryptography": "paramiko (and its crypto)",
    "nacl": "paramiko (and its crypto)",
    "bcrypt": "paramiko (and its crypto)",
    "marshmallow": "marshmallow",
    "json": "json",
    "decimal": "json",
    "tlogsync": "tlogsync's own (worker/, tasks/)",
}
FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*)\)$")
SITE = re.compile(r"/site-packages/([^/]+)")
STDLIB = re.compile(r"/lib/python3\.\d+/([^/]+)")


def executable() -> str | None:
    return str(PYSPY) if PYSPY.exists() else shutil.which("py-spy")


def available() -> bool:
    return executable() is not None


def start(pid: int, out: Path) -> subprocess.Popen[bytes]:
    cmd = [
        executable() or "py-spy",
        "record",
        "--gil",
        "--subprocesses",
        "--full-filenames",
        "--nolineno",
        "--nonblocking",
        "--rate",
        "400",  # samples a second per process (py-spy's default 100 gives too few on a short run)
        "-f",
        "raw",
        "-o",
        str(out),
        "-p",
        str(pid),
    ]
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - lives as long as py-spy
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """py-spy writes its file on SIGINT."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def package(path: str) -> str:
    found = SITE.search(path)
    if found:
        name = found.group(1)
        return name.removesuffix(".py").split(".")[0]
    resolved = path
    for top, name in (("/worker/", "tlogsync"), ("/tasks/", "tlogsync"), ("/ops/", "bench")):
        if str(ROOT) + top in resolved or resolved.startswith(top.strip("/") + "/"):
            return name
    found = STDLIB.search(path)
    if found:
        mod = found.group(1).removesuffix(".py")
        return "decimal" if mod in ("decimal", "_pydecimal") else mod if mod == "json" else f"stdlib {mod}"
    if path.startswith("<frozen"):
        return "stdlib importlib"
    return "other"


def summarise(raw: Path, top: int = 25) -> dict[str, Any]:
    """Self samples by group, by package and by function; and the share of each process."""
    if not raw.exists():
        return {"error": f"no profile written: see {raw.with_suffix('.log')}"}
    by_group: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    by_process: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        chain = [f.split(":", 1)[0] for f in frames if f.startswith("process ")]  # main, then a pool child
        pid = chain[-1].split()[-1] if chain else "?"
        process = f"{'main process' if len(chain) <= 1 else 'pool child'} {pid}"
        leaf = FRAME.match(frames[-1])
        if leaf is None:
            continue
        pkg = package(leaf.group("path"))
        total += count
        by_group[GROUPS.get(pkg, "stdlib, other" if pkg.startswith("stdlib") else f"other ({pkg})")] += count
        by_package[pkg] += count
        short = re.sub(r"^.*/lib/python3\.\d+/", "", leaf.group("path").split("/site-packages/")[-1])
        short = short.replace(str(ROOT) + "/", "")
        by_function[f"{leaf.group('func')} ({short}) [{pkg}]"] += count
        by_process[process] += count

    def shares(counter: Counter[str], n: int | None = None) -> list[tuple[str, float]]:
        return [(k, round(v * 100 / total, 1)) for k, v in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "by_group_pct": shares(by_group),
        "by_package_pct": shares(by_package, top),
        "top_functions_pct": shares(by_function, top),
        "by_process_pct": shares(by_process),
    }


def render(summary: dict[str, Any]) -> str:
    if "error" in summary:
        return summary["error"] + "\n"
    out = [f"py-spy self time, {summary['samples']} samples holding the GIL"]
    for title, key in (
        ("by group", "by_group_pct"),
        ("by package", "by_package_pct"),
        ("by process", "by_process_pct"),
        ("top functions", "top_functions_pct"),
    ):
        out.append(f"\n{title}:")
        out += [f"  {pct:5.1f} %  {name}" for name, pct in summary[key]]
    return "\n".join(out) + "\n"
