"""Fault injection for the fault suite (tests/faults), a plugin of the runtime: production knows nothing of it.

A worker started with `-A tests.support.faultapp` and TLOGSYNC_FAULT_CRASH_FILES="*poison*" kills its own
process (SIGKILL, as the kernel's OOM killer would) whenever it reads a file whose name matches: the poison
file of the suite. It wraps the FileSource port (Runtime.source_wrappers); unset, it wraps nothing.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import signal
from collections.abc import Sequence

from worker.app.runtime import Runtime
from worker.services.ports import FileSource, RemoteFile

ENV = "TLOGSYNC_FAULT_CRASH_FILES"  # test-only: read here, not by Settings


class CrashingSource:
    """A FileSource that dies on reading a matching file and otherwise delegates."""

    def __init__(self, inner: FileSource, pattern: str):
        self.inner, self.pattern = inner, pattern

    def list(self, directory: str) -> Sequence[RemoteFile]:
        return self.inner.list(directory)

    def read(self, path: str, max_bytes: int, size_hint: int | None = None) -> bytes:
        if fnmatch.fnmatchcase(posixpath.basename(path), self.pattern):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.read(path, max_bytes, size_hint)

    def move(self, src: str, dst: str) -> bool:
        return self.inner.move(src, dst)

    def write(self, path: str, data: bytes) -> None:
        self.inner.write(path, data)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)


def install(runtime: Runtime, pattern: str | None = None) -> None:
    """Crash on reading files matching pattern (default: $TLOGSYNC_FAULT_CRASH_FILES; none: no fault)."""
    pattern = pattern if pattern is not None else os.environ.get(ENV) or None
    if pattern:
        runtime.source_wrappers.append(lambda source: CrashingSource(source, pattern))
