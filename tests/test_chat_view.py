"""ChatView: the page rebuilt from its frames, as htmx would, equals what a reload renders — after every frame and
at the end — however the answer was chunked and framed; overrides replace; bytes and work stay linear."""

from __future__ import annotations

import random
import re
from contextlib import contextmanager
from unittest import mock

from fasthtml.common import Div, to_xml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quanda.render.piece as render_piece
import quanda.render.stream as render_stream
from quanda.components import ids
from quanda.chat.stream_view import ChatView
from quanda.components.chat import MessageBody
from quanda.components.stream import StreamMarker
from quanda.core import QuandaToken
from quanda.render import append_plan, render_blocks
from quanda.render.settle import merge
from bench.page import El, normalize, parse
from bench.page import Page as HtmxPage
from bench.render_bench import code_answer, mixed_answer, paragraph_answer
from tests.test_render import FRAGMENTS, assert_safe

MID = "0123456789abcdef01234567"
BODY, TAIL, EST = ids.msg_body_id(MID), ids.msg_tail_id(MID), ids.msg_estimate_id(MID)

# --------------------------------------------------------------------------- htmx, for OOB frames (bench/page.py)


def _safe_markup(node: El) -> None:
    """Everything a frame puts in a message must be safe markup (compact appends are checked expanded)."""
    if node.attrs.get("id", "").endswith(("-body", "-tail", "-tail-est")) or \
            "beforeend" in node.attrs.get("hx-swap-oob", ""):
        assert_safe(re.sub(r'<div class="md-piece">|</div>', "", node.inner()))


class Page(HtmxPage):
    """The messages' part of the page (one message unless told), swapped as htmx 2 and its ws extension do,
    compact appends expanded as the page's extension does (bench/page.py)."""

    def __init__(self, content: str = "", estimate: str | None = None, seq: int = 0, mids: tuple = (MID,)):
        first = [f for mid in mids for f in (*MessageBody(mid, content, estimate, False),
                                             Div("", id=ids.msg_warning_id(mid)), StreamMarker(mid, seq, follow=True))]
        super().__init__("".join(to_xml(f, indent=False) for f in first))

    def apply(self, fragments: list) -> str:  # type: ignore[override]
        """Swap a frame in; returns the frame (as app.ws sends it). No element may miss its target."""
        frame = "".join(to_xml(f, indent=False) for f in fragments)
        super().apply(frame, check=_safe_markup)
        assert not self.dropped, f"text outside elements is dropped: {self.dropped}"
        assert not self.missing, f"no target for {self.missing}"
        return frame

    def shows(self, mid: str = MID) -> tuple[str, str, str]:
        return self.inner(ids.msg_body_id(mid)), self.inner(ids.msg_tail_id(mid)), self.inner(ids.msg_estimate_id(mid))


def reload(content: str, estimate: str | None = None, immutable: bool = False,
           mid: str = MID) -> tuple[str, str, str]:
    """What a page rendered from scratch shows for this content."""
    return tuple(parse(to_xml(part, indent=False))[0].inner() for part in MessageBody(mid, content, estimate, immutable))


@contextmanager
def piece_cap(cap: int | None):
    """Small pieces exercise the cuts that long answers make."""
    if cap is None:
        yield
    else:
        with mock.patch.object(render_stream, "PIECE_CAP", cap):
            yield


def stream(chunks, flush_every=1, estimates=None, check=True, cap: int | None = None):
    """Feed a fresh view (the page shows the empty message at seq 0) and apply its frames."""
    with piece_cap(cap):
        view, page, content, seq, estimate = ChatView(MID), Page(), "", 0, None
        view.feed(QuandaToken("override", "", None, 0))
        assert view.flush() == []  # the page already shows this snapshot
        for i, chunk in enumerate(chunks):
            content += chunk
            seq += 1
            estimate = estimates[i % len(estimates)] if estimates else None
            view.feed(QuandaToken("chunk", chunk, estimate, seq))
            if (i + 1) % flush_every == 0:
                page.apply(view.flush())
                if check:
                    assert page.shows() == reload(content, estimate), f"after {content!r}"
        view.feed(QuandaToken("immutable", "", None, seq + 1))
        page.apply(view.flush())
        assert page.shows() == (normalize(render_blocks(content)), "", "")
        assert page.shows() == reload(content, None, immutable=True)
        return page, content


# --------------------------------------------------------------------------- the page equals a reload


