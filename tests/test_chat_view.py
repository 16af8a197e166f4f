"""ChatView: the page rebuilt from its frames equals the final render, however the answer was chunked."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app.components.chat import ChatView
from app.quanda import QuandaToken
from app.render import closing_suffix, render_blocks
from fasthtml.common import to_xml

MID = "0" * 24


class Page:
    """What htmx does with the view's fragments, for one message: body gets appended to or replaced; tail
    replaced."""

    def __init__(self):
        self.body, self.tail = "", ""

    def apply(self, fragments):
        for fragment in fragments:
            html = to_xml(fragment, indent=False)
            inner = re.sub(r"^<div[^>]*>|</div>$", "", html)
            if f'beforeend:#msg-{MID}-body' in html:
                self.body += inner
            elif f'id="msg-{MID}-body"' in html:
                self.body = inner
            elif f'id="msg-{MID}-tail"' in html:
                self.tail = inner


def stream(chunks, flush_every=1):
    view, page, content, seq = ChatView(MID), Page(), "", 0
    view.feed(QuandaToken("override", "", None, 0))
    for i, chunk in enumerate(chunks):
        content += chunk
        seq += 1
        view.feed(QuandaToken("chunk", chunk, closing_suffix(content) or None, seq))
        if i % flush_every == 0:
            page.apply(view.flush())
    view.feed(QuandaToken("immutable", "", None, seq + 1))
    page.apply(view.flush())
    return page, content


def test_a_long_code_block_streamed_in_small_chunks_renders_as_code():
    code = "".join(f"line_{i} = {i} * 2  # some code\n" for i in range(60))
    text = f"Intro paragraph.\n\n```python\n{code}```\n\nAfter the code.\n"
    page, content = stream([text[i:i + 5] for i in range(0, len(text), 5)])
    assert page.body == render_blocks(content) and page.tail == ""
    assert page.body.count("<p>") == 2


blocks = st.sampled_from(["Some words here. ", "More text.\n", "\n\n", "- item\n", "1. first\n", "# Title\n",
                          "```\n", "```python\n", "code = 1\n", "`inline` ", "**bold** ", "> quote\n",
                          "x" * 90 + "\n", "| a | b |\n|---|---|\n| 1 | 2 |\n"])


@settings(max_examples=150, deadline=None)
@given(st.lists(blocks, max_size=40).map("".join), st.integers(1, 9), st.integers(1, 4))
def test_page_rebuilt_from_frames_equals_the_final_render(text, size, flush_every):
    page, content = stream([text[i:i + size] for i in range(0, len(text), size)], flush_every)
    assert page.body + page.tail == render_blocks(content)
