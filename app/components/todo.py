"""The todo page, TodoMVC-style: a "mark all" box and the add form, the list (each row: a done box, the name
(double-click it, press Enter on the row or ✎ to edit it inline), move up/down, delete), and a footer with the
count of open todos, the filters (all / active / done) and "Clear done".

Every change updates only the rows it touched (`TodoRow` replaced in place, `AppendTodo`, `RemoveTodo`,
`MoveTodo`) plus the footer's counters (`TodoSummary`), so a row being edited in one tab is left alone by
changes to other rows. The filters and the inline editor live in the tab (static/todo.js, app.css)."""

from __future__ import annotations

import json

from fasthtml.common import (H3, A, Article, Button, Div, Form, Hidden, Input, Label, Li, Nav, P, Span, Strong,
                             Ul)

from . import ids
from .buttons import ws_button
from .notice import FieldNotice


def TodoItem(item: dict, oob: bool = False):
    tid = item["id"]
    done = bool(item["done"])
    toggle = Input(type="checkbox", cls="toggle", checked=done, ws_send=True, hx_trigger="change",
                   hx_vals=json.dumps({"action": "todo.toggle", "id": str(tid)}), aria_label="Done",
                   data_testid="toggle")
    view = Div(
        toggle,
        Label(item["name"], cls="todo-name", title="Double-click to edit", data_testid="name"),
        Span(f"#{tid}", cls="todo-id muted"),
        Button("✎", type="button", cls="icon todo-edit-button", title="Edit (or double-click the name)",
               aria_label="Edit", data_testid="edit"),
        ws_button("↑", "todo.move", {"id": str(tid), "direction": "up"}, cls="icon move-up", title="Move up",
                  data_testid="up"),
        ws_button("↓", "todo.move", {"id": str(tid), "direction": "down"}, cls="icon move-down",
                  title="Move down", data_testid="down"),
        ws_button("✕", "todo.delete", {"id": str(tid)}, cls="icon danger", title="Delete", data_testid="delete"),
        cls="view",
    )
    edit = Form(Hidden(name="action", value="todo.edit"), Hidden(name="id", value=str(tid)),
                Input(name="name", value=item["name"], maxlength="200", cls="edit", id=ids.todo_edit_id(tid),
                      aria_label="Edit the todo (Enter saves, Escape cancels)", autocomplete="off"),
                ws_send=True, cls="edit-form", data_notice=ids.TODO_NOTICE, data_testid="edit-form")
    return Li(view, edit, id=ids.todo_item_id(tid), cls="todo done" if done else "todo", tabindex="0",
              data_done="1" if done else "0", data_id=str(tid), hx_swap_oob="true" if oob else None)


def AppendTodo(item: dict):
    """A new row at the end of the list (a tab that has it already keeps its own, see quanda.js)."""
    return Ul(TodoItem(item), hx_swap_oob=f"beforeend:#{ids.TODO_LIST}")


def RemoveTodo(todo_id: int):
    return Li(id=ids.todo_item_id(todo_id), hx_swap_oob="delete")


def MoveTodo(item: dict, before: int | None):
    """A row moved: taken out, and put back before the row `before` (at the end when None)."""
    where = f"beforebegin:#{ids.todo_item_id(before)}" if before is not None else f"beforeend:#{ids.TODO_LIST}"
    return [RemoveTodo(item["id"]), Ul(TodoItem(item), hx_swap_oob=where)]


def TodoList(items: list[dict]):
    return Ul(*[TodoItem(item) for item in items], id=ids.TODO_LIST, cls="todo-list", aria_label="Todos")


def TodoCount(items: list[dict], oob: bool = False):
    left = sum(1 for t in items if not t["done"])
    return Span(Strong(str(left)), " item left" if left == 1 else " items left", id=ids.TODO_COUNT,
                cls="todo-count", data_left=str(left), hx_swap_oob="true" if oob else None)


def ClearDone(items: list[dict], oob: bool = False):
    done = sum(1 for t in items if t["done"])
    return ws_button(f"Clear done ({done})" if done else "Clear done", "todo.clear_done", cls="secondary small",
                     id=ids.TODO_CLEAR, disabled=not done, title="Delete every done todo",
                     hx_swap_oob="true" if oob else None)


def ToggleAll(items: list[dict], oob: bool = False):
    every = bool(items) and all(t["done"] for t in items)
    return Input(type="checkbox", id=ids.TODO_TOGGLE_ALL, cls="toggle-all", checked=every, disabled=not items,
                 ws_send=True, hx_trigger="change", hx_vals='{"action": "todo.toggle_all"}',
                 aria_label="Mark all as done" if not every else "Mark all as not done",
                 title="Mark all as done (or all as not done)", hx_swap_oob="true" if oob else None)


def TodoSummary(items: list[dict]):
    """What every change may alter besides its rows: the count, "Clear done", the mark-all box."""
    return [TodoCount(items, oob=True), ClearDone(items, oob=True), ToggleAll(items, oob=True)]


def AddTodoForm(oob: bool = False):
    return Form(Hidden(name="action", value="todo.add"),
                Input(name="name", placeholder="What needs doing?", maxlength="200", required=True, id="todo-new",
                      aria_label="New todo", autocomplete="off", autofocus=True),
                Button("Add", id="todo-add"), ws_send=True, id=ids.TODO_ADD_FORM, cls="todo-add",
                data_notice=ids.TODO_NOTICE, hx_swap_oob="true" if oob else None)


def TodoFilters():
    return Nav(A("All", href="#/", data_filter="all", cls="selected"),
               A("Active", href="#/active", data_filter="active"),
               A("Done", href="#/done", data_filter="done"), cls="todo-filters", aria_label="Show")


def TodoPage(items: list[dict]):
    return Article(
        H3("Todos"),
        Div(ToggleAll(items), AddTodoForm(), cls="todo-head"),
        FieldNotice(ids.TODO_NOTICE, oob=False),
        TodoList(items),
        P("Nothing to do. Add a todo, or ask the chat to.", cls="muted todo-empty"),
        P("Nothing here with this filter.", cls="muted todo-filtered-empty"),
        Div(TodoCount(items), TodoFilters(), ClearDone(items), cls="todo-footer"),
        P(Span("Double-click a todo (or press Enter on it) to edit it: Enter saves, Escape cancels.",
               cls="help-pointer"),
          Span("Tap ✎ to edit a todo; Enter (or tapping elsewhere) saves.", cls="help-touch"),
          cls="muted todo-help"),
        cls="card", id="todo-card", data_filter="all")
