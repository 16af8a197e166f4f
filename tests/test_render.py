"""Tests for app.render: safe Markdown and incremental (streamed) rendering."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from quanda.render import (
    Append,
    MarkdownStream,
    append_plan,
    closing_suffix,
    render_blocks,
    render_markdown,
    split_blocks,
)
from quanda.render.closing import _Closer
from quanda.render.markdown import _render_plain

# --------------------------------------------------------------------------- helpers

ALLOWED_ATTRS: dict[str, set[str]] = {
    "a": {"href", "title", "rel", "target", "class"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "pre": {"class"},
    "p": {"class"},  # p.md-inline: the rest of a long line, in a transient piece
    "div": {"class"},  # div.md-code, div.md-code-head
    "span": {"class"},  # Pygments token classes, span.md-code-lang
    "button": {"type", "class", "title"},  # the copy button: no handler, code.js listens
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    **{t: set() for t in "em strong del ul li blockquote hr br table thead tbody tr h1 h2 h3 h4 h5 h6".split()},
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
    assert '<pre><code class="language-py"><span class="n">x</span> <span class="o">&lt;</span> <span class="mi">1</span>\n' \
        '</code></pre></div>' in out


def code_text(out: str) -> str:
    """The text of the code elements of some HTML, as a browser's textContent would give it."""
    return "".join(html.unescape(re.sub(r"<[^>]+>", "", m)) for m in re.findall(r"<code[^>]*>(.*?)</code>", out, re.S))


@pytest.mark.parametrize("language", ["python", "py", "js", "html", "bash", "json", "sql", "", "nosuchlang", "PYTHON"])
def test_code_blocks_are_highlighted_labelled_and_copyable(language: str) -> None:
    code = "def f(x):\n    return '<script>alert(1)</script>' + \"&amp;\"  # <b>\n\tpass\n"
    out = render_markdown(f"```{language}\n{code}```\n")
    assert_safe(out)
    assert code_text(out) == code  # highlighting keeps the text exactly: what the copy button copies
    assert out.count('<button type="button" class="md-copy"') == 1
    assert f'<span class="md-code-lang">{language or "text"}</span>' in out
    assert "style=" not in out and "<script" not in out
    if language in ("python", "py", "PYTHON"):
        assert '<span class="k">def</span>' in out