def test_a_long_code_block_streamed_in_small_chunks_renders_as_code():
    code = "".join(f"line_{i} = '<{i}>'  # some code\n" for i in range(60))
    text = f"Intro paragraph.\n\n```python\n{code}```\n\nAfter the code.\n"
    page, content = stream([text[i:i + 5] for i in range(0, len(text), 5)])
    assert page.shows()[0].count("<pre>") == 1 and page.shows()[0].count("<p>") == 2
    assert page.shows()[0].count('class="md-copy"') == 1 and "<span class=\"s1\">'&lt;0&gt;'</span>" in page.shows()[0]


def test_a_streaming_code_block_is_plain_until_it_is_finished():
    view, page = ChatView(MID), Page()
    feed_all(view, page, [QuandaToken("override", "", None, 0), QuandaToken("chunk", "```py\nx = 1\n", None, 1)])
    assert page.shows()[1] == '<div class="md-piece"><pre><code class="language-py">x = 1\n</code></pre>\n</div>'
    feed_all(view, page, [QuandaToken("chunk", "```\n\nDone.", None, 2)])
    assert page.shows()[0] == normalize(render_blocks("```py\nx = 1\n```\n\n")) and 'class="md-code"' in page.shows()[0]


#: A frame of compact appends only (app/components/compact.py): `<p q="a3.2"> word</p>`…
COMPACT = re.compile(r'(?:<(\w+) q="[0-9a-z]+\.\d+"(?: q-def="[^"]*")?>.*?</\1>)+', re.S)


def test_a_long_paragraph_and_code_grow_by_appends():
    """One token per frame: after the first frames of a block, frames only append (no replace)."""
    words = [" word" + str(i) for i in range(300)]
    with piece_cap(None):
        view, page = ChatView(MID), Page()
        view.feed(QuandaToken("override", "", None, 0))
        frames = []
        for seq, w in enumerate(words, 1):
            view.feed(QuandaToken("chunk", w, None, seq))
            frames.append(page.apply(view.flush()))
    appends = [f for f in frames if COMPACT.fullmatch(f)]
    assert len(appends) >= len(frames) - 3, [f for f in frames if f not in appends][:3]
    assert all(len(f) < 40 for f in frames[5:] if 'class="md-piece"' not in f), max(frames, key=len)


def test_a_views_alias_is_defined_in_its_first_compact_append_and_only_there():
    view, page = ChatView(MID), Page()
    frames = feed_all(view, page, [QuandaToken("override", "", None, 0)] +
                      [QuandaToken("chunk", w, None, i) for i, w in enumerate(["Hello", " **wor", "ld**", "\n\n- a",
                                                                               "\n- b", " c"], 1)])
    uses = [(i, m) for i, f in enumerate(frames) for m in re.finditer(r' q="([0-9a-z]+)\.\d+"( q-def="[^"]*")?', f)]
    assert len(uses) >= 4 and {m.group(1) for _, m in uses} == {view._tail.name}
    assert [m.group(2) for _, m in uses] == [f' q-def="{TAIL}"'] + [None] * (len(uses) - 1)
    assert page.shows() == reload("Hello **world**\n\n- a\n- b c")


def words_of(text: str, size: int = 6) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def test_a_finished_paragraph_or_list_settles_from_its_pieces_and_code_is_resent():
    """A plain paragraph cut into pieces mid-line, and a list cut into pieces that are lists of their own: when
    each finishes, the page settles the pieces it shows into the body (app/render/settle.py) and nothing of the
    block is sent again. A code block is highlighted when it finishes: its pieces never merge into it, so it is
    sent whole, as before."""
    paragraph = " ".join(f"word{i}" for i in range(400))
    items = "".join(f"- item {i} of a plain list\n" for i in range(60))
    code = "```python\n" + "x = '<1>'\n" * 120 + "```\n"
    for text, settles in ((paragraph + "\n\n> Quoted.", True), (items + "\nAfter.", True), (code, False)):
        view, page = ChatView(MID), Page()
        tokens = [QuandaToken("chunk", w, None, i) for i, w in enumerate(words_of(text), 1)]
        frames = feed_all(view, page, [QuandaToken("override", "", None, 0), *tokens[:-8]])
        assert page.inner(TAIL).count('class="md-piece"') >= 3, "the block streams in several pieces"
        frames += feed_all(view, page, [*tokens[-8:], QuandaToken("immutable", "", None, len(tokens) + 1)])
        assert page.shows() == reload(text, immutable=True) == (normalize(render_blocks(text)), "", "")
        if settles:  # each block is sent once, as its pieces: no frame holds more than a few words
            assert BODY not in "".join(frames) and f'<div q="{view._tail.name}.s"></div>' in frames[-1]
            assert max(map(len, frames[1:])) < 200, max(frames, key=len)
        else:
            assert f'q="{view._tail.name}.s"' not in "".join(frames)
            assert BODY in frames[-1] and 'class="md-code"' in frames[-1] and len(frames[-1]) > len(text)


