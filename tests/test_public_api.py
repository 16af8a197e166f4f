"""The narrow waist: plugins (the reference app's, under app/plugins/) and host applications (examples/) import
Quanda only through `quanda.api` (and `quanda.components`, plain FT pieces); the API states its names."""

from __future__ import annotations

import ast
import importlib

from tests.servers import ROOT

ALLOWED = ("quanda.api", "quanda.components")


def quanda_imports(path) -> list[str]:
    """Every module of quanda a file imports (absolute or relative), as written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in ("quanda", "app")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside app/ it reaches the runtime
                found.append("." * node.level + (node.module or ""))
            elif (node.module or "").split(".")[0] in ("quanda", "app"):
                found.append(node.module)
    return found


def test_plugins_and_examples_import_only_the_public_api():
    offenders = {}
    for path in sorted([*(ROOT / "app" / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]):
        bad = [m for m in quanda_imports(path)
               if not any(m == allowed or m.startswith(allowed + ".") for allowed in ALLOWED)]
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_the_check_sees_a_private_import(tmp_path):
    sneaky = tmp_path / "p.py"
    sneaky.write_text("from quanda.api import Plugin\nfrom quanda.commands import run_once\nimport quanda.llm\n"
                      "from . import sibling\n")
    assert quanda_imports(sneaky) == ["quanda.api", "quanda.commands", "quanda.llm", "."]


def test_the_api_states_its_names_and_each_exists():
    api = importlib.import_module("quanda.api")
    assert len(api.__all__) == len(set(api.__all__))
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    for needed in ("Plugin", "Handle", "MessageRecord", "Quanda", "action", "readable", "near", "CommandSpec"):
        assert needed in api.__all__


def test_the_package_and_the_core_reexport_them():
    import quanda
    import quanda.core
    from quanda.api import MessageRecord, Quanda
    assert quanda.Quanda is Quanda and quanda.core.MessageRecord is MessageRecord
    assert quanda.PUBLIC == set(importlib.import_module("quanda.api").__all__)
    assert "MessageRecord" in quanda.core.__all__


def test_plugins_and_examples_do_not_reach_into_the_app_context():
    """`Handle.ctx` is the app's own (the LLM driver, every plugin, the jobs): a plugin uses the Handle's methods."""
    reaching = [f"{path.relative_to(ROOT)}:{node.lineno}"
                for path in sorted([*(ROOT / "app" / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")])
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Attribute) and node.attr == "ctx"]
    assert reaching == []


def test_no_store_module_imports_another_ones_private_names():
    """The store backends share through their documented base and, within one backend's family of modules, names
    without a leading underscore (app/core/store/__init__.py)."""
    private = []
    for path in sorted((ROOT / "app" / "core" / "store").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("quanda")):
                private += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
