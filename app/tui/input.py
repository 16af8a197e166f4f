"""The question box: Enter sends, as in the browser; Ctrl+J (or Alt+Enter, or Shift+Enter where the terminal
tells it apart) adds a line. Both clients behave alike for the person who uses both."""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

NEW_LINE_KEYS = ("ctrl+j", "alt+enter", "shift+enter")


class QuestionInput(TextArea):
    """A multi-line TextArea whose Enter asks for the question to be sent (`QuestionInput.Send`)."""

    BINDINGS = [
        Binding("enter", "send", "Send", key_display="⏎", priority=True),
        Binding("ctrl+j", "new_line", "New line", key_display="^j", priority=True),
        Binding("alt+enter,shift+enter", "new_line", "New line", show=False, priority=True),
    ]

    class Send(Message):
        """Enter was pressed in the box."""

    def action_send(self) -> None:
        self.post_message(self.Send())

    def action_new_line(self) -> None:
        start, end = self.selection
        self._replace_via_keyboard("\n", start, end)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter" or event.key in NEW_LINE_KEYS:  # (the bindings above handle them)
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)