def test_the_settle_rule_merges_pieces_as_their_block_renders():
    """The rule on the server's strings (the check): a paragraph's piece drops the space it was cut after, a
    mid-line piece keeps it; a continued list joins the previous one; a character reference is read as the page
    reads it."""
    assert merge(['<p>a b</p>\n', '<p class="md-inline">c </p>\n', '<p class="md-inline">d</p>\n']) == \
        "<p>a b c d</p>\n"
    assert merge(['<blockquote>\n<ul>\n<li><strong>a</strong></li>\n</ul>\n</blockquote>\n',
                  '<p class="md-inline"><em>b</em></p>\n']) == \
        "<blockquote>\n<ul>\n<li><strong>a</strong> <em>b</em></li>\n</ul>\n</blockquote>\n"
    assert merge(['<ol>\n<li>a</li>\n</ol>\n', '<ol start="2">\n<li>b</li>\n</ol>\n']) == \
        "<ol>\n<li>a</li>\n</ol>\n".replace("</ol>", "<li>b</li>\n</ol>")
    assert merge(['<ul>\n<li>a</li>\n</ul>\n', '<ol>\n<li>b</li>\n</ol>\n']) == \
        '<ul>\n<li>a</li>\n</ul>\n<ol>\n<li>b</li>\n</ol>\n'
    assert merge(['<p>a&#32;</p>\n', '<p class="md-inline">b</p>\n']) == "<p>a&#32;b</p>\n"
    assert merge(['<p>a &amp;</p>\n', '<p class="md-inline">b</p>\n']) == "<p>a &amp; b</p>\n"
    assert merge(['<p><em></em></p>\n', '<p class="md-inline">b</p>\n']) is None  # no text to tell by


def test_two_views_streaming_into_one_page_never_mix_up():
    """An answer and its thinking stream at once: their frames interleave on one socket, each view's compact
    appends go to its own tail, and the page equals a reload of both after every frame."""
    other, rng = "fedcba9876543210fedcba98", random.Random(7)
    for tokens in ({MID: mixed_answer(300, 3), other: paragraph_answer(200, 4)},
                   {MID: paragraph_answer(150, 5), other: mixed_answer(250, 6)}):
        page, views, sent = Page(mids=(MID, other)), {m: ChatView(m) for m in tokens}, dict.fromkeys(tokens, 0)
        for view in views.values():
            view.feed(QuandaToken("override", "", None, 0))
        while any(sent[m] < len(tokens[m]) for m in tokens):
            mid = rng.choice([m for m in tokens if sent[m] < len(tokens[m])])
            for token in tokens[mid][sent[mid]:sent[mid] + rng.randint(1, 4)]:
                sent[mid] += 1
                views[mid].feed(QuandaToken("chunk", token, None, sent[mid]))
            page.apply(views[mid].flush())
            for m in tokens:
                assert page.shows(m) == reload("".join(tokens[m][:sent[m]]), mid=m), m
        assert views[MID]._tail.name != views[other]._tail.name


BLOCKS = st.sampled_from(["Some words here. ", "More text.\n", "\n\n", "- item\n", "  - nested\n", "1. first\n",
                          "# Title\n", "```\n", "```python\n", "~~~\n", "code = 1\n", "`inline` ", "**bold** ",
                          "> quote\n", "x" * 90 + "\n", "| a | b |\n|---|---|\n| 1 | 2 |\n", "a long line " * 12,
                          "***", "_e_", "~~s~~", "\\", "    indented\n", "---\n", "text\n===\n"])
HOSTILE = st.sampled_from(FRAGMENTS)
TEXT = st.lists(st.one_of(BLOCKS, BLOCKS, HOSTILE, st.text(max_size=4)), max_size=40).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.data())
def test_page_rebuilt_from_frames_equals_a_reload_after_every_frame(text, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=25), label="cuts"))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]) if a < b]
    flush_every = data.draw(st.integers(1, 4), label="flush_every")
    estimates = data.draw(st.sampled_from([None, [None, " (40%)"], ["(1/3)", "\n```"]]), label="estimates")
    cap = data.draw(st.sampled_from([None, 8, 24, 60]), label="piece_cap")
    stream(chunks, flush_every, estimates, cap=cap)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([mixed_answer, paragraph_answer, code_answer]), st.integers(0, 2**16), st.integers(1, 6),
       st.sampled_from([12, 40, None]))
