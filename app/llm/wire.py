"""What the wire decoders share: a byte stream split into lines (`LineSplitter`), ``<think>`` spans
routed to reasoning (`ThinkSplitter`), the decoder protocol (`WireDecoder`) and the message inside an
error payload (`error_message`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from .events import DELTA, REASONING, LLMEvent

class ThinkSplitter:
    """Routes ``<think>…</think>`` spans of streamed text to ``REASONING`` and the rest to ``DELTA``.

    Tags may be split across chunks at any character: a chunk ending in a possible tag prefix
    (``"<thi"``) holds that prefix back until the next chunk or ``flush()`` decides.
    """

    OPEN = "<think>"
    CLOSE = "</think>"

    def __init__(self) -> None:
        self._pending = ""
        self._thinking = False

    def feed(self, text: str) -> list[LLMEvent]:
        """Events for ``text``; part of a possible tag at its end is kept for the next call."""
        if not self._pending and "<" not in text:  # the common case: no tag and no part of one
            return [LLMEvent(REASONING if self._thinking else DELTA, text)] if text else []
        out: list[LLMEvent] = []
        buf = self._pending + text
        while True:
            tag = self.CLOSE if self._thinking else self.OPEN
            at = buf.find(tag)
            if at < 0:
                break
            self._emit(out, buf[:at])
            buf = buf[at + len(tag) :]
            self._thinking = not self._thinking
        keep = _tag_prefix_len(buf, self.CLOSE if self._thinking else self.OPEN)
        self._emit(out, buf[: len(buf) - keep])
        self._pending = buf[len(buf) - keep :]
        return out

    def flush(self) -> list[LLMEvent]:
        """Events for any held-back text (the stream ended: a partial tag is plain text)."""
        out: list[LLMEvent] = []
        self._emit(out, self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[LLMEvent], text: str) -> None:
        if text:
            out.append(LLMEvent(REASONING if self._thinking else DELTA, text))


def _tag_prefix_len(text: str, tag: str) -> int:
    """Length of the longest proper prefix of ``tag`` that ``text`` ends with."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class LineSplitter:
    """Splits a byte stream into text lines at LF or CRLF (and a lone CR when ``lone_cr``).

    Splitting happens on bytes, so a UTF-8 character split across reads is decoded whole, and only
    real line ends count: U+2028 or U+0085 inside a JSON string do not end a line (httpx's
    ``aiter_lines`` would split there).
    """

    def __init__(self, *, lone_cr: bool = False) -> None:
        self._buf = bytearray()
        self._end = re.compile(rb"\r\n|\r|\n" if lone_cr else rb"\n")
        self._lone_cr = lone_cr

    def feed(self, data: bytes) -> list[str]:
        """Complete lines found so far (without their line ends)."""
        if not self._buf and not self._lone_cr and data.endswith(b"\n"):  # whole lines: the common case
            return [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in data[:-1].split(b"\n")]
        self._buf += data
        lines: list[str] = []
        start = 0
        for m in self._end.finditer(self._buf):
            if self._lone_cr and m.group() == b"\r" and m.end() == len(self._buf):
                break  # may be the first half of a CRLF
            lines.append(_decode(self._buf[start : m.start()]))
            start = m.end()
        del self._buf[:start]
        return lines

    def tail(self) -> str:
        """The unterminated rest at the end of the stream."""
        rest = bytes(self._buf).rstrip(b"\r")
        self._buf.clear()
        return _decode(rest)


def _decode(line: bytes | bytearray) -> str:
    return bytes(line).rstrip(b"\r").decode("utf-8", errors="replace")


class WireDecoder(Protocol):
    """Turns the lines of one response into events (wire-specific)."""

    def feed(self, line: str) -> list[LLMEvent]:
        """Events for one line; a terminal event ends the run."""

    def finish(self, tail: str) -> list[LLMEvent]:
        """Events at the end of the body; ``tail`` is an unterminated last line (maybe empty).
        Without a terminal event among them the run is truncated (``flush()`` is called next)."""

    def flush(self) -> list[LLMEvent]:
        """Held-back text (a possible partial ``<think>`` tag), when the run ends early."""

    def ended(self) -> LLMEvent | None:
        """The completion when the answer was whole though the stream did not end cleanly (its end was
        read, only what follows it was lost); None otherwise."""


ErrorFactory = Callable[[str, str], LLMEvent]


def error_message(payload: Any) -> str | None:
    """The human message inside an error payload (Ollama, OpenAI, vLLM and llama.cpp shapes)."""
    if isinstance(payload, str):
        return payload
    if not isinstance(payload, dict):
        return None
    err = payload.get("error")
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        return str(err.get("message") or json.dumps(err))
    message = payload.get("message")
    if payload.get("object") == "error" or isinstance(message, str):
        return str(message or json.dumps(payload))
    return None
