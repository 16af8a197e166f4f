"""The JSON command pipeline: extraction corpus, schema validation, hypothesis properties, exactly-once."""

import asyncio
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quanda.commands import MAX_COMMANDS, apply_change, extract, run_answer_commands, validate
from quanda.config import Settings
from quanda.context import AppContext
from quanda.plugin import load_plugins
from quanda.plugins.todo import COMMANDS, plan_add, todos
from tests.backends import make_store, store_target

SPECS = {(s.target, s.action): s for s in COMMANDS}
INSERT = {"action": "insert", "target": "todo", "args": {"name": "buy milk"}}


def commands(text):
    return [f.command for f in extract(text)]


@pytest.mark.parametrize("text, expected", [
    ('{"action": "insert", "target": "todo", "args": {"name": "buy milk"}}', [INSERT]),
    ('Sure!\n```json\n{"action": "insert", "target": "todo", "args": {"name": "buy milk"}}\n```\nDone.', [INSERT]),
    ('I will add it: {"action": "insert", "target": "todo", "args": {"name": "buy milk"}} and that is all.',
     [INSERT]),
    ('```json\n[{"action": "toggle", "target": "todo", "args": {"id": 1}}, '
     '{"action": "delete", "target": "todo", "args": {"id": 2}}]\n```',
     [{"action": "toggle", "target": "todo", "args": {"id": 1}},
      {"action": "delete", "target": "todo", "args": {"id": 2}}]),
    ('{"action": "insert", "target": "todo", "args": {"name": "a } tricky { name \\" here"}}',
     [{"action": "insert", "target": "todo", "args": {"name": 'a } tricky { name " here'}}]),
    ('First {"action": "list", "target": "todo"} then\n\n```json\n{"action": "insert", "target": "todo", '
     '"args": {"name": "x"}}\n```\nand {"action": "toggle", "target": "todo", "args": {"id": 3}}',
     [{"action": "list", "target": "todo"}, {"action": "insert", "target": "todo", "args": {"name": "x"}},
      {"action": "toggle", "target": "todo", "args": {"id": 3}}]),
    ("Use {braces} in prose, it's {fine}.", []),
    ('{"name": "no action here"}', []),
    ('```python\nd = {"action": "delete", "target": "todo", "args": {"id": 1}}\n```', []),  # an example, not a command
    ('Nested: {"outer": {"action": "insert"}}', []),  # the outer object is the candidate, and it has no action
])
def test_extraction_corpus(text, expected):
    assert commands(text) == expected


@pytest.mark.parametrize("text, error", [
    ('{"action": "insert", "target": "todo", "args": {"name": "buy', "cut off"),
    ('```json\n{"action": "insert", "target": "todo", "args": {"name": "x"}\n```', "cut off"),
    ('{"action": "insert", "target": todo}', "malformed"),
])
def test_truncated_and_malformed_commands_are_reported(text, error):
    [finding] = extract(text)
    assert finding.command is None and error in finding.error


def test_huge_input_is_linear_and_bounded():
    def hostile(n):
        return ("{" * (2 * n)) + ("prose " * n) + json.dumps(INSERT)

    def seconds(text):
        start = time.perf_counter()
        findings = extract(text)
        elapsed = time.perf_counter() - start
        assert all(f.command is None for f in findings)
        return elapsed
    # growth, measured in the same run: 10x the input may take at most 15x the time (quadratic would be 100x)
    small = min(seconds(hostile(10_000)) for _ in range(3))
    large = min(seconds(hostile(100_000)) for _ in range(3))
    assert large <= 15 * small, f"10x input took {large / small:.1f}x the time"
    many = "\n".join(json.dumps({**INSERT, "args": {"name": f"t{i}"}}) for i in range(30))
    assert len(extract(many)) == 30


@pytest.mark.parametrize("command, why", [
    ({"action": "delete", "target": "todo"}, "needs 'id'"),
    ({"action": "delete", "target": "todo", "args": {}}, "needs 'id'"),
    ({"action": "delete", "target": "todo", "args": {"id": "3"}}, "whole number"),
    ({"action": "delete", "target": "todo", "args": {"id": True}}, "whole number"),
    ({"action": "delete", "target": "todo", "args": {"id": 0}}, "whole number"),
    ({"action": "insert", "target": "todo", "args": {"name": ""}}, "non-empty"),
    ({"action": "insert", "target": "todo", "args": {"name": "x" * 201}}, "too long"),
    ({"action": "insert", "target": "todo", "args": {"name": "x", "sudo": True}}, "takes no sudo"),
    ({"action": "drop_table", "target": "todo"}, "unknown action"),
    ({"action": "insert", "target": "users", "args": {"name": "x"}}, "unknown target"),
    ({"action": "insert", "target": "todo", "args": ["x"]}, "args must be an object"),
    ({"action": "insert", "target": "todo", "args": {"name": "x"}, "extra": 1}, "unknown keys"),
    ({"action": "update", "target": "todo", "args": {"id": 1, "done": "yes"}}, "must be bool"),
])
def test_schema_rejects_what_it_should(command, why):
    spec, reason = validate(command, SPECS)
    assert spec is None and why in reason


