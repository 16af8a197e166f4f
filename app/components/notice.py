"""Notices next to what caused them: an element with a fixed id beside a form (the chat's input, the todo
form, the simulator's controls), filled with a problem's text and emptied once it is no longer true (the next
success of that form, or typing in it: see static/quanda.js)."""

from fasthtml.common import Div


def FieldNotice(notice_id: str, text: str = "", oob: bool = True):
    """The notice `notice_id` saying `text` (empty: none)."""
    return Div(text, id=notice_id, cls="field-notice", role="alert", hx_swap_oob="true" if oob else None)
