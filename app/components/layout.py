"""The page: a nav bar with the plugin menu, the main area, and the chat sidebar. The WebSocket lives on
the stable #app element; navigation swaps only #main, so the socket survives it."""

from fasthtml.common import A, Div, Header, Main, Nav, Span, Strong, Title

from . import ids


def Menu(plugins, current: str | None = None):
    return Nav(
        Strong("Quanda", cls="brand"),
        *(A(p.label, href=f"/p/{p.name}", hx_get=f"/p/{p.name}", hx_target=f"#{ids.MAIN}", hx_push_url="true",
            cls="active" if p.name == current else None, data_plugin=p.name)
          for p in plugins if p.page is not None),
        id=ids.MENU,
    )


def Page(plugins, main_content, sidebar, current: str | None = None, title: str = "Quanda"):
    return (
        Title(title),
        Div(
            Header(Menu(plugins, current)),
            Div(id=ids.NOTICE),
            Div(Main(main_content, id=ids.MAIN), sidebar, cls="layout"),
            Span(id="ws-state", cls="ws-state", data_state="connecting"),
            id="app", hx_ext="ws", ws_connect="/ws",
        ),
    )
