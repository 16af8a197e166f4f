"""bench/page.py, the htmx out-of-band swapper the chat view's tests and the benchmarks rebuild pages with: each
swap style does what htmx 2 does, a missing target is ignored (and recorded), and what it cannot model
faithfully is refused rather than guessed."""

from __future__ import annotations

import pytest

from bench.page import MessageFrames, Page, Unmodelled, body_of, normalize

START = '<div id="app"><ul id="list"><li id="a">A</li></ul><div id="box" class="x"><p>one</p><p>two</p></div></div>'


def test_true_and_outerhtml_replace_the_target_with_the_element():
    page = Page(START)
    page.apply('<li id="a" hx-swap-oob="true">A2</li><div id="box" hx-swap-oob="outerHTML" class="y">B</div>')
    assert page.by_id("a").outer() == '<li id="a">A2</li>'
    assert page.by_id("box").outer() == '<div id="box" class="y">B</div>'


def test_an_element_without_hx_swap_oob_is_swapped_as_true():
    page = Page(START)
    page.apply('<li id="a">A3</li>')
    assert page.inner("a") == "A3"


def test_children_styles_use_the_elements_children():
    page = Page(START)
    page.apply('<ul hx-swap-oob="beforeend:#list"><li id="b">B</li></ul>'
               '<ul hx-swap-oob="afterbegin:#list"><li id="z">Z</li></ul>')
    assert page.inner("list") == '<li id="z">Z</li><li id="a">A</li><li id="b">B</li>'
    page.apply('<div hx-swap-oob="innerHTML:#box"><p>only</p></div>')
    assert page.inner("box") == "<p>only</p>"
    page.apply('<li hx-swap-oob="delete:#z"></li>')
    assert page.find("z") is None


def test_last_child_steps_select_the_innermost_last_element():
    page = Page(START)
    page.apply('<p hx-swap-oob="beforeend:#box>:last-child"> more</p><p hx-swap-oob="beforeend:#box &gt; :last-child">!</p>')
    assert page.inner("box") == "<p>one</p><p>two more!</p>"


def test_a_missing_target_is_ignored_and_recorded_and_text_outside_elements_dropped():
    page = Page(START)
    page.apply('stray text<div id="nowhere">x</div><p hx-swap-oob="beforeend:#gone>:last-child">y</p>')
    assert page.missing == ["#nowhere", "#gone>:last-child"] and page.dropped == ["stray text"]
    assert page.root.inner() == START


def test_a_newline_after_pre_is_dropped_as_a_browser_parses_it():
    page = Page('<div id="c"><pre id="p">x</pre></div>')
    page.apply('<pre hx-swap-oob="beforeend:#p">\ny</pre>')
    assert page.inner("p") == "xy"
    assert normalize("<pre>\na</pre>") == "<pre>a</pre>"


def test_compact_appends_expand_as_the_pages_extension_does():
    """app/components/compact.py, as static/quanda.js expands it: `q="<alias>.<n>"` appends to the aliased element
    n last-child steps down; `q-def` defines the alias; one page holds several."""
    page = Page('<div id="t1"><div><p>a</p></div></div><div id="t2"></div>')
    page.apply('<div q="k.0" q-def="t2"><p>x</p></div><p q="j.2" q-def="t1">b</p>')
    page.apply('<p q="j.2"> c</p><div q="j.0"><p>d</p></div><p q="k.1">y</p>')
    assert page.inner("t1") == "<div><p>ab c</p></div><p>d</p>" and page.inner("t2") == "<p>xy</p>"
    with pytest.raises(AssertionError, match="before its definition"):
        page.apply('<p q="z.1">lost</p>')  # the browser would drop it (with a warning): never right
    with pytest.raises(Unmodelled):
        page.apply('<p q="k">no depth</p>')


def test_a_messages_frames_are_known_by_its_ids_or_its_alias():
    about = MessageFrames("ab12")
    assert about(b'<div id="msg-ab12-body" hx-swap-oob="true"></div>') and not about(b'<p q="7.1">x</p>')
    assert about(b'<p q="7.1" q-def="msg-ab12-tail">x</p>') and about(b'<p q="7.1">x</p>')
    assert not about(b'<p q="7a.1">x</p><p q="8.1" q-def="msg-cd34-tail">y</p>')
    assert not about(b'<p q="8.1">y</p>')


def test_what_is_not_modelled_is_refused():
    page = Page(START)
    with pytest.raises(Unmodelled):
        page.apply('<div hx-swap-oob="beforeend:#list"><li>x</li></div>')  # parsed in a <div>, appended to <ul>
    with pytest.raises(Unmodelled):
        page.apply('<li hx-swap-oob="beforeend:.x li">x</li>')
    with pytest.raises(Unmodelled):
        page.apply('<div id="box"><span hx-swap-oob="true" id="a">n</span></div>')
    with pytest.raises(Unmodelled):
        page.apply('<div id="box"><p>unclosed</div>')


def test_a_whole_page_starts_from_its_body():
    page = Page(body_of('<!doctype html><html><head><title>t</title></head><body><div id="app" hx-ext=\'ws\' '
                        'ws-connect="/ws"><textarea id="t" hidden></textarea><input id="i" value=x></div></body></html>'))
    assert page.by_id("app").attrs == {"id": "app", "hx-ext": "ws", "ws-connect": "/ws"}
    assert page.by_id("i").attrs["value"] == "x" and page.by_id("t").attrs["hidden"] == ""


def test_settle_merges_the_tails_pieces_into_the_body():
    """`q="<alias>.s"`: the page extension's settle swap (static/quanda.js), the rule of app/render/settle.py."""
    page = Page('<div id="msg-x-body"><p>before</p>\n</div><div id="msg-x-tail">'
                '<div class="md-piece"><blockquote>\n<p>a <em>b</em></p>\n</blockquote>\n</div>'
                '<div class="md-piece"><p class="md-inline">c </p>\n</div>'
                '<div class="md-piece"><p class="md-inline">d &amp;\n</p>\n</div></div>')
    page.apply('<div q="k.s" q-def="msg-x-tail"></div>')
    assert page.inner("msg-x-tail") == ""
    assert page.inner("msg-x-body") == "<p>before</p>\n<blockquote>\n<p>a <em>b</em> c d &amp;</p>\n</blockquote>\n"
    page = Page('<div id="msg-y-body"></div><div id="msg-y-tail"><div class="md-piece"><ol>\n<li>a</li>\n</ol>\n'
                '</div><div class="md-piece"><ol start="2">\n<li>b</li>\n</ol>\n<p>c</p>\n</div>'
                '<div class="md-piece"><ul>\n<li>d</li>\n</ul>\n</div></div>')
    page.apply('<div q="m.s" q-def="msg-y-tail"></div>')
    assert page.inner("msg-y-body") == "<ol>\n<li>a</li>\n<li>b</li>\n</ol>\n<p>c</p>\n<ul>\n<li>d</li>\n</ul>\n"
