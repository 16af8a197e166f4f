"""The forms a JSON command may take (quanda.command_forms): each accepted form found as the one command it
means, whatever the command (a property test); ambiguous ones refused with the reason; other fences stay
examples; trailing commas inside strings are text."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quanda.command_forms import canonical, without_trailing_commas
from quanda.commands import extract

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
values = st.one_of(st.integers(-5, 10**6), st.booleans(), st.text(max_size=20), st.none())
commands = st.fixed_dictionaries({
    "action": names, "target": names,
    "args": st.dictionaries(names.filter(lambda k: k not in ("action", "target", "args", "operation")), values,
                            max_size=4)})


def forms(command: dict) -> dict[str, str]:
    """Each accepted way of writing `command` in an answer."""
    plain = json.dumps(command)
    operation = json.dumps({"operation": command["action"], "target": command["target"], "args": command["args"]})
    flat = {"action": command["action"], "target": command["target"], **command["args"]}
    return {
        "plain": f"Sure. {plain} Done.",
        "operation": f"Sure: {operation}",
        "flat": f"```json\n{json.dumps(flat)}\n```" if command["args"] else f"```json\n{plain}\n```",
        "tagged": f"```JSON title\n{plain}\n```",
        "javascript": f"```javascript\n[{plain}]\n```",
        "trailing comma": "```json\n" + json.dumps(command, indent=1).replace("\n}", ",\n}") + "\n```",
    }


@settings(max_examples=150, deadline=None)
@given(commands)
def test_every_accepted_form_is_found_as_the_one_command_it_means(command):
    for name, text in forms(command).items():
        found = extract(text)
        assert [(f.command, f.error) for f in found] == [(command, "")], (name, text, found)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_extraction_never_raises_and_refusals_say_why(text):
    for finding in extract(text):
        assert finding.command is not None or finding.error


@pytest.mark.parametrize("value, why", [
    ({"action": "insert", "operation": "delete", "target": "todo"}, "both \"action\" and \"operation\""),
    ({"action": "insert", "target": "todo", "args": {"name": "a"}, "name": "b"}, "beside \"args\""),
    ({"action": "insert", "target": "todo", "args": ["a"]}, "args must be an object"),
])
def test_ambiguous_forms_are_refused_with_the_reason(value, why):
    command, reason = canonical(value)
    assert command is None and why in reason
    [finding] = extract(json.dumps(value))
    assert finding.command is None and why in finding.error


def test_the_same_value_in_both_keys_is_not_ambiguous():
    assert canonical({"action": "list", "operation": "list", "target": "todo"}) == (
        {"action": "list", "target": "todo"}, "")


@pytest.mark.parametrize("lang", ["python", "bash", "text"])
def test_other_fences_hold_examples_not_commands(lang):
    assert extract(f'```{lang}\n{{"action": "delete", "target": "todo", "args": {{"id": 1}}}}\n```') == []


@given(st.text(max_size=30))
def test_commas_in_strings_stay(text):
    encoded = json.dumps({"s": text + ",}"})
    assert json.loads(without_trailing_commas(encoded)) == {"s": text + ",}"}
