"""What an answer's bubble shows besides its text: how it ended (kept after the seal), what it cost (tokens,
time to first token, speed), its versions (‹ 2/3 ›), and the actions that will work on it (Retry, Regenerate).
Also the marker of the context window's horizon, and a conversation's settings form.

`AnswerInfo` is the entry's view of an answer (the chat plugin builds it); the components take it."""

from __future__ import annotations

from dataclasses import dataclass, field

from fasthtml.common import Button, Details, Div, Form, Hidden, Input, Label, Li, Span, Strong, Summary, Textarea, Ul

from quanda.llm.usage import usage_text

from . import ids
from .buttons import ws_button

UNFINISHED = ("stopped", "failed", "cut", "interrupted")
OUTCOME_LABEL = {"stopped": "Stopped", "failed": "Failed", "cut": "Cut off", "interrupted": "Interrupted"}
EMPTY_NOTE = "The model sent no answer."
HORIZON = "context-horizon"


@dataclass
class AnswerInfo:
    """An answer as its entry says: its outcome (`status`: generating, done, stopped, failed, cut,
    interrupted) and why (`reason`), whether its message is sealed, what it cost, which version it is."""

    status: str = "done"
    reason: str = ""
    sealed: bool = False
    usage: dict = field(default_factory=dict)
    version: int = 0
    versions: int = 1
    last: bool = False  # the last answer of the conversation (Regenerate is offered there)
    approvals: list = field(default_factory=list)  # the actions it asked to run, each decided or not yet
    results: list = field(default_factory=list)  # the actions it ran: what each did, Undo while it can
    unchanged: bool = False  # its question asked for a change and it ran no command
    empty: bool = False  # the model finished without a word (and did nothing)

    @property
    def retryable(self) -> bool:
        """Retry regenerates in place: only an unfinished answer that is not sealed."""
        return self.status in UNFINISHED and not self.sealed


def UsageLine(usage: dict):
    text = usage_text(usage)
    if not text:
        return None
    how = "as the LLM server counted" if usage.get("counted") == "server" else "estimated by the app (≈)"
    window = f"; context window {usage['window']:,} tokens" if usage.get("window") else ""
    return Div(text, cls="msg-usage", title=f"Tokens read and written, {how}{window}; time measured by the app",
               data_testid="usage")


def VersionSwitcher(message_id: str, version: int, versions: int):
    """‹ 2/3 ›: shows another version of the answer (every tab, and the LLM sees the one shown)."""
    return Div(ws_button("‹", "chat.version", {"message_id": message_id, "to": version - 1}, cls="link small",
                         disabled=version == 0, title="Previous version", data_testid="version-prev"),
               Span(f"{version + 1}/{versions}", cls="version-no", data_testid="version-no"),
               ws_button("›", "chat.version", {"message_id": message_id, "to": version + 1}, cls="link small",
                         disabled=version >= versions - 1, title="Next version", data_testid="version-next"),
               cls="versions")


def Outcome(info: AnswerInfo):
    """How a sealed unfinished answer ended (its warning went with the seal; the entry kept the reason)."""
    if not info.sealed or info.status not in UNFINISHED:
        return None
    reason = info.reason if info.reason and info.reason.strip(" .").lower() != info.status else ""
    return Div(Strong(OUTCOME_LABEL[info.status]), Span(" " + reason if reason else ""),
               cls="msg-outcome", data_outcome=info.status)


DECIDED_LABEL = {"approved": "Approved", "rejected": "Rejected", "expired": "Not approved in time"}


def ApprovalCard(question: dict):
    """An action the assistant asked to run: what it will do, and Approve / Reject until it is decided."""
    decided = question.get("decision")
    if decided:
        footer = Div(Strong(DECIDED_LABEL.get(decided, decided)), cls="approval-decided")
    else:
        values = {"key": question["key"]}
        footer = Div(ws_button("Approve", "chat.approve", values, cls="small", data_testid="approve"),
                     ws_button("Reject", "chat.reject", values, cls="secondary small", data_testid="reject"),
                     cls="approval-buttons")
    return Div(Div("The assistant asks to run an action", cls="approval-title"),
               Div(question["what"], cls="approval-what"), footer,
               cls="approval-card", role="group", aria_label="Approval", data_testid="approval",
               data_decision=decided or "pending")


