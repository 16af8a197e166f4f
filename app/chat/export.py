"""A conversation exported as Markdown or JSON (`GET /chat/export/<cid>.md|.json`, the owner's only).

JSON: `{"format": "quanda.conversation/1", "id", "title", "created_at", "updated_at", "exported_at",
"settings", "messages": [...]}`, every entry in order: `{"role": "user"|"assistant", "id", "content",
"created_at", "updated_at", "added_at", "tokens", "final", "warning", "status"?, "model"?, "thinking"?,
"superseded"?}` for messages — an answer also has `"outcome"` (done, stopped, failed, cut, interrupted,
generating), `"reason"` (why it ended, kept after the seal), `"usage"`, `"version"`, `"versions"` and, when
regenerated, `"other_versions"`, the actions it asked the user to approve, `"approvals"` (`what`, `source`, `decision`), and the actions it
ran that changed something, `"results"` (`text`, `undone`) — and `{"role": "event", "content", "added_at"}` for the ambient events. Times are ISO 8601
in UTC; `tokens` counts the writes in the message's token log (its last seq: for an answer, about one per
piece the LLM streamed, plus the seal). Markdown: the same, readable.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

from fasthtml.common import APIRouter
from starlette.responses import JSONResponse, Response

from quanda.access import handle_of
from quanda.components.answer import EMPTY_NOTE
from quanda.core import QuandaError

from quanda.llm.usage import usage_text

from quanda import approvals, undo

from . import conversation, outcome

router = APIRouter()
FORMAT = "quanda.conversation/1"
ROLE_NAMES = {"q": "user", "assistant": "assistant"}


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


async def conversation_data(h, conv: dict) -> dict:
    messages = []
    for _key, entry in await conversation.entries(h.store, h.owner, cid=conv["cid"], superseded=True):
        if entry["type"] == "event":
            messages.append({"role": "event", "content": entry["text"], "added_at": iso(entry.get("at"))})
            continue
        try:
            record = await h.store.get_message(entry["message_id"])
        except QuandaError:
            continue
        item = {"role": ROLE_NAMES.get(entry["type"], entry["type"]), "id": record.id, "content": record.content,
                "created_at": iso(record.created_at), "updated_at": iso(record.updated_at),
                "added_at": iso(entry.get("at")), "tokens": record.last_seq, "final": record.immutable,
                "warning": record.warning}
        if entry["type"] == "assistant":
            item["status"] = entry.get("status", "done")
            item.update(outcome.as_json(entry, record))
            if entry.get("versions"):
                item["other_versions"] = await other_versions(h, entry)
            if entry.get("model"):
                item["model"] = entry["model"]
            if entry.get("approvals"):
                item["approvals"] = [{k: q[k] for k in ("what", "source", "decision")}
                                     for q in await approvals.of_answer(h, record.id)]
            if entry.get("acted"):
                item["results"] = [{k: r[k] for k in ("text", "undone")} for r in await undo.results_of(h, record.id)]
            if entry.get("thinking_id"):
                try:
                    item["thinking"] = (await h.store.get_message(entry["thinking_id"])).content
                except QuandaError:
                    pass
        if entry.get("superseded"):
            item["superseded"] = True
        messages.append(item)
    return {"format": FORMAT, "id": conv["cid"], "title": conv.get("title") or "Untitled conversation",
            "created_at": iso(conv.get("created")), "updated_at": iso(conv.get("updated")),
            "exported_at": iso(time.time()), "settings": conv.get("settings") or {}, "messages": messages}


async def other_versions(h, entry: dict) -> list[dict]:
    """The versions of an answer not on screen: their text and outcome."""
    out = []
    for number, version in enumerate(entry["versions"], 1):
        if version.get("message_id") == entry.get("message_id"):
            continue
        try:
            record = await h.store.get_message(version["message_id"])
        except QuandaError:
            continue
        out.append({"version": number, "id": record.id, "content": record.content,
                    **{k: v for k, v in outcome.as_json(version, record).items() if k not in ("version", "versions")}})
    return out


APPROVAL_NOTE = {"approved": "Approved", "rejected": "Rejected", "expired": "Not approved in time"}


def as_markdown(data: dict) -> str:
    lines = [f"# {data['title']}", "",
             f"*Started {data['created_at']}, exported from Quanda {data['exported_at']} (times in UTC).*", ""]
    settings = data.get("settings") or {}
    if settings:
        lines += ["*Settings: " + " · ".join(f"{k.replace('_', ' ')} {v!r}" if k == "system_prompt" else
                                            f"{k.replace('_', ' ')} {v}" for k, v in settings.items()) + "*", ""]
    for m in data["messages"]:
        if m["role"] == "event":
            lines += [f"> *{m['added_at']}* · {m['content']}", ""]
            continue
        who = "You" if m["role"] == "user" else "Assistant"
        notes = [m["created_at"], f"{m['tokens']} tokens"]
        if m.get("model"):
            notes.append(m["model"])
        if m.get("outcome") not in (None, "done"):
            notes.append(m["outcome"])
        elif m.get("status") not in (None, "done", "final"):
            notes.append(m["status"])
        if (m.get("versions") or 1) > 1:
            notes.append(f"version {m['version']} of {m['versions']}")
        if m.get("superseded"):
            notes.append("previous version, replaced by an edited question")
        lines += [f"## {who}", "", f"*{' · '.join(str(n) for n in notes if n)}*", ""]
        if m.get("thinking"):
            lines += ["<details><summary>Thinking</summary>", "", m["thinking"], "", "</details>", ""]
        lines += [m["content"] or (f"*(no answer: {m['outcome']})*" if m.get("outcome") not in (None, "done")
                                   else f"*({EMPTY_NOTE.rstrip('.')})*" if m.get("empty") else "*(empty)*"), ""]
        if m.get("unchanged"):
            lines += ["> Nothing was changed.", ""]
        if m.get("warning") or m.get("reason"):
            lines += [f"> ⚠ {m.get('warning') or m['reason']}", ""]
        for r in m.get("results") or []:
            lines += [f"> {'Undone' if r['undone'] else 'Done'}: {r['text']}", ""]
        for q in m.get("approvals") or []:
            lines += [f"> {APPROVAL_NOTE.get(q['decision'], 'Waiting for approval')}: {q['what']}", ""]
        if m.get("usage"):
            lines += [f"*{usage_text(m['usage'])}*", ""]
    return "\n".join(lines)


def filename(data: dict, ext: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", data["title"]).strip("-")[:50] or "conversation"
    return f"quanda-{stem}.{ext}"


@router.get("/chat/export/{name}")
async def export_conversation(request, name: str):
    try:
        h = await handle_of(request)
    except PermissionError as exc:
        return JSONResponse({"error": str(exc)}, status_code=401)
    cid, _, ext = name.rpartition(".")
    conv = await conversation.conversation(h.store, h.owner, cid)
    if conv is None or ext not in ("md", "json"):
        return JSONResponse({"error": "no such conversation (export as <id>.md or <id>.json)"}, status_code=404)
    data = await conversation_data(h, conv)
    disposition = {"Content-Disposition": f'attachment; filename="{filename(data, ext)}"'}
    if ext == "json":
        return Response(json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json",
                        headers=disposition)
    return Response(as_markdown(data), media_type="text/markdown; charset=utf-8", headers=disposition)