def test_render_markdown_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        render_markdown(b"x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- blocks


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
def test_last_block(text: str, expected: str) -> None:
    blocks = split_blocks(text)
    assert "".join(blocks) == text
    assert (blocks[-1] if blocks else "") == (expected or text)


def test_long_runs_of_lines_are_cut_but_code_and_paragraphs_never() -> None:
    lines = "".join(f"- item {i}\n" for i in range(3000))
    assert len(split_blocks(lines)) > 1  # a tight list longer than BLOCK_CAP
    code = "```\n" + "".join(f"x = {i}\n" for i in range(5000)) + "```\n"
    paragraph = " ".join(["word"] * 10000)
    assert split_blocks(code) == [code] and split_blocks(paragraph) == [paragraph]
    assert render_blocks(code).count("<pre>") == 1


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
    out = _render_plain(partial + closing_suffix(partial))  # how a streaming piece shows it
    assert out.endswith("<pre><code class=\"language-python\">def f():\n    return '&lt;b&gt;'\n</code></pre>\n")


# --------------------------------------------------------------------------- the stream


def test_stream_example() -> None:
    text = "# Title\n\nHello **world**.\n\n```py\nx = 1\n\ny = 2\n```\nafter\n"
    s = MarkdownStream()
    s.append(text[:36])  # inside the code fence
    s.update()
    assert s.take_finished() == "<h1>Title</h1>\n<p>Hello <strong>world</strong>.</p>\n" and s.blocks == 2
    assert [p.html() for p in s.pieces] == ['<pre><code class="language-py">x =</code></pre>\n']
    s.append(text[36:45])
    s.update()
    assert s.take_finished() == ""
    assert s.tail_html() == '<div class="md-piece"><pre><code class="language-py">x = 1\n\ny = 2</code></pre>\n</div>'
    s.append(text[45:])
    s.finish()
    assert s.take_finished() == render_markdown("```py\nx = 1\n\ny = 2\n```\n") + "<p>after</p>\n"
    assert render_blocks(text) == render_markdown(text) and s.pieces == []


def test_long_code_block_is_shown_in_pieces_and_finished_whole() -> None:
    code = "".join(f"line_{i} = '<{i}>'\n" for i in range(200))
    text = "```python\n" + code + "```\n"
    s = MarkdownStream(piece_cap=200)
    for i in range(0, len(text) - 4, 7):
        s.append(text[i:min(i + 7, len(text) - 4)])
        s.update()
    assert len(s.pieces) >= 10 and all(p.size <= 2 * 200 + 2 for p in s.pieces)
    shown = [p.html() for p in s.pieces]
    assert all(h.startswith('<pre class="md-cont"><code class="language-python">') for h in shown[1:])
    assert html.unescape(re.sub(r"<[^>]+>", "", "".join(shown))).startswith(code[:150])
    s.append(text[-4:])
    s.finish()
    assert s.take_finished() == render_blocks(text) == render_markdown(text)


def test_a_long_line_is_cut_into_inline_pieces() -> None:
    line = " ".join(f"**w{i}** `c{i}`" for i in range(100))
    s = MarkdownStream(piece_cap=100)
    s.append("# Head\n\n" + line)
    s.update()
    assert len(s.pieces) > 5 and all(p.html().startswith('<p class="md-inline">') for p in s.pieces[1:])
    assert all(p.size <= 202 for p in s.pieces)


def test_render_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        render_blocks(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MarkdownStream().append(b"x")  # type: ignore[arg-type]
    s = MarkdownStream()
    s.finish()
    with pytest.raises(ValueError):
        s.append("late")


@pytest.mark.parametrize(("old", "new", "plan"), [
    ("<p>ab</p>\n", "<p>abc</p>\n", [Append(1, "p", "c")]),
    ("<p>a <strong>b</strong></p>\n", "<p>a <strong>bc</strong> d</p>\n",
     [Append(2, "strong", "c"), Append(1, "p", " d")]),
    ("<ul>\n<li>a</li>\n</ul>\n", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n<p>x</p>\n",
     [Append(1, "ul", "<li>b</li>\n"), Append(0, "", "<p>x</p>\n")]),
    ("<p>a **b</p>\n", "<p>a <strong>b</strong></p>\n", None),  # earlier markup changed
    ("<p>a</p>\n", "<h2>a</h2>\n", None),
    ("<p>a &amp;am</p>\n", "<p>a &amp;</p>\n", None),
    ("<p>a</p>\n<p>b</p>\n", "<p>a</p>\n<p>b</p>\n", []),
    ("<p>a</p>\n", "<p>a</p>\n<hr />\n", [Append(0, "", "<hr />\n")]),
    ("<p>a</p>\n", "<p>a<br />\nb</p>\n", [Append(1, "p", "<br />\nb")]),
    ("<p>a</p>\n", "<p>ab</p>\n\n", [Append(1, "p", "b"), Append(0, "", "\n")]),
    ("<p>a</p>\n", "<p>a</p><p>b</p>\n", None),  # new content before the newline the page has
])
def test_append_plan(old: str, new: str, plan: list[Append] | None) -> None:
    assert append_plan(old, new) == plan


# --------------------------------------------------------------------------- property tests

FRAGMENTS = [
    "", " ", "  ", "    ", "\t", "\n", "\n\n", "text", "more words", "**", "*", "_", "~~", "`", "``", "```",
    "````", "~~~", "~~~~", "```py", "# ", "## ", "#", "- ", "* ", "+ ", "1. ", "2) ", "> ", "---", "===",
    "| a | b |", "|---|:-:|", "[", "]", "(", ")", "![", "](", "<", ">", "&", "&amp;", "&#106;", "\\", '"', "'",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<b onclick=x>", "javascript:alert(1)",
    "JaVaScRiPt:", "java\tscript:", "[x](javascript:alert(1))", "![x](javascript:alert(1))",
    "[x](&#106;avascript:alert(1))", "<javascript:alert(1)>", "[r]: javascript:x", "[x][r]", "http://a.b/c",
    "//evil/x.png", "mailto:a@b", "data:text/html,<script>", " onerror=", "\"onmouseover=\"x", "\r\n", "é", "\x00",
    "https://x.org/a?b=1&c=2", "see https://x.org.", "(https://x.org/p)", "https://x.org/\"onmouseover=x",
    "https://x.org/<script>", "www.x.org",
]
markdownish = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map("".join)


HOSTS = st.from_regex(r"[a-z0-9]{1,10}\.[a-z]{2,5}(/[a-zA-Z0-9_~%-]{0,10}){0,2}(\?[a-z]=[a-z0-9]{1,4})?",
                      fullmatch=True)
PROSE = st.text(alphabet="abc xyz,;", max_size=12)


@settings(max_examples=300, deadline=None)
@given(PROSE, st.sampled_from(["http", "https"]), HOSTS, PROSE, st.sampled_from(["", ".", ",", ")", ";"]))
def test_a_bare_http_or_https_url_becomes_a_safe_link_to_exactly_itself(before, scheme, host, after, punct):
    url = f"{scheme}://{host}"
    out = render_markdown(f"{before} {url}{punct} {after}")
    assert_safe(out)
    assert hrefs(out) == [url], out
    assert 'target="_blank"' in out and ">" + html.escape(url, quote=False) + "</a>" in out


@settings(max_examples=200, deadline=None)
@given(PROSE, st.sampled_from(["javascript", "JavaScript", "data", "vbscript", "file", "ftp", "ws", "jav\tascript"]),
       st.text(max_size=20), PROSE)
def test_a_bare_url_of_any_other_scheme_stays_text(before, scheme, rest, after):
    out = render_markdown(f"{before} {scheme}:{rest} {after}")
    assert_safe(out)
    assert all(h.lower().startswith(("http://", "https://")) for h in hrefs(out)), out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markdownish)
def test_render_markdown_is_always_safe(text: str) -> None:
    assert_safe(render_markdown(text))
    assert_safe(render_blocks(text))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_streaming_invariant(data: st.DataObject) -> None:
    """However the text arrives and whenever it is read, the finished blocks are those of the whole text,
    the pieces are the open block's text, and every piece is bounded and safe."""
    text = data.draw(markdownish, label="text")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(text))), max_size=12), label="cuts"))
    cap = data.draw(st.sampled_from([4, 16, 64, 400]), label="piece_cap")
    s = MarkdownStream(piece_cap=cap)
    finished, pos = "", 0
    for cut in cuts:
        s.append(text[pos:cut])
        pos = cut
        if data.draw(st.booleans(), label="update"):
            s.update()
            finished += s.take_finished()
            whole = split_blocks(text[:cut])
            assert finished == "".join(map(render_markdown, whole[:s.blocks]))
            open_block = "".join(p.text() for p in s.pieces)
            assert "".join(whole[s.blocks:]).startswith(open_block)
            for p in s.pieces:
                assert p.size <= 2 * cap + 2
                assert_safe(p.html())
    s.append(text[pos:])
    s.finish()
    finished += s.take_finished()
    assert finished == render_blocks(text)


