"""Commands the LLM runs on the app: found in its answer (JSON in the text) or asked as native tool calls,
validated against the schemas plugins register, executed exactly once.

Extraction (`extract`) scans the answer in one linear pass: ```json fences (an object, several objects or an
array of them) and bare objects in the prose; other code fences (```python …) are examples, not commands.
Inside an object, JSON strings are tracked, so braces in strings do not end it; outside, quotes are prose.
Only objects with an "action" (or "operation") key are commands; the forms models write besides the one a
command runs as are brought to it by `command_forms` (or refused there, saying why).

Exactly once: each command has a key (`<message id>:<position>`). A command's operation first *plans* its
change (`Change`: record ops, what to say, facts to publish) without writing; then the claim — a record
under the key, holding the plan — and the change's ops are committed as one unit (one transaction on
SQLite, PostgreSQL and a MongoDB replica set; without transactions in order, claim first, each op a
whole-value put or a delete, so that re-applying a plan is harmless). A second run of the same key finds the
claim and only finishes what a crash left undone: a plan still "applying" (only possible without
transactions) is applied again by the job that holds the answer's lease after its claimer (the claim names
the claimer's fence; the store refuses the claimer's writes from then on), and the result line is posted
under a key fixed in the plan (an insert-if-absent), so it shows once. A claim made outside any job is
finished by whoever finds it once it is older than a job's lease.

Over 300 lines in one module: extraction, validation against the schemas and the exactly-once run are the
one pipeline every command takes, and are read (and changed) together.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from quanda import command_forms
from quanda.core.store.fencing import current_fence
from quanda.llm import tool_definition

log = logging.getLogger("quanda.commands")

MAX_COMMANDS = 20
CLAIM_KIND = "command"
_FENCE_RE = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                       re.M | re.S)


@dataclass(frozen=True)
class Field:
    type: type  # str, int, float or bool
    required: bool = False
    max_len: int = 200
    min_value: int = 1
    description: str = ""  # shown to the model in the tool's schema


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    text: str  # what the chat and the LLM are told
    before: Any = None
    after: Any = None


@dataclass(frozen=True)
class Change:
    """What an operation will do, decided before anything is written: record ops applied as one unit, what
    to say once they are, and the facts to publish then (e.g. which todos changed)."""

    result: CommandResult
    ops: tuple = ()  # RecordOp tuples: ("insert" | "put" | "delete", kind, key, data)
    facts: tuple = ()  # (topic, fact) pairs
    # A host's action (app/host.py): its effect is outside the store, so it cannot commit with the claim. It
    # runs once the claim is made, given the call's key, and says what it did; `rerun` (the action declared
    # itself idempotent under that key): a claim its claimer left unfinished runs the effect again.
    effect: Callable[[str], Awaitable[CommandResult]] | None = None
    rerun: bool = False
    # Undo (quanda.undo): a change of records can be taken back — the records its ops touched are put back as
    # they were, unless one changed since — and `undo_facts` are published then (what the pages redraw). A
    # change marked not `undoable` (or with no ops, or a host's effect) offers no Undo.
    undoable: bool = True
    undo_facts: tuple = ()

    @classmethod
    def refused(cls, why: str) -> "Change":
        return cls(CommandResult(False, why))


@dataclass(frozen=True)
class CommandSpec:
    """One action on one target, with the args it takes; `run(h, args)` plans it and returns a Change."""

    target: str
    action: str
    args: dict[str, Field] = field(default_factory=dict)
    example: str = ""
    run: Callable[..., Awaitable[Change]] | None = None
    description: str = ""
    name: str = ""  # the tool's name, when not `<target>_<action>` (a host's action: its function's name)
    # whether a call waits for the user's Approve (quanda.approvals): True, or a predicate of its arguments
    approval: bool | Callable[[dict], bool] = False
    # how a run of it shows in the answer (quanda.undo's result cards): `fn(result) -> FT`, where `result` has
    # "text", "args", "before", "after" (the CommandResult's) and "undone"; None: its text
    result_view: Callable[[dict], Any] | None = None
    # a host's action (its effect outside the store): how to take a run back, `await undo(h, args, key, text)`
    undo: Callable[..., Awaitable[str]] | None = None

    @property
    def tool_name(self) -> str:
        return self.name or f"{self.target}_{self.action}"


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
        if command_forms.is_command_tag(fence.group("lang")):
            _scan_json_block(fence.group("body"), findings)
        cursor = fence.end()
    _scan(text[cursor:], findings)
    return findings


def _scan_json_block(body: str, findings: list[Finding]) -> None:
    try:
        value = command_forms.loads(body)
    except ValueError:
        _scan(body, findings)
        return
    for item in value if isinstance(value, list) else [value]:
        if command_forms.looks_like_command(item):
            _found(item, findings)


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
    if depth > 0 and command_forms.mentions_command(text[start:]):
        findings.append(Finding(len(findings), None, "a command was cut off before its end (incomplete JSON)"))


def _add(candidate: str, findings: list[Finding]) -> None:
    try:
        value = command_forms.loads(candidate)
    except ValueError as exc:
        if command_forms.mentions_command(candidate):
            findings.append(Finding(len(findings), None, f"malformed command JSON ({exc.msg})"))
        return
    if command_forms.looks_like_command(value):
        _found(value, findings)


def _found(value: dict, findings: list[Finding]) -> None:
    """A command in any accepted form (command_forms), in the one form it runs as; or why it cannot run."""
    command, why = command_forms.canonical(value)
    findings.append(Finding(len(findings), command, why))


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
        elif rule.type is float:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return None, f"{name!r} must be a number"
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


async def apply_change(h: Any, change: Change) -> CommandResult:
    """Write a planned change (no claim: a person's own action) and publish its facts."""
    if change.ops and not await h.store.commit_records(list(change.ops)):
        return CommandResult(False, "that changed meanwhile; nothing was written, try again")
    for topic, fact in change.facts:
        await h.publish(topic, **fact)
    return change.result


# The points of a command's run where a crash matters ("after_claim", "after_effect", "before_result_line").
# Nothing in the app sets this: the tests do (tests/crashes.py), to kill a server exactly there.
crash_hook: Callable[[str], None] | None = None


def crash_point(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


async def run_once(h: Any, key: str, message_id: str, command: dict | None, plan: Change,
                   post_line: bool = True) -> CommandResult | None:
    """Run a planned command exactly once under `key`; None when another caller already ran it and has
    nothing left to finish. Posts the ✓/✗ result line (once) as an ambient event, unless `post_line` is
    False (a tool call's line is written into its answer instead)."""
    if plan.effect is not None:
        return await run_effect_once(h, key, message_id, command, plan, post_line)
    store = h.store
    fence = current_fence()
    claim = {"message_id": message_id, "command": command, "state": "applying", "ok": plan.result.ok,
             "result": plan.result.text, "before": plan.result.before, "after": plan.result.after,
             "ops": [list(op) for op in plan.ops], "facts": [list(f) for f in plan.facts],
             "undo": await undo_record(store, plan),
             "line_at": time.time_ns(), "claimed_at": time.time(),
             "lease": fence and fence.lease_key, "fence": fence and fence.fence}
    done = ("put", CLAIM_KIND, key, {**claim, "state": "done"})
    if store.atomic_records:  # claim and effect in one transaction
        committed = await store.commit_records([("insert", CLAIM_KIND, key, claim), *plan.ops, done])
        if committed:
            crash_point("after_claim")
    else:  # claim first; a crash before the ops leaves it "applying" for the next run to finish
        committed = await store.insert_record(CLAIM_KIND, key, claim)
        if committed:
            crash_point("after_claim")
            await store.commit_records([*plan.ops, done])
    finished_here = committed
    if committed:
        crash_point("after_effect")
    else:
        claim = await store.get_record(CLAIM_KIND, key)
        if claim is None:  # the plan's own ops were refused (a change meanwhile): say so, claim nothing
            return CommandResult(False, "command not run: the data changed meanwhile")
        if claim.get("effect"):  # a host's action, claimed before: its own rules
            return await run_effect_once(h, key, message_id, command, plan, post_line)
        if claim["state"] == "applying":
            if not claimer_gone(h, claim):
                return None  # its claimer is still at work
            # its claimer died (or stalled and was fenced) between the claim and its ops
            ops = [tuple(op) for op in claim["ops"]]
            await store.commit_records([*ops, ("put", CLAIM_KIND, key, {**claim, "state": "done"})])
            finished_here = True
    if finished_here:
        for topic, fact in claim["facts"]:
            await h.publish(topic, **fact)
    result = CommandResult(claim["ok"], claim["result"], claim["before"], claim["after"])
    crash_point("before_result_line")
    if post_line:
        await h.ctx.post_event(h.owner, result_line(result), key=f"{key}:{claim['line_at']}")
    return result if finished_here else None


async def undo_record(store: Any, plan: Change) -> dict | None:
    """What an Undo of the change needs: each record its ops touch, as it is now and as the change leaves it
    (None: absent), and the facts to publish then; None when it cannot be undone. (Read just before the
    change commits: the change itself was planned from the same records.)"""
    if not (plan.undoable and plan.result.ok and plan.ops):
        return None
    touched = []
    for op, kind, key, data in plan.ops:
        touched.append({"kind": kind, "key": key, "before": await store.get_record(kind, key),
                        "after": data if op in ("insert", "put") else None})
    return {"records": touched, "facts": [list(f) for f in plan.undo_facts]}


INTERRUPTED = ("was interrupted: the server stopped while it ran, so it may or may not have taken effect; it is "
               "not run again")


async def run_effect_once(h: Any, key: str, message_id: str, command: dict | None, plan: Change,
                          post_line: bool) -> CommandResult | None:
    """A host's action under `key`: claimed before it runs, run once, its result recorded. A claim found still
    "applying" whose claimer is gone (a crash between the claim and the result) is reported as interrupted,
    not run again — unless the action is idempotent under the key (`plan.rerun`): then it runs again."""
    store, fence = h.store, current_fence()
    name = (command or {}).get("action", "the action")
    claim = {"message_id": message_id, "command": command, "state": "applying", "effect": True, "ok": False,
             "result": "", "before": None, "after": None, "ops": [], "facts": [list(f) for f in plan.facts],
             "line_at": time.time_ns(), "claimed_at": time.time(),
             "lease": fence and fence.lease_key, "fence": fence and fence.fence}
    if await store.insert_record(CLAIM_KIND, key, claim):
        crash_point("after_claim")
        result = await plan.effect(key)
    else:
        claim = await store.get_record(CLAIM_KIND, key)
        if claim["state"] != "applying":
            result = None
        elif not claimer_gone(h, claim):
            return None  # its claimer is still at work
        elif plan.rerun and plan.effect is not None:
            result = await plan.effect(key)
        else:
            result = CommandResult(False, f"{claim['command'].get('action', name) if claim['command'] else name} "
                                   f"{INTERRUPTED}")
    if result is not None:
        claim = {**claim, "state": "done", "ok": result.ok, "result": result.text, "before": result.before,
                 "after": result.after}
        await store.commit_records([("put", CLAIM_KIND, key, claim)])
        crash_point("after_effect")
        if result.ok:
            for topic, fact in claim["facts"]:
                await h.publish(topic, **fact)
    recorded = CommandResult(claim["ok"], claim["result"], claim["before"], claim["after"])
    crash_point("before_result_line")
    if post_line:
        await h.ctx.post_event(h.owner, result_line(recorded), key=f"{key}:{claim['line_at']}")
    return recorded if result is not None else None


def claimer_gone(h: Any, claim: dict) -> bool:
    """Whether the claim left "applying" may be finished here: by the job now holding the lease its claimer
    held (the store refuses the claimer's writes from the moment that lease was taken), or, for a claim made
    outside any job, once it is older than a job's lease."""
    mine = current_fence()
    if mine is not None and claim.get("fence") is not None and claim.get("lease") == mine.lease_key:
        return mine.fence >= claim["fence"]
    return claim["claimed_at"] <= time.time() - h.settings.job_lease_s


def result_line(result: CommandResult) -> str:
    """The ✓/✗ line a command's result is shown as (and, for a tool call, sent back to the model as)."""
    return ("✓ " if result.ok else "✗ ") + result.text


async def claimed_result(h: Any, key: str) -> CommandResult | None:
    """The recorded result of the command claimed under `key`, or None when nothing was claimed there."""
    claim = await h.store.get_record(CLAIM_KIND, key)
    if claim is None:
        return None
    return CommandResult(claim["ok"], claim["result"], claim["before"], claim["after"])


async def plan_command(h: Any, command: dict | None, error: str, specs: dict) -> Change:
    """The change a found command would make, or a refusal saying why it runs nothing."""
    spec, why = validate(command, specs) if command is not None else (None, error)
    if spec is None:
        return Change.refused(f"command not run: {why}")
    return await plan_valid(h, spec, command.get("args", {}))


async def plan_valid(h: Any, spec: CommandSpec, args: dict) -> Change:
    """The change of a command its schema accepted (checked once, by whoever found it)."""
    try:
        return await spec.run(h, args)
    except Exception as exc:  # noqa: BLE001 - a plugin bug must not stop the other commands
        log.exception("command %s %s failed to plan", spec.target, spec.action)
        return Change.refused(f"command failed: {type(exc).__name__}")


def command_specs(plugins: list) -> dict[tuple[str, str], CommandSpec]:
    return {(s.target, s.action): s for p in plugins for s in p.commands}


# -- native tool calls --------------------------------------------------------------------------------------

def tool_specs(plugins: list) -> dict[str, CommandSpec]:
    """Every plugin's commands by tool name (`<target>_<action>`); ValueError, naming the plugin, when a
    command cannot be a tool (its name, its fields) or two make the same name."""
    by_name: dict[str, CommandSpec] = {}
    for plugin in plugins:
        for spec in plugin.commands:
            try:
                tool_definition(spec.tool_name, spec.description, spec.args)
            except ValueError as exc:
                raise ValueError(f"plugin {plugin.name!r}: command {spec.action} {spec.target}: {exc}") from None
            other = by_name.setdefault(spec.tool_name, spec)
            if other is not spec:
                raise ValueError(f"plugin {plugin.name!r}: two commands make the tool name {spec.tool_name!r}: "
                                 f"{other.action} {other.target} and {spec.action} {spec.target}")
    return by_name


def tool_definitions(specs: dict[str, CommandSpec]) -> list[dict]:
    """The `tools` sent to the model: one function per command, its JSON Schema made from the spec's fields
    (types, required fields, lengths, minimums; no other keys)."""
    return [tool_definition(name, spec.description or f"{spec.action} {spec.target}", spec.args)
            for name, spec in specs.items()]


def tool_call_command(call: dict, specs: dict[str, CommandSpec]) -> tuple[dict | None, str]:
    """The JSON command a tool call asks for, checked by the same schema as one written in the text:
    (command, "") or (None, why it cannot run). `call` is a TOOL_CALL event's data."""
    if call.get("error"):
        return None, str(call["error"])
    spec = specs.get(call.get("name"))
    if spec is None:
        return None, f"unknown tool {call.get('name')!r}; the tools are {', '.join(sorted(specs))}"
    arguments = call.get("arguments")
    if not _storable(arguments):
        return None, "the arguments hold text that is not valid Unicode (a lone surrogate)"
    command = {"action": spec.action, "target": spec.target, "args": arguments}
    checked, why = validate(command, {(spec.target, spec.action): spec})
    return (command, "") if checked is not None else (None, why)


async def plan_tool_call(h: Any, call: dict, specs: dict[str, CommandSpec]) -> tuple[dict | None, Change]:
    """(the command, the change it would make) for a tool call, or (None, a refusal saying why)."""
    command, why = tool_call_command(call, specs)
    if command is None:
        return None, Change.refused(f"{call.get('name') or 'tool call'} not run: {why}")
    return await plan_checked_call(h, call, specs)


async def plan_checked_call(h: Any, call: dict, specs: dict[str, CommandSpec]) -> tuple[dict | None, Change]:
    """(the command, its change) for a tool call `tool_call_command` accepted when it was recorded: not checked
    again (a tool no plugin offers any more is refused)."""
    spec = specs.get(call.get("name"))
    if spec is None:
        return None, Change.refused(f"{call.get('name')} not run: no plugin offers this tool any more")
    command = {"action": spec.action, "target": spec.target, "args": call["arguments"]}
    return command, await plan_valid(h, spec, call["arguments"])


def _storable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return False
    return True


async def run_answer_commands(h: Any, message_id: str, text: str) -> list[CommandResult]:
    """Find, validate and execute (exactly once) the commands in a finished answer; report each."""
    specs = command_specs(h.ctx.plugins)
    if not specs:
        return []
    from quanda import approvals  # approvals carry commands out: imported when the commands run

    results: list[CommandResult] = []
    for finding in extract(text):
        key = f"{message_id}:{finding.position}"
        if finding.position >= MAX_COMMANDS:
            plan = Change.refused(f"command {finding.position + 1} ignored: at most {MAX_COMMANDS} commands run "
                                  "per answer")
        elif (claim := await h.store.get_record(CLAIM_KIND, key)) is not None and not claim.get("effect"):
            plan = Change.refused("")  # already claimed: run_once finishes what a crash left undone
        else:
            plan = await plan_command(h, finding.command, finding.error, specs)
            spec = validate(finding.command, specs)[0] if plan.result.ok else None
            if spec is not None and approvals.needs_approval(spec, finding.command.get("args", {})):
                if await approvals.decision(h, key) is None:
                    await approvals.ask(h, key, message_id, "command", f"{spec.action} {spec.target} "
                                        f"{json.dumps(finding.command.get('args', {}))} — once approved: "
                                        f"{plan.result.text}",
                                        finding.command)
                continue  # a decided one runs (once) where the decision is carried out
        result = await run_once(h, key, message_id, finding.command, plan)
        if result is not None:
            results.append(result)
    return results
