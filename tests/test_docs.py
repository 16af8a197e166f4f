"""The README and every docs/ page, checked as written: the README is the front door (short, linking every page);
every link and anchor resolves; every Python and TOML block parses; every command a page shows names a program,
subcommand, flag, extra, marker or file that exists — each `python -m quanda …`, `quanda …`, `python -m
quanda.tui`, `python -m quanda.core` and `python bench/….py` is run with `--help` and must list the flags the page
uses. Whole programs are also run end to end elsewhere: the README's host file (tests/e2e/test_host_e2e.py), the
plugin example (tests/test_plugins.py), the several-servers block (tests/test_several_servers.py), the terminal
session (tests/test_tui.py)."""

from __future__ import annotations

import ast
import functools
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.servers import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAX_README_LINES = 300
EXTERNAL = {"curl", "openssl", "npm", "node", "export", "kill", "psql", "docker"}


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(), re.S | re.M)


def slug(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(m) for m in re.findall(r"^#{1,6} (.*)$", text, re.M)}


def test_the_readme_is_the_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    for page in PAGES[1:]:
        assert f"(docs/{page.name}" in text, f"the README does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_anchor_resolves(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an external address
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        assert where.exists(), f"{page.name}: {target} names no file"
        if anchor:
            assert anchor in anchors(where), f"{page.name}: {target}: no such heading in {where.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_and_toml_block_parses(page):
    for lang, body in blocks(page):
        if lang == "python":
            ast.parse(body)
        elif lang == "toml":
            tomllib.loads(body)


def commands(page: Path) -> list[list[str]]:
    """Every command of the page's shell blocks (and of untagged blocks of commands), as words, without the
    environment assignments before it; `a | b` in a line of alternatives (`users passwd x | users list`) is
    two commands of the same program."""
    found = []
    for lang, body in blocks(page):
        if lang not in ("bash", "sh", "") or (not lang and not body.startswith("python ")):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip().rstrip("&").strip()
            program: list[str] = []
            for part in re.split(r"\s&&\s|\s\|\s", line):
                words = shlex.split(part.replace("$(openssl rand -hex 32)", "x"))
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words = words[1:]
                if not words:
                    continue
                if words[0] in ("python", "pip", "quanda", *EXTERNAL):
                    program = words[:3] if words[:2] == ["python", "-m"] else words[:1]
                    found.append(words)
                elif program:
                    found.append(program + words)
    return found


@functools.cache
def help_text(*command: str) -> str:
    shown = subprocess.run([sys.executable if command[0] == "python" else command[0], *command[1:], "--help"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert shown.returncode == 0, f"{' '.join(command)} --help failed: {shown.stderr[-500:]}"
    return shown.stdout


def check_flags(words: list[str], help_shown: str, where: str) -> None:
    for flag in [w.split("=")[0] for w in words if w.startswith("--")]:
        assert flag in help_shown, f"{where}: {' '.join(words)}: {flag} is not in its --help"


def check(words: list[str], where: str) -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    markers = {m.split(":")[0] for m in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]}
    if words[0] in EXTERNAL:
        return
    if words[0] == "pip":
        for spec in words[2:]:
            named = re.findall(r"\[([\w,]+)\]", spec)
            for extra in (named[0].split(",") if named else []):
                assert extra in extras, f"{where}: pip install {spec}: no extra {extra!r}"
        return
    if words[0] == "quanda":
        words = ["python", "-m", "quanda", *words[1:]]
    if words[:2] == ["python", "-c"]:
        compile(words[2], where, "exec")
    elif words[:3] == ["python", "-m", "pytest"]:
        for i, word in enumerate(words[3:], 3):
            if words[i - 1] == "-m":
                for marker in re.findall(r"\w+", word):
                    assert marker in markers | {"or", "and", "not"}, f"{where}: no pytest marker {marker!r}"
            elif not word.startswith("-"):
                assert (ROOT / word.split("::")[0]).exists(), f"{where}: {word} does not exist"
    elif words[:3] == ["python", "-m", "quanda"]:
        sub = [w for w in words[3:5] if not w.startswith(("-", "<")) and w.isidentifier()]
        if sub[:1] in (["users"], ["tokens"]):
            check_flags(words, help_text("python", "-m", "quanda", *sub[:2]), where)
        elif sub:
            check_flags(words, help_text("python", "-m", "quanda", sub[0]), where)
    elif words[:2] == ["python", "-m"]:
        assert words[2] in ("quanda.tui", "quanda.core"), f"{where}: unknown module {words[2]}"
        check_flags(words, help_text("python", "-m", words[2]), where)
    elif words[0] == "python":
        script = ROOT / words[1]
        assert script.exists(), f"{where}: {words[1]} does not exist"
        if script.parent.name == "bench":
            check_flags(words, help_text("python", words[1]), where)
    else:
        raise AssertionError(f"{where}: a command this test does not know how to check: {' '.join(words)}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_names_what_exists(page):
    for words in commands(page):
        check(words, page.name)


def test_the_command_check_sees_a_wrong_flag_and_a_missing_extra():
    with pytest.raises(AssertionError, match="--nope is not in its --help"):
        check(["python", "-m", "quanda", "migrate", "--nope"], "test")
    with pytest.raises(AssertionError, match="no extra 'nope'"):
        check(["pip", "install", "-e", ".[nope]"], "test")
    with pytest.raises(AssertionError, match="does not exist"):
        check(["python", "bench/nope.py"], "test")
