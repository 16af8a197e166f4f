"""The chat's pieces: message bubbles (one element per message, updated in place), the view that streams
an answer into its bubble as incremental markdown, the input with its live preview and its Send/Stop slot,
the status badge, and the conversations (the list, a read-only view, previous versions of an edited turn).

Over 300 lines: these are the chat's FT components, one concept (the markup of the chat) that the page, the
stream views and the fact views all draw from; its streaming view is the only part with state."""

from __future__ import annotations

import re
import time

from fasthtml.common import (Aside, Button, Details, Div, Form, H2, Hidden, Li, NotStr, Option,
                             Select, Span, Summary, Textarea, Ul)

from quanda.render import MarkdownStream, render_markdown

from . import ids
from .answer import AnswerFooter, AnswerInfo, Outcome, UsageLine
from .buttons import ws_button
from .model_name import model_label
from .notice import FieldNotice
from .stream import StreamMarker

ROLE_LABEL = {"q": "You", "assistant": "Assistant", "thinking": "Thinking"}


PIECE = '<div class="md-piece">{}</div>'  # one piece of the open block's tail (the stream view appends them)


def EventLine(text: str, oob: bool = False):
    """A subtle line in #msg-list for an ambient event (a menu choice, a run starting or finishing)."""
    line = Li(Span(text), cls="event-line")
    return Ul(line, hx_swap_oob=f"beforeend:#{ids.MSG_LIST}") if oob else line


def MessageBody(message_id: str, content: str, estimate: str | None, immutable: bool, oob: bool = False):
    """Finished blocks in the body; the open block's pieces in the tail; the estimate after them.

    While a message streams, `ChatView` (app/chat/stream_view.py) keeps exactly this DOM up to date: what a page shows after
    any frame is what a reload would render for the same content."""
    stream = MarkdownStream()
    stream.append(content)
    if immutable:
        stream.finish()
    else:
        stream.update()
    swap = "true" if oob else None
    return (Div(NotStr(stream.take_finished()), id=ids.msg_body_id(message_id), cls="md", hx_swap_oob=swap),
            Div(NotStr(stream.tail_html(PIECE)), id=ids.msg_tail_id(message_id), cls="md tail", hx_swap_oob=swap),
            Estimate(message_id, None if immutable else estimate, oob))


_CLOSERS_ONLY = re.compile(r"[\s`~*_]*")


def estimate_text(estimate: str | None) -> str:
    """What is shown of an estimate: the text as it is, or nothing for one made only of closing characters
    (the closing fence an older producer sent with each chunk): the renderer closes open structures itself."""
    return "" if not estimate or _CLOSERS_ONLY.fullmatch(estimate) else estimate


def Estimate(message_id: str, estimate: str | None, oob: bool = False):
    """The estimate, as plain text, after the tail."""
    return Div(estimate_text(estimate), id=ids.msg_estimate_id(message_id), cls="md-estimate",
               hx_swap_oob="true" if oob else None)


def MessageActions(message_id: str, state: str, oob: bool = False, info: AnswerInfo | None = None):
    """Under an answer (see `AnswerFooter`): Retry when unfinished and not sealed, Regenerate on the last
    answer, its usage and versions. (Stop takes Send's place in the input while an answer is written.)"""
    return AnswerFooter(message_id, info or AnswerInfo(status=state), oob)


def ChatMessage(record, state: str = "final", thinking=None, follow: bool = True, info: AnswerInfo | None = None):
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
        parts.append(MessageActions(mid, state, info=info))
    elif record.role == "q":  # shown only on the last question, and not while an answer is written (app.css)
        parts.append(ws_button("Edit", "chat.edit", {"message_id": mid}, cls="edit-q link small",
                               title="Edit this question and ask again (the answer is kept as a previous version)",
                               data_testid="edit"))
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


NO_MODEL_REASON = "Send is off: there is no model to answer (see the status at the top of the chat)."


def SendSlot(answering: str | None = None, oob: bool = False, no_model: bool = False):
    """Send, or Stop in its place while an answer is being written; Send is off, saying why, with no model
    (static/chat.js turns it on and off as the status badge changes)."""
    if answering:
        button = ws_button("Stop", "chat.stop", {"message_id": answering}, cls="stop", id=ids.CHAT_STOP,
                           title="Stop the answer (the LLM stops generating)", data_testid="stop")
    else:
        button = Button("Send", type="submit", id=ids.CHAT_SEND, disabled=no_model,
                        title=NO_MODEL_REASON if no_model else "Send (Enter; Shift+Enter for a new line)",
                        aria_describedby=ids.SEND_REASON)
    return Span(button, id=ids.SEND_SLOT, cls="send-slot", hx_swap_oob="true" if oob else None)


