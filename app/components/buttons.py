"""Controls shared by the plugins' pages."""

import json

from fasthtml.common import Button


def ws_button(label: str, action: str, values: dict | None = None, **attrs):
    """A button that sends `{"action": action, **values}` over the WebSocket when clicked (no form of its own:
    inside a form it also sends that form's fields, which the action ignores). `attrs` go to the button."""
    return Button(label, type="button", ws_send=True, hx_vals=json.dumps({"action": action, **(values or {})}),
                  **attrs)