@settings(max_examples=200, deadline=None)
@given(markdownish, markdownish)
def test_blocks_of_a_prefix_are_blocks_of_the_whole(head: str, rest: str) -> None:
    before, after = split_blocks(head), split_blocks(head + rest)
    finished = max(len(before) - 1, 0)  # the last block of the prefix may still grow
    assert before[:finished] == after[:finished]


@settings(max_examples=300, deadline=None)
@given(markdownish, st.lists(st.integers(0, 60), max_size=10))
def test_closer_carried_forward_equals_closing_suffix(text: str, sizes: list[int]) -> None:
    closer, pos = _Closer(), 0
    for size in sizes:
        closer.feed(text[pos:pos + size])
        pos += size
        assert closer.closing() == closing_suffix(text[:pos])
    closer.feed(text[pos:])
    assert closer.closing() == closing_suffix(text)


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
code_line = st.tuples(st.integers(0, 3), _words(1, 10)).map(lambda t: "    " * t[0] + t[1].replace("*", ""))
code = st.tuples(st.sampled_from(["```python", "```", "~~~js", "````"]),
                 st.lists(code_line, min_size=1, max_size=60)).map(
    lambda t: t[0] + "\n" + "\n".join(t[1]) + "\n" + t[0].rstrip("pythonjs"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(paragraph, heading, code), min_size=1, max_size=8), bullets)
def test_block_wise_equals_whole_for_simple_documents(blocks: list[str], tight_list: str) -> None:
    """Paragraphs, headings, code blocks of any length, one tight list (two lists separated by a blank line
    would be one loose list in a whole render: a caveat of rendering block by block)."""
    text = "\n\n".join([*blocks, tight_list]) + "\n"
    assert render_blocks(text) == render_markdown(text)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["python", "js", "html", "c", "rust", "text", "bash", ""]),
       st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=30).map("".join))
def test_highlighting_keeps_code_text_and_safety(language: str, code: str) -> None:
    code = code.replace("```", "").replace("~~~", "") + "\n"
    out = render_markdown(f"````{language}\n{code}````\n")
    assert_safe(out)
    expected = code_text(render_markdown(f"````\n{code}````\n"))  # what mistune makes of the text (NUL, CR, ...)
    assert code_text(out) == expected


@settings(max_examples=1500, deadline=None)
@example(words=["with ", "**", "text ", "with ", "moves"], cap=400)
@example(words=["settle", "` ", "code ", "answer"], cap=400)
@example(words=["# ", "a", "# ", "# ", "a"], cap=8)
@example(words=["[r]", ": ", "java", "script", ":", "x"], cap=400)
@given(words=st.lists(st.one_of(st.sampled_from(["a", "bc", "Déjà", "x1", "-", ",", ".", ":", "?", "!", " ", "  ",
                                                  "**", "`", "~~", "_", "\n", "\n\n", "- ", "1. ", "# ", "|", "> ",
                                                  "[", "](", ")", "<", "&", "\\", "    "]),
                                 st.text(alphabet="ab .,-", max_size=6)), max_size=60),
       cap=st.sampled_from([8, 24, 400]))
def test_the_plain_words_fast_path_renders_exactly_what_parsing_would(words, cap):
    """A piece that grew by plain words takes a fast path (no parsing): its HTML must be the parser's."""
    import quanda.render.piece as piece
    from quanda.render.stream import MarkdownStream

    def tails(fast):
        original = piece._Piece._grown_html
        if not fast:
            piece._Piece._grown_html = lambda self, text, closing: None
        try:
            stream, out = MarkdownStream(piece_cap=cap), []
            for word in words:
                stream.append(word)
                stream.update()
                out.append((stream.take_finished(), stream.tail_html()))
            return out
        finally:
            piece._Piece._grown_html = original
    assert tails(True) == tails(False)