def ModelPicker(model: str = "", models: list[str] | None = None, oob: bool = False):
    """The models the server has, each by its short name with the full one in a tooltip; with none, it says
    so (static/chat.js keeps the tab's choice when the list it gets again is the same)."""
    names = models or ([model] if model else [])
    if not names:
        return Select(Option("No model available", value="", selected=True), name="model", id=ids.MODEL_PICKER,
                      title="No model available: the LLM server is not running or lists none (see the status)",
                      aria_label="Model", disabled=True, hx_swap_oob="true" if oob else None)
    options = [Option(model_label(m), value=m, selected=m == model, title=m) for m in names]
    return Select(*options, name="model", id=ids.MODEL_PICKER, title=model or "Model", aria_label="Model",
                  hx_swap_oob="true" if oob else None)


def ChatInput(model: str = "", models: list[str] | None = None, turn: int = 0, oob: bool = False, *,
              text: str = "", preview: str = "", editing: str | None = None, answering: str | None = None):
    """The draft box (streamed while typing), Send (Stop while an answer is written), Poke, the model picker,
    the chat's notice. `turn` counts the questions sent, so a draft typed before a Send that arrives after it
    is recognised as stale. `text` and `preview`: the draft being typed; `editing`: the id of the question
    being edited (sent with the form)."""
    no_model = not model and not models
    return Form(
        Hidden(name="action", value="chat.send"),
        TurnField(turn),
        FieldNotice(ids.CHAT_NOTICE, oob=False),
        EditingBanner(editing),
        Textarea(text, name="text", id=ids.CHAT_INPUT, placeholder="Ask, or tell the assistant what to do…  ( / )",
                 rows="2", aria_label="Your question", aria_keyshortcuts="/",
                 title="Enter sends, Shift+Enter adds a line, Escape leaves; / comes back here from anywhere", ws_send=True, hx_trigger="input changed delay:250ms",
                 hx_vals='{"action": "chat.draft"}'),
        Div(NotStr(preview), id=ids.DRAFT_PREVIEW, cls="md draft-preview"),
        Div(SendSlot(answering, no_model=no_model),
            Button("Poke", type="submit", id="chat-poke", cls="secondary", name="poke", value="1",
                   title="Ask the assistant to react to what you just did"),
            ModelPicker(model, models),
            cls="chat-buttons"),
        Div(NO_MODEL_REASON, id=ids.SEND_REASON, cls="send-reason muted", hidden=not no_model or bool(answering)),
        ws_send=True, id=ids.CHAT_FORM, data_notice=ids.CHAT_NOTICE, data_stick=ids.MSG_LIST,
        hx_swap_oob="true" if oob else None,
    )


def TurnField(turn: int, oob: bool = False):
    """How many questions were sent: a draft typed before the last Send that arrives after it is stale."""
    return Hidden(name="turn", value=str(turn), id=ids.CHAT_TURN, hx_swap_oob="true" if oob else None)


def EditingBanner(question_id: str | None, oob: bool = False):
    if not question_id:
        return Div(id=ids.CHAT_EDITING, cls="chat-editing", hx_swap_oob="true" if oob else None)
    return Div(Span("Editing your last question: Send asks it again, the old answer is kept."),
               ws_button("Cancel", "chat.cancel_edit", cls="link small", id=ids.CHAT_CANCEL_EDIT,
                         title="Keep the question as it was (Escape)"),
               Hidden(name="edit", value=question_id), id=ids.CHAT_EDITING, cls="chat-editing on")


def DraftPreview(html: str):
    return Div(NotStr(html), id=ids.DRAFT_PREVIEW, cls="md draft-preview", hx_swap_oob="true")


