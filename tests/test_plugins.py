"""Plugin loading: the built-in list, extra plugins, loud failures, /-/plugins, the README example."""

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from quanda.config import Settings
from quanda.api import Plugin, PluginError
from quanda.plugin import BUILTIN_PLUGINS, load_plugins, plugin_fields, validate
from quanda.server import create_app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def documented() -> str:
    """The README and every docs/ page."""
    return "\n".join([README.read_text(), *(p.read_text() for p in sorted(DOCS.glob("*.md")))])


def make_client(tmp_path, **kwargs):
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}")
    return TestClient(create_app(settings, entry_point_group=None, **kwargs), base_url="http://127.0.0.1")


def test_builtin_plugins_load_in_menu_order():
    plugins = load_plugins(entry_point_group=None)
    assert [p.name for p in plugins] == sorted((p.name for p in plugins), key=lambda n: next(
        q.order for q in plugins if q.name == n))
    assert {"simulator"} <= {p.name for p in plugins}


@pytest.mark.parametrize("bad, message", [
    (object(), "expected a Plugin value"),
    (Plugin(name="Bad Name", label="x"), "must be lowercase"),
    (Plugin(name="ok", label=" "), "non-empty label"),
    (Plugin(name="ok", label="x", page="not callable"), "page must be callable"),
    (Plugin(name="ok", label="x", router=object()), "APIRouter"),
    (Plugin(name="ok", label="x", ws_handlers={"a": 1}), "ws_handlers"),
])
def test_malformed_plugins_fail_loudly(bad, message):
    with pytest.raises(PluginError, match=message):
        validate(bad, "test")


def test_module_without_plugin_value_and_duplicate_names_fail():
    with pytest.raises(PluginError, match="declares no `plugin` value"):
        load_plugins(entry_point_group=None, extra=["quanda.config"])
    with pytest.raises(PluginError, match="cannot import"):
        load_plugins(entry_point_group=None, extra=["quanda.no_such_module"])
    with pytest.raises(PluginError, match="two plugins are named 'simulator'"):
        load_plugins(entry_point_group=None, extra=[Plugin(name="simulator", label="again")])


def test_a_malformed_plugin_stops_the_app_from_being_created(tmp_path):
    with pytest.raises(PluginError):
        make_client(tmp_path, extra_plugins=[Plugin(name="x y", label="broken")])


def test_plugins_page_lists_what_is_loaded(tmp_path):
    with make_client(tmp_path, extra_plugins=["examples.hello_plugin"]) as client:
        listed = client.get("/-/plugins").json()
    assert [p["name"] for p in listed] == ["todo", "simulator", "chat", "hello", "api"]
    hello = listed[3]
    assert hello["label"] == "Hello" and hello["ws_actions"] == ["hello.press"] and hello["routes"] == 1
    assert hello["facts"] == ["hello.pressed"] and hello["hooks"] == ["page"]
    assert listed[2]["hooks"] == ["ask", "on_event", "page", "sidebar", "startup", "recover:assistant"]


def test_readme_example_plugin_loads_and_serves(tmp_path):
    with make_client(tmp_path, extra_plugins=["examples.hello_plugin"]) as client:
        page = client.get("/p/hello").text
        assert "Pressed" in page and 'href="/p/hello"' in page
        assert client.get("/hello/count").text.count("0") >= 1
        with client.websocket_connect("ws://127.0.0.1/ws") as ws:
            ws.send_json({"action": "view", "page": "hello", "streams": {}, "fresh": []})
            ws.send_json({"action": "hello.press"})
            frames = [ws.receive_text(), ws.receive_text()]
        assert any('id="hello-count"' in f and ">1<" in f for f in frames), frames
        assert client.get("/hello/count").text.count("1") >= 1


def test_readme_shows_the_example_plugin_verbatim():
    example = (Path(__file__).resolve().parent.parent / "examples" / "hello_plugin.py").read_text()
    page = (DOCS / "plugins.md").read_text()
    body = example.split('"""', 2)[2].strip()
    assert body in page, "docs/plugins.md's 'Writing a plugin' must show examples/hello_plugin.py"


def test_readme_names_every_setting_and_plugin():
    readme, docs = README.read_text(), documented()
    for variable, _default, _doc in Settings.documented():
        assert f"`{variable}`" in readme, f"README's configuration table does not document {variable}"
    for plugin in load_plugins(entry_point_group=None):
        assert plugin.label in docs, f"the docs do not mention the {plugin.label} plugin"
    plugin_guide = (DOCS / "plugins.md").read_text()
    for hook in plugin_fields():
        assert f"`{hook}" in plugin_guide, f"docs/plugins.md does not document the {hook} hook"
    assert re.search(r"htmx\.org.*2\.\d+\.\d+", docs) and re.search(r"htmx-ext-ws.*2\.\d+\.\d+", docs)


def test_builtin_list_is_explicit():
    assert BUILTIN_PLUGINS == ("quanda.plugins.todo", "quanda.plugins.simulator", "quanda.chat", "quanda.http_api")


def test_entry_point_plugins_are_loaded_and_broken_ones_fail_loudly(monkeypatch):
    import quanda.plugin as plugins_module

    class EntryPoint:
        def __init__(self, name, value, loaded):
            self.name, self.value, self._loaded = name, value, loaded

        def load(self):
            if isinstance(self._loaded, Exception):
                raise self._loaded
            return self._loaded

    import examples.hello_plugin as hello
    monkeypatch.setattr(plugins_module, "entry_points",
                        lambda group: [EntryPoint("hello", "examples.hello_plugin", hello)]
                        if group == "quanda.plugins" else [])
    assert "hello" in [p.name for p in load_plugins()]
    monkeypatch.setattr(plugins_module, "entry_points",
                        lambda group: [EntryPoint("broken", "nowhere:plugin", ImportError("no module nowhere"))])
    with pytest.raises(PluginError, match="entry point broken .*cannot load: no module nowhere"):
        load_plugins()


def test_readme_layout_lists_every_module():
    layout = (DOCS / "app.md").read_text().split("## Layout", 1)[1].split("```", 2)[1]
    root = README.parent
    for path in sorted((root / "app").rglob("*.py")):
        name = str(path.relative_to(root))
        if path.name == "__init__.py" and len([l for l in path.read_text().splitlines() if l.strip()]) < 5:
            continue  # an empty package marker
        assert f"\n{name} " in layout, f"docs/app.md's layout does not list {name}"
