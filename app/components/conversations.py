"""The conversations on the Chat page: the list (each to open, continue, rename, delete or export), a search
by text, and the read-only viewer."""

from __future__ import annotations

from fasthtml.common import A, H3, Button, Details, Div, Form, Hidden, Input, Li, P, Section, Span, Strong, Summary, Ul

from . import ids
from .buttons import ws_button


def when(ts: float | None) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts or 0))


def RenameForm(cid: str, title: str):
    return Details(Summary("Rename", cls="small", data_testid="rename"),
                   Form(Hidden(name="action", value="chat.rename"), Hidden(name="cid", value=cid),
                        Input(name="title", value=title, maxlength="80", aria_label="New title", required=True),
                        Button("Save", cls="small", data_testid="rename-save"), ws_send=True, cls="rename-form"),
                   cls="rename")


def ConversationRow(conv: dict, is_current: bool):
    cid = conv["cid"]
    title = conv.get("title") or "Untitled conversation"
    actions = [ws_button("Open", "chat.open", {"cid": cid}, cls="secondary small", data_testid="open",
                         title="Read it here (read-only)")]
    if not is_current:
        actions.append(ws_button("Continue", "chat.continue", {"cid": cid}, cls="secondary small",
                                 data_testid="continue", title="Make it the conversation in the sidebar"))
    actions += [A("Markdown", href=f"/chat/export/{cid}.md", download=True, cls="small", data_testid="export-md"),
                A("JSON", href=f"/chat/export/{cid}.json", download=True, cls="small", data_testid="export-json"),
                RenameForm(cid, conv.get("title") or ""),
                Details(Summary("Delete", cls="small danger", data_testid="delete"),
                        Span("Its messages go too; this cannot be undone. ", cls="small"),
                        ws_button("Delete for good", "chat.delete", {"cid": cid}, cls="small danger",
                                  data_testid="delete-confirm"), cls="rename")]
    return Li(Div(Strong(title, cls="conv-title"),
                  Span(f"started {when(conv.get('created'))}, last {when(conv.get('updated'))}", cls="muted"),
                  Span("in the sidebar", cls="conv-current") if is_current else None, cls="conv-info"),
              Div(*actions, cls="conv-actions"), cls="conv current" if is_current else "conv", data_cid=cid)


def ConversationList(convs: list[dict], current: str, oob: bool = False):
    rows = [ConversationRow(c, c["cid"] == current) for c in convs]
    return Ul(*rows, id=ids.CONV_LIST, cls="conv-list", hx_swap_oob="true" if oob else None)


def ConversationView(conv: dict | None, items: list | None = None, is_current: bool = False, oob: bool = False):
    """One conversation, read-only (the Chat page's viewer)."""
    swap = "true" if oob else None
    if conv is None:
        return Div(P("Open a conversation to read it here.", cls="muted"), id=ids.CONV_VIEWER, cls="conv-viewer",
                   hx_swap_oob=swap)
    cid = conv["cid"]
    head = Div(H3(conv.get("title") or "Untitled conversation"),
               Span(f"started {when(conv.get('created'))}", cls="muted"),
               Div(*([] if is_current else [ws_button("Continue this conversation", "chat.continue", {"cid": cid},
                                                      cls="small", data_testid="viewer-continue")]),
                   A("Export Markdown", href=f"/chat/export/{cid}.md", download=True, cls="small"),
                   A("Export JSON", href=f"/chat/export/{cid}.json", download=True, cls="small"),
                   cls="conv-actions"),
               cls="conv-viewer-head")
    body = Ul(*(items or [Li("Nothing said yet.", cls="muted")]), cls="msg-list archived-list")
    return Section(head, body, id=ids.CONV_VIEWER, cls="conv-viewer", data_cid=cid, aria_label="Conversation",
                   hx_swap_oob=swap)


def SearchBox():
    return Form(Hidden(name="action", value="chat.search"),
                Input(type="search", name="q", placeholder="Search conversations…", aria_label="Search conversations",
                      maxlength="200", id=ids.CONV_SEARCH),
                Button("Search", cls="secondary small", data_testid="search"), ws_send=True, cls="conv-search")


def SearchResults(results: list[dict], text: str = "", oob: bool = False):
    if not text:
        return Div(id=ids.CONV_SEARCH_RESULTS, hx_swap_oob="true" if oob else None)
    rows = [Li(ws_button(r["title"], "chat.open", {"cid": r["cid"]}, cls="link", data_testid="search-hit"),
               Span(r["snippet"], cls="muted small"), data_cid=r["cid"]) for r in results]
    head = f"{len(results)} conversation{'s' if len(results) != 1 else ''} with “{text}”" if results else \
        f"No conversation holds “{text}”."
    return Div(P(head, cls="muted"), Ul(*rows, cls="search-hits"), id=ids.CONV_SEARCH_RESULTS,
               hx_swap_oob="true" if oob else None)
