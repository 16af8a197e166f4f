"""The todo page: an add form and the list, each item with toggle, edit, delete and move buttons."""

from fasthtml.common import H3, Article, Button, Form, Hidden, Input, Li, Span, Ul

from . import ids


def _action(action: str, todo_id: int, *children, **extra):
    return Form(Hidden(name="action", value=action), Hidden(name="id", value=str(todo_id)), *children,
                ws_send=True, cls="inline", **extra)


def TodoItem(item: dict, first: bool = False, last: bool = False):
    tid = item["id"]
    return Li(
        _action("todo.toggle", tid, Button("☑" if item["done"] else "☐", cls="icon", title="Toggle done",
                                           data_testid="toggle")),
        Span(item["name"], cls="todo-name done" if item["done"] else "todo-name"),
        Span(f"#{tid}", cls="muted"),
        _action("todo.edit", tid, Input(name="name", value=item["name"], maxlength="200", aria_label="New name",
                                        cls="todo-edit"), Button("Save", cls="secondary small"),
                data_testid="edit-form"),
        _action("todo.move", tid, Hidden(name="direction", value="up"),
                Button("↑", cls="icon", title="Move up", disabled=first, data_testid="up")),
        _action("todo.move", tid, Hidden(name="direction", value="down"),
                Button("↓", cls="icon", title="Move down", disabled=last, data_testid="down")),
        _action("todo.delete", tid, Button("✕", cls="icon danger", title="Delete", data_testid="delete")),
        id=ids.todo_item_id(tid), cls="todo", data_done="1" if item["done"] else "0",
    )


def TodoList(items: list[dict], oob: bool = False):
    rows = [TodoItem(item, i == 0, i == len(items) - 1) for i, item in enumerate(items)]
    return Ul(*rows or [Li("Nothing to do. Add a todo, or ask the chat to.", cls="muted empty")], id=ids.TODO_LIST,
              cls="todo-list", hx_swap_oob="true" if oob else None)


def AddTodoForm(oob: bool = False):
    return Form(Hidden(name="action", value="todo.add"),
                Input(name="name", placeholder="What needs doing?", maxlength="200", required=True, id="todo-new"),
                Button("Add", id="todo-add"), ws_send=True, id=ids.TODO_ADD_FORM, cls="todo-add",
                hx_swap_oob="true" if oob else None)


def TodoPage(items: list[dict]):
    return Article(H3("Todos"), AddTodoForm(), TodoList(items), cls="card", id="todo-card")
