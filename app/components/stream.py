"""Pieces shared by every streamed element."""

from fasthtml.common import Span

from . import ids


def StreamMarker(message_id: str, seq: int, follow: bool = False, oob: bool = False, ended: bool = False):
    """Hidden record of the last seq the page holds; the client asks to follow (or resume) from it.
    `follow` marks a stream the page has just received and should start following. `ended`: the stream is
    sealed and the page shows all of it, so the marker no longer names it — a tab declares (and the server
    follows) only streams that can still change, however long the page's history grows; it keeps the seq."""
    if ended:
        return Span(id=ids.stream_marker_id(message_id), cls="stream-marker", data_seq=str(seq), data_ended="1",
                    hidden=True, hx_swap_oob="true" if oob else None)
    attrs = {"data_stream": message_id, "data_seq": str(seq), "hidden": True}
    if follow:
        attrs["data_follow"] = "1"
    if oob:
        attrs["hx_swap_oob"] = "true"
    return Span(id=ids.stream_marker_id(message_id), cls="stream-marker", **attrs)
