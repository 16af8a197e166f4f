"""JSON commands in LLM answers: found once an answer is final, validated against the schemas plugins
register, executed exactly once.

Extraction (`extract`) scans the answer in one linear pass: ```json fences (an object, several objects or an
array of them) and bare objects in the prose; other code fences (```python …) are examples, not commands.
Inside an object, JSON strings are tracked, so braces in strings do not end it; outside, quotes are prose.
Only objects with an "action" key are commands. Each finding keeps its position (0, 1, …): the execution
key is `<message id>:<position>`, inserted with the store's insert-if-absent before anything runs, so a
reload, a reconnect, a replay or a second server never runs a command twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

MAX_COMMANDS = 20
_FENCE_RE = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                       re.M | re.S)


@dataclass(frozen=True)
class Field:
    type: type
    required: bool = False
    max_len: int = 200
    min_value: int = 1


@dataclass(frozen=True)
class CommandSpec:
    """One action on one target, with the args it takes."""

    target: str
    action: str
    args: dict[str, Field] = field(default_factory=dict)
    example: str = ""
    run: Callable[..., Awaitable[Any]] | None = None  # async run(ctx, sid, args) -> CommandResult


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    text: str  # what the chat and the LLM are told
    before: Any = None
    after: Any = None


@dataclass(frozen=True)
class Finding:
    position: int
    command: dict | None  # the parsed object, when it parsed
    error: str = ""  # why it is not a command that can run (set by extract or by validate)


def extract(text: str) -> list[Finding]:
    """Every command-like object in the text, in order; never raises."""
    findings: list[Finding] = []
    if not isinstance(text, str):
        return findings
    cursor = 0
    for fence in _FENCE_RE.finditer(text):
        _scan(text[cursor:fence.start()], findings)
        lang = fence.group("lang").strip().lower()
        if lang in ("json", ""):
            _scan_json_block(fence.group("body"), findings)
        cursor = fence.end()
    _scan(text[cursor:], findings)
    return findings


def _scan_json_block(body: str, findings: list[Finding]) -> None:
    try:
        value = json.loads(body)
    except ValueError:
        _scan(body, findings)
        return
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and "action" in item:
            findings.append(Finding(len(findings), item))


def _scan(text: str, findings: list[Finding]) -> None:
    depth, start, in_string, escaped = 0, -1, False, False
    for i, ch in enumerate(text):
        if depth == 0:
            if ch == "{":
                depth, start = 1, i
            continue
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                _add(text[start:i + 1], findings)
    if depth > 0 and '"action"' in text[start:]:
        findings.append(Finding(len(findings), None, "a command was cut off before its end (incomplete JSON)"))


def _add(candidate: str, findings: list[Finding]) -> None:
    try:
        value = json.loads(candidate)
    except ValueError as exc:
        if '"action"' in candidate:
            findings.append(Finding(len(findings), None, f"malformed command JSON ({exc.msg})"))
        return
    if isinstance(value, dict) and "action" in value:
        findings.append(Finding(len(findings), value))


def validate(command: dict | None, specs: dict[tuple[str, str], CommandSpec]) -> tuple[CommandSpec | None, str]:
    """(spec, "") for a command its schema accepts, else (None, why not)."""
    if not isinstance(command, dict):
        return None, "not a JSON object"
    action, target, args = command.get("action"), command.get("target"), command.get("args", {})
    unknown_keys = set(command) - {"action", "target", "args"}
    if unknown_keys:
        return None, f"unknown keys {sorted(unknown_keys)}: a command has action, target and args"
    if not isinstance(target, str) or target not in {t for t, _ in specs}:
        return None, f"unknown target {target!r}; known: {', '.join(sorted({t for t, _ in specs}))}"
    spec = specs.get((target, action)) if isinstance(action, str) else None
    if spec is None:
        known = ", ".join(sorted(a for t, a in specs if t == target))
        return None, f"unknown action {action!r} for {target}; known: {known}"
    if not isinstance(args, dict):
        return None, "args must be an object"
    extra = set(args) - set(spec.args)
    if extra:
        return None, f"{action} {target} takes no {', '.join(sorted(extra))}"
    for name, rule in spec.args.items():
        if name not in args:
            if rule.required:
                return None, f"{action} {target} needs {name!r}"
            continue
        value = args[name]
        if rule.type is int:
            if not isinstance(value, int) or isinstance(value, bool) or value < rule.min_value:
                return None, f"{name!r} must be a whole number ≥ {rule.min_value}"
        elif rule.type is str:
            if not isinstance(value, str) or not value.strip():
                return None, f"{name!r} must be non-empty text"
            if len(value) > rule.max_len:
                return None, f"{name!r} is too long ({len(value)} > {rule.max_len} characters)"
        elif not isinstance(value, rule.type):
            return None, f"{name!r} must be {rule.type.__name__}"
    return spec, ""


def describe(specs: list[CommandSpec]) -> str:
    """The command syntax for the system prompt."""
    lines = ["To change data, put JSON commands in your answer (a ```json block or bare objects), one per "
             "change, at most 20. They run once your answer is complete. Commands:"]
    for spec in specs:
        fields = ", ".join(f'"{n}": {r.type.__name__}{"" if r.required else "?"}' for n, r in spec.args.items())
        lines.append(f'- {{"action": "{spec.action}", "target": "{spec.target}", "args": {{{fields}}}}}'
                     + (f"  e.g. {spec.example}" if spec.example else ""))
    return "\n".join(lines)


async def run_answer_commands(ctx: Any, sid: str, message_id: str, text: str) -> list[CommandResult]:
    """Find, validate and execute (exactly once) the commands in a finished answer; report each."""
    specs = {(s.target, s.action): s for p in ctx.plugins for s in p.commands}
    if not specs:
        return []
    findings = extract(text)
    results: list[CommandResult] = []
    for finding in findings:
        key = f"{message_id}:{finding.position}"
        if finding.position >= MAX_COMMANDS:
            result = CommandResult(False, f"command {finding.position + 1} ignored: at most {MAX_COMMANDS} "
                                          "commands run per answer")
        else:
            spec, why = validate(finding.command, specs) if finding.command is not None else (None, finding.error)
            if not await ctx.store.insert_record("command", key, {"message_id": message_id, "sid": sid,
                                                                  "command": finding.command, "state": "claimed"}):
                continue  # already executed (or being executed) by this or another server
            if spec is None:
                result = CommandResult(False, f"command not run: {why}")
            else:
                try:
                    result = await spec.run(ctx, sid, finding.command.get("args", {}))
                except Exception as exc:  # a plugin bug must not stop the other commands
                    result = CommandResult(False, f"command failed: {exc}")
            await ctx.store.put_record("command", key, {
                "message_id": message_id, "sid": sid, "command": finding.command, "state": "done",
                "ok": result.ok, "result": result.text, "before": result.before, "after": result.after})
        results.append(result)
        await ctx.post_event(sid, ("✓ " if result.ok else "✗ ") + result.text)
    return results
