"""The page: a nav bar with the plugin menu, the main area, and the chat sidebar. The WebSocket lives on
the stable #app element; navigation swaps only #main, so the socket survives it."""

from fasthtml.common import A, Button, Div, Header, Main, Nav, Span, Strong, Title

from . import ids


def Notice(text: str, kind: str = "error"):
    """A message at the top of the page for what has no place of its own (a malformed frame, a lost stream);
    it replaces the previous one, has a close button, and goes when the tab navigates (static/quanda.js).
    Plugins show their own refusals next to the form that caused them (app/components/notice.py)."""
    return Div(Span(text, cls="notice-text"),
               Button("×", type="button", cls="notice-close", aria_label="Dismiss", title="Dismiss"),
               id=ids.NOTICE, cls=f"notice {kind}", role="alert", hx_swap_oob="true")


def ConnectionDot():
    """The live connection's state, a dot in the header after the menu (not inside it: the menu is redrawn) (static/quanda.js keeps it)."""
    return Span(id="ws-state", cls="ws-state", data_state="connecting", title="Connecting…", role="img",
                aria_label="Connecting…")


def Menu(plugins, current: str | None = None, oob: bool = False):
    return Nav(
        Strong("Quanda", cls="brand"),
        *(A(p.label, href=f"/p/{p.name}", hx_get=f"/p/{p.name}", hx_target=f"#{ids.MAIN}", hx_push_url="true",
            cls="active" if p.name == current else None, data_plugin=p.name,
            aria_current="page" if p.name == current else None)
          for p in plugins if p.page is not None),
        id=ids.MENU, hx_swap_oob="true" if oob else None,
    )


def PageContent(name: str | None, content):
    """The main area's content, naming the page it is (the tab tells the server, see quanda.js)."""
    return Div(content, id=ids.PAGE, data_page=name or "home")


def Page(plugins, main_content, sidebar, current: str | None = None, title: str = "Quanda", account=None):
    return (
        Title(title),
        Div(
            A("Skip to chat", href=f"#{ids.CHAT_INPUT}", cls="skip-link", title="Or press / anywhere"),
            Header(Menu(plugins, current), ConnectionDot(), *([account] if account is not None else [])),
            Div(id="connection", cls="connection", hidden=True),  # lost, retrying, queued (static/connection.js)
            Div(id=ids.NOTICE),
            Div(Main(PageContent(current, main_content), id=ids.MAIN), sidebar, cls="layout"),
            # on a phone the chat is a drawer over the page, this button away (static/phone.js, app.css)
            Button(Span("Chat"), Span(cls="unread-dot", aria_hidden="true"), type="button", cls="chat-toggle",
                   aria_controls="sidebar", aria_expanded="false", title="Open the chat"),
            id="app", hx_ext="ws,quanda", ws_connect="/ws",
        ),
    )
