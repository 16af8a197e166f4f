"""Todos: add, rename, toggle, delete, reorder — by hand on the page, or by the LLM's commands.

Each operation is written once (`plan_*`): it checks its input and plans a `Change` (the records to write, what
to say, the fact to publish) without writing anything; the page's actions apply it, and the LLM's commands run
it exactly once under their claim. Both say the same thing: the page posts "You added the todo …" as an
ambient event, a command shows "✓ Added the todo …".

A todo is a record of kind "todo" keyed `<owner>:<id>`; ids come from a counter per owner, so two writers (a
click and a command, on two servers) never get the same one. The fact `todo.changed` names the todos
touched and how (`op`: add, update, delete, move); every tab of the owner that shows the list updates those
rows only (and the counters under the list), so an edit in progress in another row is left alone.
Refusals show under the add form (`near`).
"""

from __future__ import annotations

from importlib.resources import files

from quanda.components import ids
from quanda.components.todo import AppendTodo, MoveTodo, RemoveTodo, TodoItem, TodoPage, TodoSummary
from quanda.api import Change, ClientError, CommandResult, CommandSpec, Field, Handle, Plugin, apply_change, near

KIND = "todo"
MAX_NAME = 200
MAX_TODOS = 500
PROMPT_ITEMS = 50
CHANGED = "todo.changed"


async def todos(h: Handle) -> list[dict]:
    return sorted((data for _key, data in await h.store.list_records(KIND, prefix=f"{h.owner}:")),
                  key=lambda t: (t["order"], t["id"]))


def _key(h: Handle, todo_id: int) -> str:
    return f"{h.owner}:{todo_id:09d}"


def _put(h: Handle, item: dict) -> tuple:
    return ("put", KIND, _key(h, item["id"]), item)


def _changed(op: str, *todo_ids: int) -> tuple:
    return ((CHANGED, {"ids": list(todo_ids), "op": op}),)


def _check_name(name: object) -> str | None:
    """The name to store, or None when it cannot be one (the caller says why)."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        return None
    return name.strip()


NAME_RULE = f"a todo needs a name of 1 to {MAX_NAME} characters"


async def _next_id(h: Handle, items: list[dict]) -> int:
    """A fresh id from the owner's counter (caught up once with ids made before the counter existed)."""
    highest = max((t["id"] for t in items), default=0)
    todo_id = await h.store.bump_counter(f"todo:{h.owner}")
    while todo_id <= highest:
        todo_id = await h.store.bump_counter(f"todo:{h.owner}")
    return todo_id


async def _get(h: Handle, todo_id: int) -> dict | None:
    return await h.store.get_record(KIND, _key(h, todo_id))


def _no_such(todo_id: int) -> Change:
    return Change.refused(f"there is no todo with id {todo_id}")


async def plan_add(h: Handle, name: object) -> Change:
    name = _check_name(name)
    if name is None:
        return Change.refused(NAME_RULE)
    items = await todos(h)
    if len(items) >= MAX_TODOS:
        return Change.refused(f"at most {MAX_TODOS} todos")
    item = {"id": await _next_id(h, items), "name": name, "done": False,
            "order": max((t["order"] for t in items), default=0) + 1}
    return Change(CommandResult(True, f"Added the todo '{name}' (id {item['id']}).", None, item),
                  (_put(h, item),), _changed("add", item["id"]))


async def plan_update(h: Handle, todo_id: int, name: object = None, done: object = None) -> Change:
    before = await _get(h, todo_id)
    if before is None:
        return _no_such(todo_id)
    after = dict(before)
    if name is not None:
        after["name"] = _check_name(name)
        if after["name"] is None:
            return Change.refused(NAME_RULE)
    if done is not None:
        after["done"] = bool(done)
    if name is None and done is None:
        return Change.refused("an update needs a name or done")
    if name is not None and done is None:
        text = f"Renamed the todo '{before['name']}' to '{after['name']}' (id {todo_id})."
    else:
        state = "done" if after["done"] else "not done"
        text = f"Marked the todo '{after['name']}' (id {todo_id}) {state}."
        if name is not None and after["name"] != before["name"]:
            text = f"Renamed the todo '{before['name']}' to '{after['name']}' and marked it {state} (id {todo_id})."
    return Change(CommandResult(True, text, before, after), (_put(h, after),), _changed("update", todo_id))