def test_realistic_answers_framed_any_way(make, seed, flush_every, cap):
    tokens = make(300, seed)
    stream(tokens, flush_every, cap=cap)


HOSTILE_SPLITS = [
    ["<scr", "ipt>alert(1)</scr", "ipt>"],
    ["Click [x](java", "script:alert(1)) now"],
    ["[x](&#106;ava", "script:alert(1))"],
    ["a &am", "p; b &#10", "6; c &l", "t;script&gt;"],
    ["<img src=x on", "error=alert(1)>"],
    ["```py\nx = '<b>'", " + 1\n``", "`\nafter <i>"],
    ["~~~\n<scr", "ipt>\n~", "~~\n\n**b", "old**"],
    ["`<scr", "ipt>` and `", "x"],
    ["![a](java", "script:x) ![b](//evil/", "p.png)"],
]


def test_a_link_reference_definition_streamed_a_character_at_a_time_shows_as_on_reload():
    """Found by the property test above: the renderer's fast path for plain words appended "x" to the line
    "[r]: javascript:" as paragraph text, where a reload renders a link reference definition (nothing)."""
    for cap in (None, 8):
        stream(list("[r]: javascript:x"), cap=cap)
        stream(list("Intro.\n\n[ref]: https://example.org title"), cap=cap)


def test_hostile_text_split_across_tokens_stays_inert():
    for chunks in HOSTILE_SPLITS:
        for cap in (None, 4):
            page, content = stream(chunks, cap=cap)
            body = page.shows()[0]
            assert "<script" not in body.lower() and "<img src=x" not in body and "javascript" not in body
    page, _ = stream(list("<script>alert(1)</script>"))
    assert page.shows()[0] == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"


# --------------------------------------------------------------------------- overrides replace


def feed_all(view, page, tokens):
    frames = []
    for token in tokens:
        view.feed(token)
        frames.append(page.apply(view.flush()))
    return frames


def test_an_override_replaces_the_message():
    """Retry: the page shows exactly the new text (an override appended to the old text would fail here)."""
    view, page = ChatView(MID), Page()
    feed_all(view, page, [QuandaToken("override", "", None, 0), QuandaToken("chunk", "Hello **wor", None, 1),
                          QuandaToken("chunk", "ld**\n\nsecond block, still open", " (50%)", 2)])
    assert page.shows() == reload("Hello **world**\n\nsecond block, still open", " (50%)")
    [frame] = feed_all(view, page, [QuandaToken("override", "Bye.", None, 3)])
    assert page.shows() == reload("Bye.")
    for id_ in (BODY, TAIL, EST):
        assert re.search(rf'<div hx-swap-oob="true" id="{id_}"', frame), (id_, frame)
    assert "beforeend" not in frame
    feed_all(view, page, [QuandaToken("chunk", " Again", None, 4), QuandaToken("immutable", "", None, 5)])
    assert page.shows() == (normalize(render_blocks("Bye. Again")), "", "")


def test_an_override_with_the_same_text_still_replaces():
    view, page = ChatView(MID), Page()
    feed_all(view, page, [QuandaToken("override", "", None, 0), QuandaToken("chunk", "same", None, 1)])
    [frame] = feed_all(view, page, [QuandaToken("override", "same", None, 2)])
    assert f'hx-swap-oob="true" id="{BODY}"' in frame and page.shows() == reload("same")


def test_a_snapshot_the_page_has_sends_nothing_and_later_chunks_append():
    content = "# T\n\nsome text\n\n```py\nx = 1\n"
    page = Page(content, " (3/9)", seq=5)
    view = ChatView(MID, page_seq=5)
    assert feed_all(view, page, [QuandaToken("override", content, " (3/9)", 5)]) == [""]
    feed_all(view, page, [QuandaToken("chunk", "y = 2\n", " (4/9)", 6)])
    assert page.shows() == reload(content + "y = 2\n", " (4/9)")


def test_a_reconnect_after_changes_replaces():
    page = Page("old text", seq=3)
    view = ChatView(MID, page_seq=3)
    [frame] = feed_all(view, page, [QuandaToken("override", "old text and more", None, 7)])
    assert f'hx-swap-oob="true" id="{BODY}"' in frame and page.shows() == reload("old text and more")


