"""Scrape `tlogsync metrics` once: start the exporter on a free loopback port, read /metrics, stop it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from worker.demo.sshd import free_port, port_open


def scrape_metrics() -> str:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "metrics", "--port", str(port), "--address", "127.0.0.1"],
        env=os.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, "metrics endpoint did not start"
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:  # noqa: S310
            return resp.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
