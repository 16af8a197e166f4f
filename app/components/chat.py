"""The chat's pieces: message bubbles (one element per message, updated in place), the view that streams
an answer into its bubble as incremental markdown, the input with its live preview, the status badge."""

from __future__ import annotations

from fasthtml.common import (Aside, Button, Details, Div, Form, H2, Hidden, Li, NotStr, Option, Select, Span,
                             Summary, Textarea, Ul)

from app.quanda import QuandaToken
from app.render import open_fence_line, render_blocks, render_update

from . import ids
from .stream import StreamMarker

ROLE_LABEL = {"q": "You", "assistant": "Assistant", "thinking": "Thinking"}


def EventLine(text: str, oob: bool = False):
    """A subtle line in #msg-list for an ambient event (a menu choice, a run starting or finishing)."""
    line = Li(Span(text), cls="event-line")
    return Ul(line, hx_swap_oob=f"beforeend:#{ids.MSG_LIST}") if oob else line


def MessageBody(message_id: str, content: str, estimate: str | None, immutable: bool, oob: bool = False):
    """Finished blocks in the body, the open block (plus the estimate closing it) in the tail."""
    if immutable:
        stable, tail = render_blocks(content), ""
    else:
        update = render_update(content, 0, estimate)
        stable, tail = update.stable_html, update.tail_html
    swap = "true" if oob else None
    return (Div(NotStr(stable), id=ids.msg_body_id(message_id), cls="md", hx_swap_oob=swap),
            Div(NotStr(tail), id=ids.msg_tail_id(message_id), cls="md tail", hx_swap_oob=swap))


def MessageActions(message_id: str, state: str, oob: bool = False):
    """Stop while generating; Retry when stopped, failed or interrupted; nothing once final."""
    buttons = []
    if state == "generating":
        buttons.append(Form(Hidden(name="action", value="chat.stop"), Hidden(name="message_id", value=message_id),
                            Button("Stop", cls="secondary small", data_testid="stop"), ws_send=True))
    elif state in ("stopped", "failed", "interrupted"):
        buttons.append(Form(Hidden(name="action", value="chat.retry"), Hidden(name="message_id", value=message_id),
                            Button("Retry", cls="secondary small", data_testid="retry"), ws_send=True))
    return Div(*buttons, id=ids.msg_actions_id(message_id), cls="msg-actions", hx_swap_oob="true" if oob else None)


def ChatMessage(record, state: str = "final", thinking=None, follow: bool = True):
    """One message, created once and then updated in place by its stream."""
    mid = record.id
    parts = [Span(ROLE_LABEL.get(record.role, record.role), cls="msg-role")]
    if thinking is not None:
        parts.append(ThinkingSection(mid, thinking))
    else:
        parts.append(Div(id=ids.msg_thinking_id(mid)))
    parts.extend(MessageBody(mid, record.content, record.estimate, record.immutable))
    parts.append(Div(record.warning, id=ids.msg_warning_id(mid), cls="msg-warning"))
    if record.role == "assistant":
        parts.append(MessageActions(mid, state))
    if not record.immutable and follow:
        parts.append(StreamMarker(mid, record.last_seq, follow=True))
    return Li(*parts, id=ids.msg_id(mid), cls=f"msg {record.role}", data_state=state)


def ThinkingSection(answer_id: str, thinking, oob: bool = False):
    """The model's reasoning, collapsed, streamed like an answer (its own message)."""
    body = MessageBody(thinking.id, thinking.content, thinking.estimate, thinking.immutable)
    marker = StreamMarker(thinking.id, thinking.last_seq, follow=True) if not thinking.immutable else ""
    return Div(Details(Summary("Thinking"), *body, marker, cls="thinking"), id=ids.msg_thinking_id(answer_id),
               hx_swap_oob="true" if oob else None)


def AppendToList(*items):
    return Ul(*items, hx_swap_oob=f"beforeend:#{ids.MSG_LIST}")


