"""docs/several-servers.md's block, run as written (its database URL and ports swapped for the
test's own): the servers start, share one truth, and a todo added through one shows on the others."""

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets.sync.client as ws_client

from tests.backends import NO_POSTGRES, POSTGRES_URL, drop_postgres_schemas, postgres_test_url
from tests.servers import ROOT, free_port

PAGE = ROOT / "docs" / "several-servers.md"


def readme_block() -> list[str]:
    section = PAGE.read_text()
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()


def test_the_readme_block_starts_servers_that_share_one_truth(tmp_path):
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    lines = readme_block()
    assert lines[0] == "pip install -e '.[postgres]'"  # the extra is installed with .[test]: not run here
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    procs, urls = [], []
    try:
        for line in lines[1:]:
            words = shlex.split(line)
            if words[0] == "export":
                name, value = words[1].split("=", 1)
                env[name] = postgres_test_url() if name == "QUANDA_DB_URL" else value
                continue
            assert words[-2:] == ["main.py", "&"] and words[0].startswith("QUANDA_PORT="), line
            port = free_port()
            workdir = tmp_path / str(port)
            workdir.mkdir()
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "main.py")], cwd=workdir,
                                          env={**env, "QUANDA_PORT": str(port)},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        assert len(urls) == 3
        for url in urls:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/-/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{url} did not start"
                time.sleep(0.1)  # waiting for a process to listen: there is no event to wait on
        with httpx.Client(base_url=urls[0]) as first:
            first.get("/")
            cookie = "; ".join(f"{k}={v}" for k, v in first.cookies.items())
        with ws_client.connect(urls[0].replace("http", "ws") + "/ws", additional_headers={"Cookie": cookie}) as ws:
            ws.send('{"action": "view", "page": "todo", "streams": {}, "fresh": []}')
            ws.send('{"action": "todo.add", "name": "added on the first server"}')
            while "added on the first server" not in ws.recv(timeout=10):
                pass
        for url in urls[1:]:
            assert "added on the first server" in httpx.get(url + "/p/todo").text
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        drop_postgres_schemas()