def StatusBadge(ok: bool, text: str, oob: bool = False, check_s: float | None = None, model: str = "",
                busy: bool = False):
    """Whether the LLM answers, the whole text shown (it wraps: the hint is the useful half), a model by its
    short name (the full text in the tooltip); `data-model` empty (and not busy) means there is no model to
    answer, and the tab turns Send off (static/chat.js). The tab asks again every `check_s` seconds."""
    shown = text.replace(model, model_label(model)) if model else text
    return Div(Span("●", cls="dot", aria_hidden="true"), Span(shown, cls="llm-text"), id=ids.LLM_STATUS,
               cls=f"llm-status {'ok' if ok else 'bad'}", title=text, role="status", data_model=model,
               data_busy="1" if busy else None,
               data_check_s=f"{check_s:g}" if check_s else None, hx_swap_oob="true" if oob else None)


def MessageList(history: list, oob: bool = False):
    """The conversation's messages and events; `aria-live` so screen readers hear what arrives."""
    return Ul(*history, id=ids.MSG_LIST, cls="msg-list follow-scroll", role="log", aria_live="polite",
              aria_label="Messages",
              hx_swap_oob="innerHTML" if oob else None)


def Suggestions(prompts: list[str], oob: bool = False):
    """Prompts to ask with one click (none: an empty element, kept for the next update)."""
    buttons = [ws_button(text, "chat.send", {"text": text}, cls="suggestion secondary small", data_testid="suggestion",
                         title="Ask this") for text in prompts]
    return Div(*buttons, id=ids.CHAT_SUGGESTIONS, cls="chat-suggestions", role="group", aria_label="Suggestions",
               hx_swap_oob="true" if oob else None)


def SpeakUpToggle(on: bool, oob: bool = False):
    """Whether the assistant may answer on its own after what the user does (pressing it silences it)."""
    return ws_button("Speak up: on" if on else "Speak up: off", "chat.speak_up", {"on": not on},
                     id=ids.CHAT_SPEAK_UP, cls="secondary small", aria_pressed="true" if on else "false",
                     title="Let the assistant answer on its own after what you do (rate-limited); press again to "
                           "silence it" if not on else "Silence the assistant: it answers only when asked",
                     hx_swap_oob="true" if oob else None)


def ChatSidebar(history: list, status=None, chat_input=None, settings=None, suggestions=None, speak_up=None):
    return Aside(
        Div(H2("Chat"), status if status is not None else Div(id=ids.LLM_STATUS),
            ws_button("New", "chat.new", cls="secondary small", id=ids.CHAT_NEW,
                      title="Start a new conversation (this one is kept: see the Chat page)"),
            speak_up if speak_up is not None else SpeakUpToggle(False),
            Button("×", type="button", cls="chat-close secondary small", aria_label="Close the chat",
                   title="Back to the page"),  # (a phone's drawer only: app.css)
            cls="chat-head"),
        Div(MessageList(history),
            Button("↓ Jump to latest", type="button", id=ids.CHAT_JUMP, cls="jump", hidden=True,
                   data_jump_for=ids.MSG_LIST, title="Jump to the latest message and follow it"),
            cls="msg-list-wrap"),
        chat_input if chat_input is not None else Div(id=ids.CHAT_FORM),
        suggestions if suggestions is not None else Suggestions([]),
        settings,
        id="sidebar", aria_label="Chat",
    )


# -- conversations ---------------------------------------------------------------------------------------------

def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts or 0))


def ArchivedMessage(record, thinking=None, info: AnswerInfo | None = None):
    """A message as it is, read-only: no DOM id, no stream, no buttons (it may be on the page twice); an
    answer with how it ended and what it cost."""
    parts = [Span(ROLE_LABEL.get(record.role, record.role), cls="msg-role")]
    if thinking is not None and thinking.content:
        parts.append(Details(Summary("Thinking"), Div(NotStr(render_markdown(thinking.content)), cls="md"),
                             cls="thinking"))
    parts.append(Div(NotStr(render_markdown(record.content)), cls="md"))
    if record.warning:
        parts.append(Div(record.warning, cls="msg-warning"))
    if info is not None:
        parts += [Outcome(info), UsageLine(info.usage) if info.usage else None,
                  Span(f"version {info.version + 1} of {info.versions}", cls="muted small")
                  if info.versions > 1 else None]
    return Li(*[p for p in parts if p is not None], cls=f"msg {record.role} archived",
              data_state=info.status if info else None)


def PreviousVersion(items: list):
    """The messages an edited question replaced, collapsed where they were."""
    return Li(Details(Summary("Previous version"), Ul(*items, cls="msg-list-inner")), cls="prev-version")