class ChatView:
    """Streams one message into its bubble. It holds only the open block's text: finished blocks are sent
    once, appended to the body; the open block is re-rendered once per frame (not per token), with the
    estimate closing open structures. It starts from a snapshot: a page whose marker already holds the
    snapshot's seq gets nothing for it; anything else (a reconnect after changes, an override) gets the body
    re-rendered. The seq marker is sent only when the message ends or gets a warning: a page that
    reconnects mid-answer is re-rendered from a snapshot anyway."""

    snapshot = True

    def __init__(self, message_id: str, page_seq: int = 0):
        self.message_id = message_id
        self.page_seq = page_seq
        self.head = ""  # the open code fence's line when `tail` starts inside a long code block
        self.tail = ""
        self.estimate: str | None = None
        self.appended_stable: list[str] = []
        self.replace = False
        self.seq = 0
        self.warning: str | None = None
        self.immutable = False
        self.dirty = False
        self.started = False

    def feed(self, token: QuandaToken) -> None:
        self.seq = max(self.seq, token.seq)
        if token.kind == "override":
            first, self.started = not self.started, True
            self.head, self.tail, self.estimate, self.appended_stable = "", token.text, token.estimate, []
            self._cut(None)
            if first and token.seq == self.page_seq:
                self.appended_stable = []  # the page already shows exactly this snapshot
                return
            self.replace = True
        elif token.kind == "chunk":
            self.started = True
            self.tail += token.text
            self.estimate = token.estimate
        elif token.kind == "warning":
            self.warning = token.text
        elif token.kind == "immutable":
            self.immutable, self.estimate = True, None
        self.dirty = True

    def _cut(self, estimate: str | None) -> str:
        """Move the finished blocks of the open text to `appended_stable`; the tail's HTML."""
        content = self.head + self.tail
        update = render_update(content, len(self.head), estimate)
        if update.stable_offset > len(self.head):
            self.appended_stable.append(update.stable_html)
            self.head = open_fence_line(content, update.stable_offset)
            self.tail = content[update.stable_offset:]
        return update.tail_html

    def flush(self) -> list:
        if not self.dirty:
            return []
        mid, fragments = self.message_id, []
        if self.immutable:
            content = self.head + self.tail
            self.appended_stable.append(render_update(content, len(self.head), None, final=True).stable_html)
            self.head = self.tail = tail_html = ""
        else:
            tail_html = self._cut(self.estimate)
        stable = "".join(self.appended_stable)
        # the tail first: text moving from the tail to the body is never on the page twice, even for a moment
        if self.replace or self.tail or stable or self.immutable:
            fragments.append(Div(NotStr(tail_html), id=ids.msg_tail_id(mid), cls="md tail", hx_swap_oob="true"))
        if self.replace:
            fragments.append(Div(NotStr(stable), id=ids.msg_body_id(mid), cls="md", hx_swap_oob="true"))
        elif stable:
            fragments.append(Div(NotStr(stable), hx_swap_oob=f"beforeend:#{ids.msg_body_id(mid)}"))
        if self.warning is not None:
            fragments.append(Div(self.warning, id=ids.msg_warning_id(mid), cls="msg-warning", hx_swap_oob="true"))
        if self.immutable or self.warning is not None:
            fragments.append(StreamMarker(mid, self.seq, oob=True))
        self.appended_stable, self.replace, self.warning, self.dirty = [], False, None, False
        return fragments


def ChatInput(model: str = "", models: list[str] | None = None, turn: int = 0, oob: bool = False):
    """The draft box (streamed while typing), Send, Poke, the model picker. `turn` counts the questions sent,
    so a draft typed before a Send that arrives after it is recognised as stale."""
    options = [Option(m, value=m, selected=m == model) for m in (models or ([model] if model else []))]
    return Form(
        Hidden(name="action", value="chat.send"),
        Hidden(name="turn", value=str(turn)),
        Textarea(name="text", id=ids.CHAT_INPUT, placeholder="Ask, or tell the assistant what to do…", rows="3",
                 ws_send=True, hx_trigger="input changed delay:250ms", hx_vals='{"action": "chat.draft"}'),
        Div(id=ids.DRAFT_PREVIEW, cls="md draft-preview"),
        Div(Button("Send", type="submit", id="chat-send"),
            Button("Poke", type="submit", id="chat-poke", cls="secondary", name="poke", value="1",
                   title="Ask the assistant to react to what you just did"),
            Select(*options, name="model", id=ids.MODEL_PICKER, title="Model"),
            cls="chat-buttons"),
        ws_send=True, id=ids.CHAT_FORM, hx_swap_oob="true" if oob else None,
    )


def DraftPreview(html: str):
    return Div(NotStr(html), id=ids.DRAFT_PREVIEW, cls="md draft-preview", hx_swap_oob="true")


def StatusBadge(ok: bool, text: str, oob: bool = False):
    return Div(Span("●", cls="dot"), Span(text), id=ids.LLM_STATUS, cls=f"llm-status {'ok' if ok else 'bad'}",
               title=text, hx_swap_oob="true" if oob else None)


def ChatSidebar(history: list, status=None, chat_input=None):
    return Aside(
        Div(H2("Chat"), status if status is not None else Div(id=ids.LLM_STATUS), cls="chat-head"),
        Ul(*history, id=ids.MSG_LIST, cls="msg-list"),
        chat_input if chat_input is not None else Div(id=ids.CHAT_FORM),
        id="sidebar",
    )
