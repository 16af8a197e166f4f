"""Tests for app.render: safe Markdown and incremental (streamed) rendering."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.render import (
    IncrementalRender,
    RenderUpdate,
    closing_suffix,
    render_blocks,
    render_markdown,
    render_update,
    split_stable,
)

# --------------------------------------------------------------------------- helpers

ALLOWED_ATTRS: dict[str, set[str]] = {
    "a": {"href", "title", "rel", "target", "class"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "pre": {"class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    **{t: set() for t in "p em strong del ul li blockquote hr br table thead tbody tr h1 h2 h3 h4 h5 h6".split()},
}
ALIGN_STYLES = {"text-align:left", "text-align:right", "text-align:center"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def tags(out: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(out)
    parser.close()
    return parser.tags


def browser_scheme(url: str) -> str | None:
    """The scheme a browser would see (tabs/newlines removed, C0/space trimmed), or None."""
    url = re.sub(r"[\t\n\r]", "", url).strip("\x00- ")
    m = re.match(r"([a-zA-Z][a-zA-Z0-9+.\-]*):", url)
    return m.group(1).lower() if m else None


def assert_safe(out: str) -> None:
    """Only known tags and attributes; no handlers; only safe URL schemes; no remote images."""
    assert "<script" not in out.lower()
    for tag, attrs in tags(out):
        assert tag in ALLOWED_ATTRS, (tag, out)
        for name, value in attrs.items():
            assert name in ALLOWED_ATTRS[tag], (tag, name, out)
            assert not name.startswith("on")
            if name == "style":
                assert value in ALIGN_STYLES
            if name == "rel":
                assert value == "noopener noreferrer"
        if tag == "a":
            assert attrs.get("rel") == "noopener noreferrer"
            if "href" in attrs:
                assert browser_scheme(attrs["href"] or "") in (None, "http", "https", "mailto"), out
        if tag == "img":
            src = attrs.get("src") or ""
            assert browser_scheme(src) is None and not re.match(r"\s*[/\\]{2}", src), out


def hrefs(out: str) -> list[str]:
    return [attrs.get("href") or attrs.get("src") or "" for tag, attrs in tags(out) if tag in ("a", "img")]


# --------------------------------------------------------------------------- escaping


@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "text <img src=x onerror=alert(1)> more",
    '<a href="javascript:alert(1)" onclick="alert(1)">x</a>',
    "<div onmouseover='alert(1)'>hi</div>\n\n<iframe src=javascript:alert(1)>",
    "<style>body{display:none}</style>",
    "<!-- <script>alert(1)</script> -->",
    "<svg><script>alert(1)</script></svg>",
])
def test_raw_html_is_escaped(text: str) -> None:
    out = render_markdown(text)
    assert_safe(out)
    assert [t for t, _ in tags(out)] in (["p"], ["p", "p"])  # nothing but paragraphs of text
    assert "&lt;" in out


BAD_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "&#106;avascript:alert(1)",
    "&#x6A;&#x61;vascript:alert(1)",
    "&#106avascript:alert(1)",
    "javascript&colon;alert(1)",
    "java&#x09;script:alert(1)",
    "java&Tab;script:alert(1)",
    "%6Aavascript:alert(1)",
    "<javascript:alert(1)>",
    "<java script:alert(1)>",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:image/svg+xml,<svg onload=alert(1)>",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("form", ["[x]({})", "![x]({})", '[x]({} "t")', "[x][r]\n\n[r]: {}"])
def test_unsafe_schemes_are_dropped(url: str, form: str) -> None:
    out = render_markdown(form.format(url))
    assert_safe(out)
    assert "javascript" not in " ".join(hrefs(out)).lower()
    assert all(browser_scheme(h) in (None, "http", "https", "mailto") for h in hrefs(out))


@pytest.mark.parametrize("text", ["<javascript:alert(1)>", "<JAVASCRIPT:alert(1)>", "<vbscript:x>",
                                  "<data:text/html,x>", "<file:///etc/passwd>"])
def test_unsafe_autolinks_are_dropped(text: str) -> None:
    out = render_markdown(text)
    assert_safe(out)
    assert "<a" not in out


def test_safe_links_are_kept_with_rel() -> None:
    out = render_markdown("[a](https://example.org/x?y=1&z=2) [b](http://h/) [c](mailto:me@x.org) "
                          "[d](/local/path) [e](#sec) [f](?q=1) [g](page.html) <https://auto.link/> <me@x.org>")
    assert_safe(out)
    assert hrefs(out) == ["https://example.org/x?y=1&z=2", "http://h/", "mailto:me@x.org", "/local/path",
                          "#sec", "?q=1", "page.html", "https://auto.link/", "mailto:me@x.org"]
    links = [attrs for tag, attrs in tags(out) if tag == "a"]
    assert all(a["rel"] == "noopener noreferrer" for a in links)
    assert [a.get("target") for a in links] == ["_blank", "_blank", None, None, None, None, None, "_blank", None]


def test_images_load_only_from_this_origin() -> None:
    out = render_markdown("![local](/static/x.png) ![remote](https://tracker.example/p.gif?secret=1) "
                          r"![proto-relative](//evil.example/p.gif) ![bs](\\\\evil.example/p.gif)")
    assert_safe(out)
    imgs = [attrs for tag, attrs in tags(out) if tag == "img"]
    assert imgs == [{"src": "/static/x.png", "alt": "local"}]
    links = [a for t, a in tags(out) if t == "a"]
    assert [a["href"] for a in links][:2] == ["https://tracker.example/p.gif?secret=1", "//evil.example/p.gif"]
    assert len(links) == 3 and all(a["class"] == "md-remote-image" for a in links)


@pytest.mark.parametrize("text", [
    '[x](http://a "t\\" onmouseover=\\"alert(1)")',
    "[x](http://a 't\" onmouseover=\"alert(1)')",
    '![a" onerror="alert(1)](/i.png)',
    '[x](http://a/"onmouseover="alert(1))',
    '[x](<http://a/" onmouseover="alert(1)>)',
    '```js" onload="alert(1)\ncode\n```',
    '~~~ "><script>alert(1)</script>\ncode\n~~~',
])
def test_no_attribute_injection(text: str) -> None:
    out = render_markdown(text)
    assert_safe(out)


def test_markdown_features() -> None:
    out = render_markdown("# T\n\n~~gone~~ **b** *i* `c`\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n```py\nx < 1\n```\n")
    assert_safe(out)
    assert "<h1>T</h1>" in out and "<del>gone</del>" in out and "<table>" in out
    assert '<pre><code class="language-py">x &lt; 1\n</code></pre>' in out


def test_render_markdown_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        render_markdown(b"x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- split_stable


@pytest.mark.parametrize(("text", "expected"), [
    ("", ""),
    ("para", ""),
    ("a\n\nb", "b"),
    ("a\n\n", ""),  # the next block has not started yet
    ("a\n\nb\n\nc more", "c more"),
    ("```\na\n\nb\n", ""),  # blank line inside an open fence
    ("```\na\n\nb\n```\n\nc", "c"),
    ("~~~~\n```\n\nx\n~~~~\n\ny", "y"),  # ``` does not close ~~~~
    ("````\n```\n\nx\n", ""),  # a shorter fence does not close
    ("````\n```\n\nx\n`````\n\ny", "y"),
    ("```js\ncode\n```\nafter", "after"),  # a closed fence ends a block
    ("- a\n\n  b", ""),  # indented continuation of the list item
    ("text\n# Head\nmore", "# Head\nmore"),
    ("text\n#tag", ""),
    ("text\n##", ""),  # may still become "##x"
    ("a\n\n    indented code\n\n    more", ""),
])
def test_split_stable(text: str, expected: str) -> None:
    assert text[split_stable(text):] == (expected or text)


# --------------------------------------------------------------------------- closing_suffix


@pytest.mark.parametrize(("text", "suffix"), [
    ("plain text", ""),
    ("```py\ncode", "\n```"),
    ("```py\ncode\n", "```"),
    ("~~~~\ncode", "\n~~~~"),
    ("  ```\ncode", "\n  ```"),
    ("```\ncode\n``", "`"),
    ("````\ncode\n```", "`"),
    ("```\ncode\n```", ""),
    ("```\ncode\n```\n", ""),
    ("```js", "\n```"),
    ("a\n\n```", "\n```"),
    ("a `code", "`"),
    ("a ``co`de", "``"),
    ("**bold", "**"),
    ("**bold `x", "`**"),
    ("~~gone", "~~"),
    ("**done**", ""),
    ("```\nx\n```\n**b", "**"),
])
def test_closing_suffix(text: str, suffix: str) -> None:
    assert closing_suffix(text) == suffix


def test_closing_suffix_renders_partial_code_as_code() -> None:
    partial = "Here:\n\n```python\ndef f():\n    return '<b>'"
    out = render_markdown(partial + closing_suffix(partial))
    assert out.endswith("<pre><code class=\"language-python\">def f():\n    return '&lt;b&gt;'\n</code></pre>\n")


# --------------------------------------------------------------------------- incremental rendering


def test_stream_example() -> None:
    text = "# Title\n\nHello **world**.\n\n```py\nx = 1\n\ny = 2\n```\nafter\n"
    r = IncrementalRender()
    first = r.update(text[:36])  # inside the code fence
    assert first == RenderUpdate("<h1>Title</h1>\n<p>Hello <strong>world</strong>.</p>\n", 27,
                                 '<pre><code class="language-py">x =\n</code></pre>\n')
    second = r.update(text[:45], estimate=" (50%)")
    assert second.stable_html == "" and second.stable_offset == 27
    assert second.tail_html == '<pre><code class="language-py">x = 1\n\ny = 2 (50%)\n</code></pre>\n'
    last = r.update(text, final=True)
    assert last == RenderUpdate('<pre><code class="language-py">x = 1\n\ny = 2\n</code></pre>\n<p>after</p>\n',
                                len(text), "")
    assert first.stable_html + last.stable_html == render_blocks(text) == render_markdown(text)


def test_long_code_block_is_split_and_reopened() -> None:
    code = "".join(f"line_{i} = '<{i}>'\n" for i in range(200))
    text = "```python\n" + code + "```\n"
    out = render_blocks(text)
    assert out.count('<pre class="md-cont"><code class="language-python">') >= 3
    assert html.unescape(re.sub(r"<[^>]+>", "", out.replace("</pre>\n", ""))) == code  # each line once, in order
    r = IncrementalRender()
    pieces = [r.update(text[:i]).stable_html for i in range(1, len(text), 97)]
    assert "".join(pieces) + r.update(text, final=True).stable_html == out


def test_bad_offsets_are_rejected() -> None:
    with pytest.raises(ValueError):
        render_update("abc\n\ndef", 2)
    with pytest.raises(ValueError):
        render_update("abc", 10)
    with pytest.raises(TypeError):
        render_update(None, 0)  # type: ignore[arg-type]


def test_empty_and_repeated_final() -> None:
    assert render_update("") == RenderUpdate("", 0, "")
    assert render_update("", estimate="(1/3)") == RenderUpdate("", 0, "<p>(1/3)</p>\n")
    assert render_update("x", 1, final=True) == RenderUpdate("", 1, "")


# --------------------------------------------------------------------------- property tests

FRAGMENTS = [
    "", " ", "  ", "    ", "\t", "\n", "\n\n", "text", "more words", "**", "*", "_", "~~", "`", "``", "```",
    "````", "~~~", "~~~~", "```py", "# ", "## ", "#", "- ", "* ", "+ ", "1. ", "2) ", "> ", "---", "===",
    "| a | b |", "|---|:-:|", "[", "]", "(", ")", "![", "](", "<", ">", "&", "&amp;", "&#106;", "\\", '"', "'",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<b onclick=x>", "javascript:alert(1)",
    "JaVaScRiPt:", "java\tscript:", "[x](javascript:alert(1))", "![x](javascript:alert(1))",
    "[x](&#106;avascript:alert(1))", "<javascript:alert(1)>", "[r]: javascript:x", "[x][r]", "http://a.b/c",
    "//evil/x.png", "mailto:a@b", "data:text/html,<script>", " onerror=", "\"onmouseover=\"x", "\r\n", "é", "\x00",
]
markdownish = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markdownish)
def test_render_markdown_is_always_safe(text: str) -> None:
    assert_safe(render_markdown(text))
    assert_safe(render_blocks(text))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_streaming_invariant(data: st.DataObject) -> None:
    """Stable pieces always equal render_blocks(content[:offset]); at the end render_blocks(content).

    Whatever chunks the text is streamed in and whatever estimates come with them, the final
    container is the same as rendering the finished text block-wise in one go.
    """
    text = data.draw(markdownish, label="text")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(text))), max_size=12), label="cuts"))
    r = IncrementalRender()
    container = ""
    for cut in cuts:
        prefix = text[:cut]
        estimate = data.draw(st.sampled_from([None, "", " (40%)", closing_suffix(prefix), "\n```"]))
        before = r.offset
        update = r.update(prefix, estimate)
        container += update.stable_html
        assert before <= update.stable_offset <= len(prefix)
        assert update.stable_offset == split_stable(prefix)
        assert container == render_blocks(prefix[:update.stable_offset])
        assert_safe(update.stable_html + update.tail_html)
    final = r.update(text, final=True)
    container += final.stable_html
    assert final == RenderUpdate(final.stable_html, len(text), "")
    assert container == render_blocks(text)


@settings(max_examples=200, deadline=None)
@given(markdownish, markdownish)
def test_cuts_of_a_prefix_are_cuts_of_the_whole(head: str, rest: str) -> None:
    text = head + rest
    offset = split_stable(head)
    assert offset <= split_stable(text)
    assert render_update(text, offset, final=True).stable_html == render_blocks(text)[len(render_blocks(head[:offset])):]


@settings(max_examples=300, deadline=None)
@given(markdownish)
def test_closing_suffix_is_idempotent(text: str) -> None:
    assert closing_suffix(text + closing_suffix(text)) == ""


WORDS = st.sampled_from("the model streams **bold** words `code` and *more* text, with [links](https://x.org) "
                        "or plain sentences. <b>escaped</b> 42 & so on".split())


def _words(n_min: int, n_max: int) -> st.SearchStrategy[str]:
    return st.lists(WORDS, min_size=n_min, max_size=n_max).map(" ".join)


paragraph = _words(3, 90).map(lambda s: s + ".")
heading = _words(1, 6).map(lambda s: "## " + s)
bullets = st.lists(_words(2, 20), min_size=1, max_size=10).map(lambda xs: "\n".join("- " + x for x in xs))
numbered = st.lists(_words(2, 20), min_size=1, max_size=10).map(
    lambda xs: "\n\n".join(f"{i}. {x}" for i, x in enumerate(xs, 1)))
code_line = st.tuples(st.integers(0, 3), _words(1, 10)).map(lambda t: "    " * t[0] + t[1].replace("*", ""))
code = st.tuples(st.sampled_from(["```python", "```", "~~~js", "````"]),
                 st.lists(code_line, min_size=1, max_size=60)).map(
    lambda t: t[0] + "\n" + "\n".join(t[1]) + "\n" + t[0].rstrip("pythonjs"))
answer = st.lists(st.one_of(paragraph, heading, bullets, numbered, code), min_size=1, max_size=12).map(
    lambda blocks: "\n\n".join(blocks) + "\n")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(answer, st.data())
def test_streamed_bytes_stay_linear(text: str, data: st.DataObject) -> None:
    """Bytes sent for a whole streamed answer <= 3x its final HTML.

    Chunks model coalesced frames: at 2,000 tokens/s, one frame per ~33 ms carries ~66 tokens,
    about 250 characters. (With one frame per 4-character token the cost is ~n x block size:
    linear in the answer, but ~50x; see the module docstring.)
    """
    sizes = data.draw(st.lists(st.integers(200, 300), min_size=len(text) // 200 + 1,
                               max_size=len(text) // 200 + 1), label="frames")
    r, sent, pos = IncrementalRender(), 0, 0
    for size in sizes:
        pos += size
        if pos >= len(text):
            break
        update = r.update(text[:pos], closing_suffix(text[:pos]))
        sent += len(update.stable_html) + len(update.tail_html)
    final = r.update(text, final=True)
    sent += len(final.stable_html)
    assert sent <= 3 * len(render_blocks(text))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(paragraph, heading, code.filter(lambda c: len(c) < 400)), min_size=1, max_size=8))
def test_block_wise_equals_whole_for_simple_documents(blocks: list[str]) -> None:
    text = "\n\n".join(blocks) + "\n"
    assert render_blocks(text) == render_markdown(text)