def ResultCard(result: dict):
    """An action the assistant ran: what it did (the plugin's own view of it when it has one), and Undo while
    it can be undone."""
    if result.get("undone"):
        tail = Strong("Undone", cls="result-undone")
    elif result.get("undoable"):
        tail = ws_button("Undo", "chat.undo", {"key": result["key"]}, cls="secondary small", data_testid="undo",
                         title="Take this action back (refused if the data changed since)")
    else:
        tail = None
    body = result.get("view") or Span(result["text"], cls="result-text")
    return Div(body, tail, cls="result-card", role="group", aria_label="Action result", data_testid="result",
               data_undone="1" if result.get("undone") else "0")


def AnswerFooter(message_id: str, info: AnswerInfo, oob: bool = False):
    """Under an answer: how it ended, its usage, its versions, Retry / Regenerate where they work."""
    parts = [Outcome(info)]
    if info.empty:
        parts.append(Div(EMPTY_NOTE, cls="msg-unchanged", data_testid="empty",
                         title="Regenerate asks again; a small model may need a shorter or plainer question"))
    if info.unchanged:
        parts.append(Div("Nothing was changed.", cls="msg-unchanged", data_testid="unchanged",
                         title="Your question looked like a request, but this answer ran no command: ask again "
                               "(e.g. name the todo), or do it by hand"))
    parts += [*[ResultCard(r) for r in info.results], *[ApprovalCard(q) for q in info.approvals]]
    if info.status != "generating":
        parts.append(UsageLine(info.usage) if info.usage else None)
    if info.versions > 1 and info.status != "generating":
        parts.append(VersionSwitcher(message_id, info.version, info.versions))
    if info.retryable:
        parts.append(Form(Hidden(name="action", value="chat.retry"), Hidden(name="message_id", value=message_id),
                          Button("Retry", cls="secondary small", data_testid="retry"), ws_send=True))
    if info.last and info.status not in ("generating", "waiting"):
        parts.append(ws_button("Regenerate", "chat.regenerate", {"message_id": message_id}, cls="secondary small",
                               data_testid="regenerate",
                               title="Ask again: a new version of this answer (the others are kept)"))
    return Div(*[p for p in parts if p is not None], id=ids.msg_actions_id(message_id), cls="msg-actions",
               hx_swap_oob="true" if oob else None)


def HorizonMarker(dropped: int = 0, oob_before: str | None = None):
    """Where what the assistant sees begins: the messages above no longer fit its context window."""
    what = f"{dropped} earlier message{'s' if dropped != 1 else ''}" if dropped else "Earlier messages"
    marker = Li(f"↑ {what} no longer seen by the assistant: the conversation is longer than the model's "
                "context window.", id=HORIZON, cls="horizon", role="note", data_testid="horizon")
    if oob_before is None:
        return marker
    return Ul(marker, hx_swap_oob=f"beforebegin:#{oob_before}")


def HorizonGone():
    return Div(id=HORIZON, hx_swap_oob="delete")


def ConversationSettings(settings: dict, oob: bool = False):
    """The current conversation's own settings (the model is the picker's, kept with the conversation too)."""
    def value(key: str):
        found = settings.get(key)
        return "" if found is None else str(found)
    return Details(
        Summary("Conversation settings", title="This conversation's system prompt, temperature and context size"),
        Form(Hidden(name="action", value="chat.settings"),
             Label("System prompt (added to the app's)",
                   Textarea(value("system_prompt"), name="system_prompt", rows="3", maxlength="8000",
                            placeholder="e.g. Answer in French.")),
             Div(Label("Temperature", Input(type="number", name="temperature", min="0", max="2", step="0.1",
                                            value=value("temperature"), placeholder="server's")),
                 Label("Context (tokens)", Input(type="number", name="context", min="512", max="1048576",
                                                 step="256", value=value("context"), placeholder="auto")),
                 cls="settings-row"),
             Button("Save", cls="small", data_testid="save-settings"),
             ws_send=True, cls="conv-settings-form"),
        id=ids.CONV_SETTINGS, cls="conv-settings", hx_swap_oob="true" if oob else None)
