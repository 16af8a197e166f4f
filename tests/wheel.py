"""The `quanda` wheel built from this checkout and installed into a fresh venv outside it (once per test run),
and a server started from that venv in a folder of the test's own."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import httpx

from tests.servers import ROOT, free_port

INSTALL_TIMEOUT_S = 600


@functools.cache
def installed_wheel() -> Path:
    """A venv, in a temporary folder, with the wheel of this checkout installed (not editable) with its
    `examples` extra (fastlite, for the example hosts) and its dependencies from the package index; returns the
    venv's folder."""
    where = Path(tempfile.mkdtemp(prefix="quanda-wheel-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(where / "dist"), str(ROOT)],
                   check=True, cwd=where, timeout=INSTALL_TIMEOUT_S)
    wheel = next((where / "dist").glob("quanda-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True, timeout=INSTALL_TIMEOUT_S)
    subprocess.run([where / "venv" / "bin" / "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[examples]"], check=True, cwd=where,
                   timeout=INSTALL_TIMEOUT_S, env=clean_env())
    return where / "venv"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would make the checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("QUANDA_")}
    return {**env, **extra}


@contextlib.contextmanager
def served_by(command: Sequence[object], cwd: Path, **env: str) -> Iterator[tuple[str, httpx.Client]]:
    """Run `command` (a server that reads QUANDA_PORT, or names it as "$QUANDA_PORT") in `cwd` until it answers;
    yield its URL and a client."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(cwd / f"server-{port}.log", "wb")
    proc = subprocess.Popen([str(port) if c == "$QUANDA_PORT" else str(c) for c in command], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            env=clean_env(QUANDA_PORT=str(port), **env))
    try:
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"the server exited: {(cwd / f'server-{port}.log').read_text()}")
                try:
                    if client.get(url + "/-/plugins").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer in 60 s: {(cwd / f'server-{port}.log').read_text()}")
                time.sleep(0.1)  # waiting for a process to listen: there is no event to wait on
            yield url, client
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