async def plan_toggle(h: Handle, todo_id: int) -> Change:
    before = await _get(h, todo_id)
    if before is None:
        return _no_such(todo_id)
    return await plan_update(h, todo_id, done=not before["done"])


async def plan_delete(h: Handle, todo_id: int) -> Change:
    before = await _get(h, todo_id)
    if before is None:
        return _no_such(todo_id)
    return Change(CommandResult(True, f"Deleted the todo '{before['name']}' (id {todo_id}).", before, None),
                  (("delete", KIND, _key(h, todo_id), None),), _changed("delete", todo_id))


async def plan_move(h: Handle, todo_id: int, direction: str) -> Change:
    items = await todos(h)
    index = next((i for i, t in enumerate(items) if t["id"] == todo_id), None)
    if index is None:
        return _no_such(todo_id)
    if direction not in ("up", "down"):
        return Change.refused("move a todo up or down")
    other = index - 1 if direction == "up" else index + 1
    a = items[index]
    text = f"Moved the todo '{a['name']}' (id {todo_id}) {direction}."
    if not 0 <= other < len(items):
        return Change(CommandResult(True, text, a, a))
    b = items[other]
    a_order, b_order = (b["order"], a["order"]) if a["order"] != b["order"] else (b["order"], b["order"] + 1)
    moved = {**a, "order": a_order}
    return Change(CommandResult(True, text, a, moved), (_put(h, moved), _put(h, {**b, "order": b_order})),
                  _changed("move", a["id"], b["id"]))


async def plan_clear_done(h: Handle) -> Change:
    done = [t for t in await todos(h) if t["done"]]
    if not done:
        return Change.refused("no todo is done")
    names = ", ".join(f"'{t['name']}'" for t in done[:5]) + (f" and {len(done) - 5} more" if len(done) > 5 else "")
    return Change(CommandResult(True, f"Cleared {len(done)} done todo{'s' if len(done) > 1 else ''}: {names}.",
                                done, None),
                  tuple(("delete", KIND, _key(h, t["id"]), None) for t in done),
                  _changed("delete", *(t["id"] for t in done)))


async def plan_toggle_all(h: Handle) -> Change:
    """Every todo done; or, when every one already is, none."""
    items = await todos(h)
    if not items:
        return Change.refused("there is no todo")
    done = not all(t["done"] for t in items)
    changed = [{**t, "done": done} for t in items if t["done"] != done]
    return Change(CommandResult(True, f"Marked all {len(items)} todos {'done' if done else 'not done'}.",
                                None, changed),
                  tuple(_put(h, t) for t in changed), _changed("update", *(t["id"] for t in changed)))


async def plan_list(h: Handle) -> Change:
    items = await todos(h)
    text = "; ".join(f"{t['id']}: {t['name']}{' (done)' if t['done'] else ''}" for t in items) or "no todos"
    return Change(CommandResult(True, f"Listed the todos: {text}"))


# -- the page -------------------------------------------------------------------------------------------------

def _id(data: dict) -> int:
    try:
        todo_id = int(str(data.get("id", "")))
    except ValueError:
        raise ClientError("that is not a todo id") from None
    if not 1 <= todo_id < 10**9:
        raise ClientError("that is not a todo id")
    return todo_id


async def _by_hand(h: Handle, change: Change) -> None:
    """Apply a person's own change and tell the LLM about it ("You added …")."""
    if not change.result.ok:
        raise ClientError(change.result.text)
    result = await apply_change(h, change)
    if not result.ok:
        raise ClientError(result.text)
    await h.post_event("You " + result.text[0].lower() + result.text[1:])


@near(ids.TODO_NOTICE)
async def on_add(h: Handle, data: dict) -> None:
    """The tab empties its box as it sends (static/todo.js), so the next name can be typed at once; a refusal
    puts the name back."""
    await _by_hand(h, await plan_add(h, data.get("name")))


@near(ids.TODO_NOTICE)
async def on_toggle(h: Handle, data: dict) -> None:
    await _by_hand(h, await plan_toggle(h, _id(data)))


@near(ids.TODO_NOTICE)
async def on_edit(h: Handle, data: dict) -> None:
    """Save an inline edit; an empty name deletes the todo (as in TodoMVC)."""
    name = data.get("name")
    if isinstance(name, str) and not name.strip():
        await _by_hand(h, await plan_delete(h, _id(data)))
        return
    await _by_hand(h, await plan_update(h, _id(data), name=name))


