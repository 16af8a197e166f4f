"""The terminal client's pure parts: the SSE parser (line ends split across reads, comments, ids that persist,
the size bound) and the model (the core's reducer, nothing applied twice, gaps refused, bounded history)."""

import pytest

from quanda.tui.model import Conversation, MessageState
from quanda.tui.sse import ProtocolError, SSEParser


def feed_all(parser, chunks):
    return [(e.event, e.data, e.id) for chunk in chunks for e in parser.feed(chunk)]


def test_sse_line_ends_comments_and_ids_in_any_split():
    stream = b"id: 1\r\nevent: a\r\ndata: x\r\n\r\n: keep-alive\n\ndata: y\rdata:z\r\rid: 2\nevent: b\ndata: {}\n\n"
    expected = [("a", "x", "1"), ("message", "y\nz", "1"), ("b", "{}", "2")]
    for size in (1, 2, 3, 7, len(stream)):
        parser = SSEParser()
        assert feed_all(parser, [stream[i:i + size] for i in range(0, len(stream), size)]) == expected, size


def test_sse_utf8_split_across_reads_and_bounds():
    text = "naïve ✓ 🎉".encode()
    assert feed_all(SSEParser(), [b"data: " + text[:9], text[9:] + b"\n\n"]) == [("message", "naïve ✓ 🎉", None)]
    with pytest.raises(ProtocolError, match="over 100 bytes"):
        SSEParser(max_bytes=100).feed(b"data: " + b"x" * 200)
    with pytest.raises(ProtocolError, match="over 100 bytes"):
        SSEParser(max_bytes=100).feed(b"data: " + b"x" * 60 + b"\ndata: " + b"x" * 60 + b"\n")
    with pytest.raises(ProtocolError, match="not UTF-8"):
        SSEParser().feed(b"data: \xff\n\n")


def token(seq, kind="chunk", text="", event="thread.message.delta"):
    return event, {"seq": seq, "kind": kind, "text": text, "estimate": None}


def test_message_applies_the_reducer_once_and_refuses_gaps():
    m = MessageState("m1")
    assert m.take() == (True, "")  # the first frame draws it whole
    assert m.apply(*token(1, text="Hel")) and m.apply(*token(2, text="lo"))
    assert m.take() == (False, "Hello")
    assert not m.apply(*token(2, text="lo"))  # a resumed stream repeating a token: dropped
    assert m.content == "Hello" and m.take() == (False, "")
    with pytest.raises(ProtocolError, match="token 5 came after 2"):
        m.apply(*token(5, text="!"))
    m.apply(*token(3, "override", "Bye"))
    m.apply(*token(4, text="!"))
    assert m.take() == (True, "") and m.content == "Bye!"  # an override draws the whole text
    m.apply(*token(5, "warning", "stopped"))
    assert m.warning == "stopped"
    m.apply(*token(6, "immutable"))
    assert m.immutable and m.warning == "" and m.last_seq == 6
    m.apply(*token(3, "override", "snap", event="thread.message.snapshot"))
    assert m.content == "snap" and m.last_seq == 3
    with pytest.raises(ProtocolError):
        m.apply("thread.message.delta", {"seq": "7", "kind": "chunk", "text": "x"})


def test_conversation_keeps_a_bounded_history_in_key_order():
    conv = Conversation(limit=3)
    conv.reset({"entries": [{"key": "10", "type": "event", "text": "a"}], "status": {"ok": True}})
    for key in ("30", "20", "40", "50"):
        conv.add({"key": key, "type": "q", "message": {"id": f"m{key}", "content": key, "last_seq": 1}})
    assert [e.key for e in conv.entries] == [30, 40, 50]
    conv.add({"key": "40", "type": "q", "message": {"id": "other"}})  # already held: not added again
    assert [e.key for e in conv.entries] == [30, 40, 50] and conv.by_key(40).message.id == "m40"
    conv.add({"key": "60", "type": "assistant", "status": "generating", "message": {"id": "a"}})
    assert conv.answering().key == 60 and conv.retryable() is None
    conv.set_answer_status(60, "stopped")
    assert conv.answering() is None and conv.retryable().key == 60


def test_a_sealed_answer_says_how_it_ended_and_what_it_cost():
    from quanda.tui.model import Entry
    from quanda.tui.widgets import AnswerView

    entry = Entry.from_json({"key": "1", "type": "assistant", "status": "final", "outcome": "failed",
                             "reason": "LLM server not reachable", "usage": None,
                             "message": {"id": "a" * 24, "role": "assistant", "content": "", "estimate": None,
                                         "warning": "", "immutable": True, "last_seq": 2}})
    assert (entry.outcome, entry.reason) == ("failed", "LLM server not reachable")
    assert "failed" in AnswerView(entry).header()
    done = Entry.from_json({"key": "2", "type": "assistant", "status": "done", "outcome": "done", "reason": "",
                            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "tokens_per_s": 9.5}})
    assert "12 tokens in · 3 out · 9.5 tokens/s" in AnswerView(done).header()
    conv_entry = Entry.from_json({"key": "3", "type": "assistant", "status": "generating"})
    conv_entry.set_outcome({"outcome": "cut", "reason": "ended early", "usage": {"completion_tokens": 4}})
    assert conv_entry.outcome == "cut" and conv_entry.usage == {"completion_tokens": 4}


def test_a_finished_answer_that_said_or_changed_nothing_has_the_pages_note():
    from quanda.tui.model import EMPTY_NOTE, UNCHANGED_NOTE, Entry

    def note(**flags) -> str:
        return Entry.from_json({"key": "1", "type": "assistant", "status": "final", "outcome": "done",
                                **flags}).note
    assert note(empty=True) == EMPTY_NOTE == "The model sent no answer."
    assert note(unchanged=True) == UNCHANGED_NOTE == "Nothing was changed."
    assert note() == "" and note(empty=False, unchanged=False) == ""