def test_warning_and_end_send_the_marker_last():
    view, page = ChatView(MID), Page()
    frames = feed_all(view, page, [QuandaToken("override", "", None, 0), QuandaToken("chunk", "a", None, 1),
                                   QuandaToken("warning", "stopped", None, 2)])
    assert ids.stream_marker_id(MID) not in frames[1]
    assert frames[2].endswith(to_xml(StreamMarker(MID, 2, oob=True), indent=False))
    [end] = feed_all(view, page, [QuandaToken("immutable", "", None, 3)])
    assert end.index(f'q="{view._tail.name}.s"') < end.index(ids.stream_marker_id(MID))  # "a" settled from its tail
    view, page = ChatView(MID), Page()
    feed_all(view, page, [QuandaToken("override", "", None, 0), QuandaToken("chunk", "```\na", None, 1)])
    [end] = feed_all(view, page, [QuandaToken("immutable", "", None, 2)])
    assert end.index(TAIL) < end.index(BODY) < end.index(ids.stream_marker_id(MID))  # code is sent whole


def test_closing_only_estimates_are_not_shown():
    page, _ = stream(["```py\n", "x = 1"], estimates=["\n```"])
    view, page = ChatView(MID), Page()
    feed_all(view, page, [QuandaToken("override", "", None, 0), QuandaToken("chunk", "**a", "**", 1)])
    assert page.shows() == reload("**a") and page.shows()[2] == ""


# --------------------------------------------------------------------------- bytes and work stay linear


def framed_bytes(tokens: list[str], every: int) -> float:
    view, page = ChatView(MID), Page()
    view.feed(QuandaToken("override", "", None, 0))
    for i, text in enumerate(tokens, 1):
        view.feed(QuandaToken("chunk", text, None, i))
        if i % every == 0:
            page.apply(view.flush())
    view.feed(QuandaToken("immutable", "", None, len(tokens) + 1))
    page.apply(view.flush())
    final = render_blocks("".join(tokens))
    assert page.shows()[0] == normalize(final)
    return page.bytes / len(final.encode())


#: Payload bytes around one compact append, whatever it carries: `<p q="a3.2"></p>` and the like.
FRAME_OVERHEAD = 20


def test_bytes_stay_linear_at_every_rate():
    """A realistic 2,000-token answer: ≤ 3x its final HTML at 1, 4 and ~30 tokens per frame (50, 500 and 2,000
    tokens/s), thanks to the compact appends. One long paragraph: ≤ 3x at ~30 tokens per frame; at one ~6-byte
    word per frame each frame costs at most a fixed overhead on top of that (bench/render_bench.py)."""
    tokens = mixed_answer(2000)
    for every in (1, 4, 30):
        assert framed_bytes(tokens, every) <= 3, every
    tokens = paragraph_answer(2000)
    final = len(render_blocks("".join(tokens)).encode())
    assert framed_bytes(tokens, 30) <= 3
    for every in (1, 4):
        frames = len(tokens) // every + 1
        assert framed_bytes(tokens, every) * final <= 3 * final + FRAME_OVERHEAD * frames


def count_work(tokens: list[str], every: int) -> float:
    """Characters handed to the markdown renderer and to the append planner, per token (deterministic)."""
    work = [0]
    # patched where they are looked up: the stream renders finished blocks, a piece renders itself
    real_md = render_stream.render_markdown
    real_plain, real_inline = render_piece._render_plain, render_piece._render_inline
    real_plan = append_plan

    def md(text):
        work[0] += len(text)
        return real_md(text)

    def plain(text):
        work[0] += len(text)
        return real_plain(text)

    def inline(text):
        work[0] += len(text)
        return real_inline(text)

    def plan(old, new):
        work[0] += len(old) + len(new)
        return real_plan(old, new)

    import quanda.chat.stream_view as chat

    with mock.patch.object(render_stream, "render_markdown", md), \
            mock.patch.object(render_piece, "_render_plain", plain), \
            mock.patch.object(render_piece, "_render_inline", inline), mock.patch.object(chat, "append_plan", plan):
        view = ChatView(MID)
        view.feed(QuandaToken("override", "", None, 0))
        for i, text in enumerate(tokens, 1):
            view.feed(QuandaToken("chunk", text, None, i))
            if i % every == 0:
                view.flush()
        view.feed(QuandaToken("immutable", "", None, len(tokens) + 1))
        view.flush()
    return work[0] / len(tokens)


def test_work_per_token_does_not_grow_with_the_answer():
    """20,000 tokens cost no more per token than 2,000 (each a single paragraph, a code block, mixed)."""
    for make in (paragraph_answer, code_answer, mixed_answer):
        small, large = count_work(make(2000), 1), count_work(make(20000), 1)
        assert large <= 1.2 * small, (make.__name__, small, large)