def test_schema_accepts_valid_commands():
    for command in [INSERT, {"action": "list", "target": "todo"},
                    {"action": "update", "target": "todo", "args": {"id": 2, "done": True}},
                    {"action": "delete", "target": "todo", "args": {"id": 7}}]:
        spec, reason = validate(command, SPECS)
        assert spec is not None and reason == ""


json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.sampled_from(["action", "target", "args", "id", "name", "x"]),
                                             children, max_size=4), max_leaves=12)
fragments = st.one_of(st.text(max_size=20), st.just("{"), st.just("}"), st.just('"'), st.just("```json\n"),
                      st.just("\n```\n"), json_values.map(json.dumps),
                      st.just(json.dumps(INSERT)), st.just('{"action": "delete", "target": "todo"}'))


@settings(max_examples=300, deadline=None)
@given(st.lists(fragments, max_size=12).map("".join))
def test_extractor_never_raises_and_only_valid_commands_pass(text):
    for finding in extract(text):
        assert isinstance(finding.position, int)
        if finding.command is None:
            assert finding.error
            continue
        assert isinstance(finding.command, dict) and "action" in finding.command
        spec, reason = validate(finding.command, SPECS)
        if spec is not None:  # anything that would run satisfies the schema exactly
            assert finding.command["target"] == "todo" and reason == ""
            for name, rule in spec.args.items():
                if rule.required:
                    assert name in finding.command.get("args", {})


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_extractor_never_raises_on_arbitrary_text(text):
    assert isinstance(extract(text), list)


def context(store):
    return AppContext(Settings(), store, load_plugins(entry_point_group=None))


def handle(store, owner="s1"):
    return context(store).handle(owner)


ANSWER = ('Adding it:\n```json\n{"action": "insert", "target": "todo", "args": {"name": "buy milk"}}\n```\n'
          'and removing nothing: {"action": "delete", "target": "todo"}')


async def test_commands_run_once_even_when_replayed(store):
    h = handle(store)
    first = await run_answer_commands(h, "a" * 24, ANSWER)
    assert [r.ok for r in first] == [True, False]
    assert "Added the todo 'buy milk' (id 1)" in first[0].text
    assert "needs 'id'" in first[1].text
    again = await run_answer_commands(h, "a" * 24, ANSWER)  # a reload, a replay, a reconnect
    assert again == []
    assert [t["name"] for t in await todos(h)] == ["buy milk"]
    record = await store.get_record("command", f"{'a' * 24}:0")
    assert record["state"] == "done" and record["after"]["name"] == "buy milk" and record["before"] is None


async def test_two_servers_on_one_database_run_each_command_once(backend, store, tmp_path):
    other = await make_store(backend, tmp_path, shared=store_target(backend, store))
    try:
        results = await asyncio.gather(*(run_answer_commands(handle(s), "b" * 24, ANSWER)
                                         for s in (store, other, store, other)))
        assert sum(len(r) for r in results) == 2  # each of the two findings handled by exactly one caller
        assert [t["name"] for t in await todos(handle(store))] == ["buy milk"]
    finally:
        await other.close()


async def test_at_most_twenty_commands_per_answer(store):
    answer = "\n".join(json.dumps({"action": "insert", "target": "todo", "args": {"name": f"t{i}"}})
                       for i in range(MAX_COMMANDS + 3))
    results = await run_answer_commands(handle(store, "s2"), "c" * 24, answer)
    assert sum(r.ok for r in results) == MAX_COMMANDS
    assert all("at most 20" in r.text for r in results[MAX_COMMANDS:])
    assert len(await todos(handle(store, "s2"))) == MAX_COMMANDS


async def test_system_prompt_is_layered_and_replaceable(store, tmp_path):
    from quanda.chat.prompt import system_prompt

    ctx = context(store)
    h = ctx.handle("s3")
    await apply_change(h, await plan_add(h, "buy milk"))
    layered = await system_prompt(h)
    assert layered.startswith("You are the assistant inside Quanda")
    assert '{"action": "delete", "target": "todo", "args": {"id": int}}' in layered
    assert "id 1: buy milk" in layered
    custom = tmp_path / "prompt.txt"
    custom.write_text("You are a pirate.")
    ctx.settings = Settings(system_prompt_file=str(custom))
    replaced = await system_prompt(h)
    assert replaced.startswith("You are a pirate.") and "id 1: buy milk" in replaced