@near(ids.TODO_NOTICE)
async def on_delete(h: Handle, data: dict) -> None:
    await _by_hand(h, await plan_delete(h, _id(data)))


@near(ids.TODO_NOTICE)
async def on_move(h: Handle, data: dict) -> None:
    await _by_hand(h, await plan_move(h, _id(data), data.get("direction")))


@near(ids.TODO_NOTICE)
async def on_clear_done(h: Handle, data: dict) -> None:
    await _by_hand(h, await plan_clear_done(h))


@near(ids.TODO_NOTICE)
async def on_toggle_all(h: Handle, data: dict) -> None:
    await _by_hand(h, await plan_toggle_all(h))


async def page(h: Handle):
    return TodoPage(await todos(h))


async def show_changes(h: Handle, fact: dict):
    """The rows the change touched, and the counters: nothing else of the list is sent."""
    items = await todos(h)
    by_id = {t["id"]: t for t in items}
    touched = [i for i in fact.get("ids", []) if isinstance(i, int)]
    fragments: list = []
    if fact.get("op") == "move" and touched and touched[0] in by_id:
        moved = by_id[touched[0]]
        at = items.index(moved)
        fragments += MoveTodo(moved, items[at + 1]["id"] if at + 1 < len(items) else None)
        touched = []  # the other row only changed places with it
    for todo_id in touched:
        if todo_id not in by_id:
            fragments.append(RemoveTodo(todo_id))
        elif fact.get("op") == "add":
            fragments.append(AppendTodo(by_id[todo_id]))
        else:
            fragments.append(TodoItem(by_id[todo_id], oob=True))
    return fragments + TodoSummary(items)


async def prompt_context(h: Handle) -> str:
    items = await todos(h)
    if not items:
        return "The todo list is empty."
    lines = [f"- [{'x' if t['done'] else ' '}] id {t['id']}: {t['name'][:80]}" for t in items[:PROMPT_ITEMS]]
    more = f"\n(and {len(items) - PROMPT_ITEMS} more)" if len(items) > PROMPT_ITEMS else ""
    return "The user's todo list now:\n" + "\n".join(lines) + more


# -- what the LLM can do --------------------------------------------------------------------------------------

TODO_ID = Field(int, required=True)
COMMANDS = [
    CommandSpec("todo", "list", {}, '{"action": "list", "target": "todo"}', lambda h, args: plan_list(h),
                "List the user's todos with their ids."),
    CommandSpec("todo", "insert", {"name": Field(str, required=True, max_len=MAX_NAME)},
                '{"action": "insert", "target": "todo", "args": {"name": "buy milk"}}',
                lambda h, args: plan_add(h, args["name"]), "Add a todo."),
    CommandSpec("todo", "update", {"id": TODO_ID, "name": Field(str, max_len=MAX_NAME), "done": Field(bool)},
                '{"action": "update", "target": "todo", "args": {"id": 3, "name": "buy oat milk"}}',
                lambda h, args: plan_update(h, args["id"], args.get("name"), args.get("done")),
                "Rename a todo and/or mark it done or not done."),
    CommandSpec("todo", "toggle", {"id": TODO_ID}, '{"action": "toggle", "target": "todo", "args": {"id": 3}}',
                lambda h, args: plan_toggle(h, args["id"]), "Flip a todo between done and not done."),
    CommandSpec("todo", "delete", {"id": TODO_ID}, '{"action": "delete", "target": "todo", "args": {"id": 3}}',
                lambda h, args: plan_delete(h, args["id"]), "Delete a todo."),
]

plugin = Plugin(
    name="todo",
    label="Todos",
    order=10,
    page=page,
    ws_handlers={"todo.add": on_add, "todo.toggle": on_toggle, "todo.edit": on_edit, "todo.delete": on_delete,
                 "todo.move": on_move, "todo.clear_done": on_clear_done, "todo.toggle_all": on_toggle_all},
    fact_views={CHANGED: show_changes},
    commands=COMMANDS,
    system_prompt="The Todos page is the user's todo list; you can change it with the todo commands.",
    prompt_context=prompt_context,
    assets=(str(files("quanda.static") / "todo.js"),),  # the filters and the inline editor
)
