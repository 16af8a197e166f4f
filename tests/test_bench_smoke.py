"""The issue-15, -26 and -27 benchmarks in their smallest form, so they cannot rot: `bench/load.py --mode ws`
(one process and two workers), `bench/memory.py --smoke`, `bench/logins.py`, `bench/tabs.py` and
`bench/workers.py` run end to end (their own LLM server and app, real sockets) and say their verdicts.
Latency and memory targets are the full runs' business (a busy machine may miss them here); what must hold even
here is that nothing was lost, duplicated or refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode in (0, 1), f"{args[0]} crashed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_load_ws_smallest_run_loses_nothing():
    out = run_bench("bench/load.py", "--mode", "ws", "--sessions", "2", "--seconds", "1", "--todo-sessions", "1",
                    "--window", "0.2")
    assert "PASS  zero errors: 0" in out, out
    assert "PASS  zero lost or duplicated tokens: 2 stored answers equal the script, 2 sessions saw every token, " \
           "2 rebuilt pages show exactly the final HTML, of 2" in out, out
    assert "p99 token->frame <= 100 ms" in out, out


def test_memory_smoke_runs_every_phase():
    out = run_bench("bench/memory.py", "--smoke")
    for target in ("idle RSS < 150 MB", "sessions connected and streaming < 300 MB", "soak growth from",
                   "PASS  the soak went without errors: 0"):
        assert target in out, out
    assert " 0 answers" not in out and " 0 simulator runs" not in out and " 0 todo actions" not in out, out


def test_logins_smallest_run_measures_both_servers():
    out = run_bench("bench/logins.py", "--clients", "10", "--seconds", "1", "--repeat", "1")
    assert "checks in worker threads (the app)" in out and "checks on the event loop (before issue 27)" in out, out
    assert "the app: round-trip p99 during the attack within 2× the idle p99" in out, out


def test_load_ws_with_two_workers_loses_nothing():
    out = run_bench("bench/load.py", "--mode", "ws", "--sessions", "2", "--seconds", "1", "--todo-sessions", "1",
                    "--window", "0.2", "--no-rebuild", "--workers", "2")
    assert "2 process(es)" in out and "PASS  zero errors: 0" in out, out
    assert "PASS  zero lost or duplicated tokens: 2 stored answers equal the script, 2 sessions saw every token" in out


def test_tabs_smallest_run_measures_ours_and_the_tree_before():
    out = run_bench("bench/tabs.py", "--tabs", "20,40", "--adds", "2", timeout=240)
    assert "PASS  no tab closed by the server" in out, out
    for server, tabs in (("ours", 20), ("ours", 40), (r"before \(c74d2e2\)", 40)):
        assert re.search(rf"^\| {server} +\| +{tabs} \|", out, re.M), out


def test_workers_smallest_run_is_whole_with_one_and_two_workers():
    out = run_bench("bench/workers.py", "--answers", "4", "--chunks", "300", "--repeat", "1", timeout=240)
    assert "PASS  every SSE stream and stored answer whole, every run" in out, out
    assert "info  SQLite: 2 workers / 1:" in out, out
