"""Todos: add, edit, toggle, delete, reorder, by hand or by the LLM's JSON commands; per browser session.

Each todo is a record of kind "todo" keyed `<sid>:<id>`; ids are claimed with insert-if-absent, so two
writers (a click and a command) never get the same one. Every change redraws the list in every tab of the
session and becomes an ambient event the LLM sees.
"""

from __future__ import annotations

from app.commands import CommandResult, CommandSpec, Field
from app.components.todo import AddTodoForm, TodoList, TodoPage
from app.plugins import Plugin
from app.ws import ClientError

KIND = "todo"
MAX_NAME = 200
MAX_TODOS = 500
PROMPT_ITEMS = 50


async def todos(store, sid: str) -> list[dict]:
    return sorted((data for _key, data in await store.list_records(KIND, prefix=f"{sid}:")),
                  key=lambda t: (t["order"], t["id"]))


def _key(sid: str, todo_id: int) -> str:
    return f"{sid}:{todo_id:09d}"


async def add(store, sid: str, name: str) -> dict:
    items = await todos(store, sid)
    if len(items) >= MAX_TODOS:
        raise ClientError(f"at most {MAX_TODOS} todos")
    todo_id = max((t["id"] for t in items), default=0) + 1
    order = max((t["order"] for t in items), default=0) + 1
    while True:
        item = {"id": todo_id, "name": name, "done": False, "order": order}
        if await store.insert_record(KIND, _key(sid, todo_id), item):
            return item
        todo_id += 1


async def get(store, sid: str, todo_id: int) -> dict:
    item = await store.get_record(KIND, _key(sid, todo_id))
    if item is None:
        raise ClientError(f"there is no todo with id {todo_id}")
    return item


async def update(store, sid: str, todo_id: int, **changes) -> tuple[dict, dict]:
    before = await get(store, sid, todo_id)
    after = {**before, **changes}
    await store.put_record(KIND, _key(sid, todo_id), after)
    return before, after


async def delete(store, sid: str, todo_id: int) -> dict:
    before = await get(store, sid, todo_id)
    await store.delete_record(KIND, _key(sid, todo_id))
    return before


async def move(store, sid: str, todo_id: int, direction: str) -> None:
    items = await todos(store, sid)
    index = next((i for i, t in enumerate(items) if t["id"] == todo_id), None)
    if index is None:
        raise ClientError(f"there is no todo with id {todo_id}")
    other = index - 1 if direction == "up" else index + 1
    if not 0 <= other < len(items):
        return
    a, b = items[index], items[other]
    a_order, b_order = (b["order"], a["order"]) if a["order"] != b["order"] else (b["order"], b["order"] + 1)
    await store.put_record(KIND, _key(sid, a["id"]), {**a, "order": a_order})
    await store.put_record(KIND, _key(sid, b["id"]), {**b, "order": b_order})


# -- what the page does ----------------------------------------------------------------------------------

def _name(data: dict) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ClientError("a todo needs a name")
    if len(name) > MAX_NAME:
        raise ClientError(f"a todo name has at most {MAX_NAME} characters")
    return name.strip()


def _id(data: dict) -> int:
    try:
        todo_id = int(str(data.get("id", "")))
    except ValueError:
        raise ClientError("that is not a todo id") from None
    if todo_id < 1:
        raise ClientError("that is not a todo id")
    return todo_id


async def refresh(ctx, sid: str, *extra) -> None:
    await ctx.hub.broadcast(sid, TodoList(await todos(ctx.store, sid), oob=True), *extra)


async def on_add(conn, data):
    ctx = conn.hub.ctx
    item = await add(ctx.store, conn.sid, _name(data))
    await refresh(ctx, conn.sid, AddTodoForm(oob=True))
    await ctx.post_event(conn.sid, f"You added the todo '{item['name']}' (id {item['id']}).")


async def on_toggle(conn, data):
    ctx = conn.hub.ctx
    todo_id = _id(data)
    before = await get(ctx.store, conn.sid, todo_id)
    _, after = await update(ctx.store, conn.sid, todo_id, done=not before["done"])
    await refresh(ctx, conn.sid)
    state = "done" if after["done"] else "not done"
    await ctx.post_event(conn.sid, f"You marked the todo '{after['name']}' (id {todo_id}) {state}.")


async def on_edit(conn, data):
    ctx = conn.hub.ctx
    before, after = await update(ctx.store, conn.sid, _id(data), name=_name(data))
    await refresh(ctx, conn.sid)
    await ctx.post_event(conn.sid, f"You renamed the todo '{before['name']}' to '{after['name']}' (id {after['id']}).")


