"""The distribution: app/ is installed as the package `quanda`, static/ as `quanda.static`; nothing is installed
under the name `app`; the wheel, installed in a fresh venv outside the checkout, serves the whole app."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.servers import ROOT
from tests.wheel import clean_env, installed_wheel, served_by

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_tree_is_listed_for_the_wheel():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"quanda": "app", "quanda.static": "static"}
    found = {"quanda." + ".".join(p.parent.relative_to(ROOT / "app").parts) if p.parent != ROOT / "app" else "quanda"
             for p in (ROOT / "app").rglob("__init__.py")} | {"quanda.static"}
    assert set(setuptools["packages"]) == found, "pyproject.toml's packages must list every package under app/"


def test_nothing_imports_the_tree_by_its_folder_name():
    """Inside the checkout `import app` would work too, and load a second copy of every module beside `quanda`."""
    pattern = re.compile(r"^\s*(from|import)\s+app(\.|\s|$)|[\"']-m[\"'],\s*[\"']app\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("app", "tests", "bench", "examples")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text())]
    offenders += ["main.py"] if pattern.search((ROOT / "main.py").read_text()) else []
    assert offenders == []


def test_the_wheel_serves_the_whole_app_from_an_empty_folder(tmp_path):
    venv = installed_wheel()
    python = venv / "bin" / "python"
    no_app = subprocess.run([python, "-c", "import app"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert no_app.returncode != 0 and "No module named 'app'" in no_app.stderr
    help_text = subprocess.run([venv / "bin" / "quanda", "--help"], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60).stdout
    for command in ("serve", "tui", "users", "tokens", "migrate"):
        assert f"quanda {command}" in help_text, help_text
    with served_by([venv / "bin" / "quanda", "serve"], tmp_path) as (url, client):
        page = client.get(url + "/").text
        assert 'id="todo-list"' in page and 'id="msg-list"' in page
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
            response = client.get(url + asset)
            assert response.status_code == 200 and response.content, asset
        assert "Stream simulator" in client.get(url + "/p/simulator").text
        assert "Chat" in client.get(url + "/-/plugins").text
    assert (tmp_path / "data" / "quanda.db").exists(), "the embedded store lives in the working directory"


@pytest.mark.parametrize("command", [["quanda", "serve", "--help"], ["quanda", "tui", "--help"],
                                     ["quanda", "migrate", "--help"]])
def test_console_script_subcommands_answer(command):
    venv = installed_wheel()
    shown = subprocess.run([venv / "bin" / command[0], *command[1:]], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith(f"usage: {' '.join(command[:2])}"), shown


def test_python_m_quanda_is_the_same_command_line():
    shown = subprocess.run([sys.executable, "-m", "quanda", "--help"], capture_output=True, text=True, timeout=60)
    assert "quanda serve" in shown.stdout


HOST_PACKAGE = '''
from fasthtml.common import FastHTML, Main, P

from quanda.api import Quanda

q = Quanda()
app = FastHTML(default_hdrs=False)
q.mount(app)


@app.get("/")
def home():
    return Main(P("the host's own page"), q.sidebar())
'''


def test_a_host_project_with_its_own_app_package_installs_and_mounts_quanda(tmp_path):
    """The most common name of a FastHTML project's package is `app`: the wheel must not take it."""
    venv = installed_wheel()
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text(HOST_PACKAGE)
    which = subprocess.run([venv / "bin" / "python", "-c", "import app, quanda; print(app.__file__, quanda.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, env=clean_env())
    host_file, quanda_file = which.stdout.split()
    assert host_file == str(tmp_path / "app" / "__init__.py") and "site-packages" in quanda_file, which
    with served_by([venv / "bin" / "python", "-m", "uvicorn", "app:app", "--port", "$QUANDA_PORT"], tmp_path) as (
            url, client):
        page = client.get(url + "/").text
        assert "the host's own page" in page and 'ws-connect="/ws"' in page
        assert client.get(url + "/static/quanda.js").status_code == 200
        assert {p["name"] for p in client.get(url + "/-/plugins").json()} == {"app", "chat", "api"}
