"""A real LLM server for the tests: Gemma 3 270M on llama-cpp-python's OpenAI-compatible server, with its
defaults (`--interrupt_requests` on, `--n_ctx` 2048), on a free port.

Where it comes from (`.ci/run` installs both, outside the checkout, once):
- `QUANDA_TEST_LLM_PYTHON`: a Python with `llama_cpp.server` (a venv of its own: the server pins its own
  starlette/fastapi), default `~/.cache/quanda-llm/venv/bin/python`;
- `QUANDA_TEST_LLM_MODEL`: the model file, default `~/.cache/quanda-llm/gemma-3-270m-q4_k_m.gguf`.

`QUANDA_TEST_REAL_LLM=1` (set by `.ci/run`) makes their absence fail the run; elsewhere the tests are
skipped, saying why."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

CACHE = Path(os.environ.get("QUANDA_LLM_CACHE", Path.home() / ".cache" / "quanda-llm"))
PYTHON = Path(os.environ.get("QUANDA_TEST_LLM_PYTHON", CACHE / "venv" / "bin" / "python"))
MODEL = Path(os.environ.get("QUANDA_TEST_LLM_MODEL", CACHE / "gemma-3-270m-q4_k_m.gguf"))
REQUIRED = os.environ.get("QUANDA_TEST_REAL_LLM") == "1"
START_S = 180


def problem() -> str | None:
    """Why the real model cannot run here (None when it can)."""
    if not PYTHON.exists():
        return f"no llama-cpp-python at {PYTHON} (set QUANDA_TEST_LLM_PYTHON, or run .ci/run, which installs it)"
    if not MODEL.exists():
        return f"no model file at {MODEL} (set QUANDA_TEST_LLM_MODEL, or run .ci/run, which fetches it)"
    return None


def require() -> None:
    found = problem()
    if found is None:
        return
    if REQUIRED:  # CI asked for the real model: its absence fails the run
        pytest.fail(f"QUANDA_TEST_REAL_LLM=1 but {found}", pytrace=False)
    pytest.skip(f"real-model tests skipped: {found}; set QUANDA_TEST_REAL_LLM=1 to make this fail")


class RealLLM:
    """`python -m llama_cpp.server` with its defaults (two threads), its log kept in `log_path`."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = workdir / "llama-cpp-python.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RealLLM":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(PYTHON), "-m", "llama_cpp.server", "--model", str(MODEL),
                                      "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "2"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-cpp-python exited: {self.log_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # waiting for a process to load its model and listen: nothing to wait on
        raise RuntimeError(f"llama-cpp-python did not start within {START_S} s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
