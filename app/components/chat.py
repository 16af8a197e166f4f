"""The chat sidebar's pieces."""

from fasthtml.common import Aside, Div, H2, Li, Span, Ul

from . import ids


def EventLine(text: str, oob: bool = False):
    """A subtle line in #msg-list for an ambient event (a menu choice, a run starting or finishing)."""
    line = Li(Span(text), cls="event-line")
    return Ul(line, hx_swap_oob=f"beforeend:#{ids.MSG_LIST}") if oob else line


def ChatSidebar(events: list[str]):
    return Aside(
        H2("Chat"),
        Ul(*(EventLine(text) for text in events), id=ids.MSG_LIST, cls="msg-list"),
        Div("The chat input arrives with the chat plugin.", cls="muted"),
        id="sidebar",
    )
