"""Child processes started in their own session (demo, benchmark, tests): stopped as a group."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30, sig: int = signal.SIGTERM) -> None:
    """Send sig to the process group (a Celery worker and its pool children), then SIGKILL after timeout."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
