"""A slow or failing disk under one process: `slowdisk.c` preloaded (LD_PRELOAD) into it, driven from the test
through a control file. The delay holds the writing thread in the call, as a slow device does; a failure is
the errno a dying or full device gives. Built with the machine's C compiler (the test skips, saying so,
without one)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("slowdisk.c")


def library() -> Path:
    """The shim, compiled once per version of its source."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("the slow-disk shim needs a C compiler (cc or gcc)")
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:12]
    built = Path(tempfile.gettempdir()) / f"quanda-slowdisk-{digest}.so"
    if not built.exists():
        partial = built.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SOURCE), "-ldl"],
                       check=True, capture_output=True, timeout=120)
        partial.replace(built)
    return built


class SlowDisk:
    """Faults for the files whose path contains `match`, in the processes started with `env()`."""

    def __init__(self, directory: Path, match: str):
        self.control = directory / "slowdisk.ctl"
        self.match = match
        self.heal()

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(library()), "SLOWDISK_CTL": str(self.control), "SLOWDISK_MATCH": self.match}

    def _set(self, delay_ms: int, err: int) -> None:
        partial = self.control.with_suffix(".tmp")
        partial.write_text(f"{delay_ms} {err}\n")
        partial.replace(self.control)  # atomic: a reader sees the old line or the new one

    def slow(self, delay_ms: int) -> None:
        """Every write to a matching file takes `delay_ms` more."""
        self._set(delay_ms, 0)

    def fail(self, err: int = errno.EIO) -> None:
        """Every write to a matching file fails (EIO: a dying device; ENOSPC: a full one)."""
        self._set(0, err)

    def heal(self) -> None:
        self._set(0, 0)