async def on_delete(conn, data):
    ctx = conn.hub.ctx
    before = await delete(ctx.store, conn.sid, _id(data))
    await refresh(ctx, conn.sid)
    await ctx.post_event(conn.sid, f"You deleted the todo '{before['name']}' (id {before['id']}).")


async def on_move(conn, data):
    ctx = conn.hub.ctx
    direction = data.get("direction")
    if direction not in ("up", "down"):
        raise ClientError("move a todo up or down")
    todo_id = _id(data)
    item = await get(ctx.store, conn.sid, todo_id)
    await move(ctx.store, conn.sid, todo_id, direction)
    await refresh(ctx, conn.sid)
    await ctx.post_event(conn.sid, f"You moved the todo '{item['name']}' (id {todo_id}) {direction}.")


async def page(ctx, sid: str):
    return TodoPage(await todos(ctx.store, sid))


async def prompt_context(ctx, sid: str) -> str:
    items = await todos(ctx.store, sid)
    if not items:
        return "The todo list is empty."
    lines = [f"- [{'x' if t['done'] else ' '}] id {t['id']}: {t['name'][:80]}" for t in items[:PROMPT_ITEMS]]
    more = f"\n(and {len(items) - PROMPT_ITEMS} more)" if len(items) > PROMPT_ITEMS else ""
    return "The user's todo list now:\n" + "\n".join(lines) + more


# -- what the LLM can do -----------------------------------------------------------------------------------

async def _command(ctx, sid, work) -> CommandResult:
    try:
        result = await work()
    except ClientError as exc:
        return CommandResult(False, str(exc))
    await refresh(ctx, sid)
    return result


async def cmd_list(ctx, sid, args) -> CommandResult:
    items = await todos(ctx.store, sid)
    text = "; ".join(f"{t['id']}: {t['name']}{' (done)' if t['done'] else ''}" for t in items) or "no todos"
    return CommandResult(True, f"Listed the todos: {text}")


async def cmd_insert(ctx, sid, args) -> CommandResult:
    async def work():
        item = await add(ctx.store, sid, args["name"].strip())
        return CommandResult(True, f"Added the todo '{item['name']}' (id {item['id']}).", None, item)
    return await _command(ctx, sid, work)


async def cmd_update(ctx, sid, args) -> CommandResult:
    async def work():
        changes = {k: (v.strip() if isinstance(v, str) else v) for k, v in args.items() if k in ("name", "done")}
        if not changes:
            return CommandResult(False, "update needs a name or done")
        before, after = await update(ctx.store, sid, args["id"], **changes)
        return CommandResult(True, f"Updated the todo {after['id']}: '{after['name']}'"
                                   f"{' (done)' if after['done'] else ''}.", before, after)
    return await _command(ctx, sid, work)


async def cmd_toggle(ctx, sid, args) -> CommandResult:
    async def work():
        before = await get(ctx.store, sid, args["id"])
        _, after = await update(ctx.store, sid, args["id"], done=not before["done"])
        state = "done" if after["done"] else "not done"
        return CommandResult(True, f"Marked the todo '{after['name']}' (id {after['id']}) {state}.", before, after)
    return await _command(ctx, sid, work)


async def cmd_delete(ctx, sid, args) -> CommandResult:
    async def work():
        before = await delete(ctx.store, sid, args["id"])
        return CommandResult(True, f"Deleted the todo '{before['name']}' (id {before['id']}).", before, None)
    return await _command(ctx, sid, work)


TODO_ID = Field(int, required=True)
COMMANDS = [
    CommandSpec("todo", "list", {}, '{"action": "list", "target": "todo"}', cmd_list),
    CommandSpec("todo", "insert", {"name": Field(str, required=True, max_len=MAX_NAME)},
                '{"action": "insert", "target": "todo", "args": {"name": "buy milk"}}', cmd_insert),
    CommandSpec("todo", "update", {"id": TODO_ID, "name": Field(str, max_len=MAX_NAME), "done": Field(bool)},
                '{"action": "update", "target": "todo", "args": {"id": 3, "name": "buy oat milk"}}', cmd_update),
    CommandSpec("todo", "toggle", {"id": TODO_ID}, '{"action": "toggle", "target": "todo", "args": {"id": 3}}',
                cmd_toggle),
    CommandSpec("todo", "delete", {"id": TODO_ID}, '{"action": "delete", "target": "todo", "args": {"id": 3}}',
                cmd_delete),
]

plugin = Plugin(
    name="todo",
    label="Todos",
    order=10,
    page=page,
    ws_handlers={"todo.add": on_add, "todo.toggle": on_toggle, "todo.edit": on_edit, "todo.delete": on_delete,
                 "todo.move": on_move},
    commands=COMMANDS,
    system_prompt="The Todos page is the user's todo list; you can change it with the todo commands.",
    prompt_context=prompt_context,
)
