"""Server-sent events, parsed as the HTML standard says, incrementally and within a size bound.

Lines end with CRLF, LF or CR (a CR at the end of one read and an LF at the start of the next are one line
end); `:` starts a comment; `data` lines join with newlines; an empty line dispatches the event (none when it
has no data); an `id` with a NUL is ignored, and an id holds for later events until
the next `id` field. An event (or a line) over `max_bytes` is a ProtocolError: a
server that sends one is not one this client can follow.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_EVENT_BYTES = 64 << 20  # above the largest message the store accepts (16 MiB), JSON-escaped


class ProtocolError(Exception):
    """The server sent something that is not a server-sent event stream this client understands."""


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None  # the last event id when it was dispatched (ids persist until the next `id` field)


class SSEParser:
    def __init__(self, max_bytes: int = MAX_EVENT_BYTES):
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skip_lf = False
        self._event, self._data = "", []
        self.last_id: str | None = None
        self._size = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        start = 0
        while True:
            cr, lf = self._buffer.find(b"\r", start), self._buffer.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = bytes(self._buffer[start:end])
            if self._buffer[end:end + 1] == b"\r":
                if end + 1 == len(self._buffer):
                    self._skip_lf = True  # maybe the CR of a CRLF whose LF is in the next read
                    start = end + 1
                elif self._buffer[end + 1:end + 2] == b"\n":
                    start = end + 2
                else:
                    start = end + 1
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        del self._buffer[:start]
        if len(self._buffer) > self.max_bytes:
            raise ProtocolError(f"a line of over {self.max_bytes:,} bytes")
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("a line that is not UTF-8") from None
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(raw)
            if self._size > self.max_bytes:
                raise ProtocolError(f"an event of over {self.max_bytes:,} bytes")
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None  # `retry` and unknown fields are ignored: the client keeps its own backoff

    def _dispatch(self) -> SSEEvent | None:
        event = SSEEvent(self._event or "message", "\n".join(self._data), self.last_id) if self._data else None
        self._event, self._data, self._size = "", [], 0
        return event
