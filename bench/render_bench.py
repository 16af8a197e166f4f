"""The streaming renderer alone: CPU per token and bytes per answer, against today's algorithm.

    python bench/render_bench.py [--sizes 2000,20000] [--every 1,4,30] [--window 400] [--profile]

A view (`app/chat/stream_view.py` ChatView, the production path) is fed an answer token by token, with one
`flush` per N tokens (N = 1, 4, 30: a frame per token at 50 tokens/s, ~4 tokens per frame at 500/s,
~30 at 2,000/s); the answer is ~5-character tokens of three kinds: mixed markdown (headings,
paragraphs with inline code and bold, lists, fenced code), one long paragraph on a single line, one
long code block. "µs/token" is the process CPU time of the whole run divided by the tokens
(amortised: it includes rendering each finished block once). "bytes/final" is the payload of every
frame (as app.ws sends it) over the final HTML of the body.

Baseline (today's design, copied below): the producer computes `closing_suffix(content)` over the whole
answer with every chunk, and the view re-renders and re-sends the open segment each frame
(`render_update` from the stable offset). Its cost per token grows with the answer, so it is measured
on a window of the last `--window` tokens after the rest was loaded in one go (the per-token cost at
that length); at 20,000 tokens a full run would take minutes.

PASS/FAIL: for each kind and N, ours at 20,000 tokens costs at most 1.5x ours at 2,000 (O(1) per
token), and bytes <= 3x the final HTML. Exit status 1 when one fails. Appends go in the compact form
(app/components/compact.py: `<p q="a3.2">…</p>`, ~15 bytes of wrapper where htmx's own OOB markup needs
~60-110). At one ~5-character token per frame a single long paragraph still costs over 3x: each token, worth
~6 bytes of final HTML, is an append with a wrapper of its own (a bounded overhead per frame, so the payload
stays linear in the answer); permessage-deflate shrinks the wire bytes further.
Profile: `python bench/render_bench.py --profile` (cProfile of ours, mixed 20,000 tokens, N=1).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import table  # noqa: E402

WORDS = ("the model streams words with some code and more text while a reader waits for the answer to "
         "settle into place so that nothing moves twice").split()


def _words(rng: random.Random, k: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(k)]


def mixed_answer(n_tokens: int, seed: int = 1) -> list[str]:
    """A realistic answer of ~n tokens (~5 characters each): headings, paragraphs with inline code and bold
    spans, a tight bullet list, a fenced python block, a numbered list — repeated."""
    rng, out = random.Random(seed), []
    while len(out) < n_tokens:
        out.append(("\n\n" if out else "") + "## " + rng.choice(WORDS))
        out += [" " + w for w in _words(rng, 3)]
        out.append("\n\n")
        for k, w in enumerate(_words(rng, 70)):
            out.append((" `" if k % 23 == 7 else "` " if k % 23 == 9 else " **" if k % 31 == 12 else
                        "** " if k % 31 == 15 else ". " if k % 13 == 12 else " ") + w)
        for item in range(8):
            out.append("\n- " if item else "\n\n- ")
            out += [w + " " for w in _words(rng, 9)]
        out.append("\n\n```python\n")
        for line in range(30):
            out += [f"x{line} = ", f"f({line}, ", "'<b>'", ")  # ", rng.choice(WORDS), "\n"]
        out.append("```\n\n")
        for item in range(6):
            out.append(f"\n{item + 1}. ")
            out += [w + " " for w in _words(rng, 11)]
        out.append("\n\nSee [the docs](https://example.org/docs) & more.")
    return out[:n_tokens]


def paragraph_answer(n_tokens: int, seed: int = 2) -> list[str]:
    """One paragraph on a single line: a worst case for a renderer that re-reads the open block."""
    rng = random.Random(seed)
    return [(" **" if k % 40 == 5 else "** " if k % 40 == 8 else " ") + rng.choice(WORDS) for k in range(n_tokens)]


def code_answer(n_tokens: int, seed: int = 3) -> list[str]:
    """One long fenced code block."""
    rng, out = random.Random(seed), ["```python\n"]
    while len(out) < n_tokens:
        out += ["    value", " = ", "compute(", rng.choice(WORDS), ", '<i>')\n"]
    return out[:n_tokens]


KINDS = {"mixed": mixed_answer, "paragraph": paragraph_answer, "code": code_answer}


# --------------------------------------------------------------------------- ours


class Run(NamedTuple):
    us_per_token: float
    bytes_ratio: float


def run_ours(tokens: list[str], every: int) -> Run:
    from fasthtml.common import to_xml

    from quanda.chat.stream_view import ChatView
    from quanda.core import QuandaToken
    from quanda.render import render_blocks

    mid = "0123456789abcdef01234567"
    view = ChatView(mid)
    view.feed(QuandaToken("override", "", None, 0))
    sent = 0
    start = time.process_time()
    for i, text in enumerate(tokens, 1):
        view.feed(QuandaToken("chunk", text, None, i))
        if i % every == 0:
            sent += sum(len(to_xml(f, indent=False)) for f in view.flush())
    view.feed(QuandaToken("immutable", "", None, len(tokens) + 1))
    sent += sum(len(to_xml(f, indent=False)) for f in view.flush())
    elapsed = time.process_time() - start
    final = len(render_blocks("".join(tokens)))
    return Run(elapsed / len(tokens) * 1e6, sent / final)


# --------------------------------------------------------------------------- baseline: today's algorithm
# Copied from app/render.py and app/components/chat.py as they were before the incremental stream.

_FENCE_RE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_PARTIAL_CLOSER_RE = re.compile(r" {0,3}(`+|~+)")
_HEADING_RE = re.compile(r"#{1,6}(?=[ \t]|$)")
_SETEXT_UNDERLINE_RE = re.compile(r"(?:=+|-+)[ \t]*")
_TABLE_DELIMITER_RE = re.compile(r"\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")
SEGMENT_CAP = 512


class _Fence(NamedTuple):
    indent: str
    char: str
    length: int
    line: str


def _opens(line):
    m = _FENCE_RE.fullmatch(line)
    if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
        return None
    return _Fence(m.group(1), m.group(2)[0], len(m.group(2)), line)


def _closes(fence, line):
    m = _FENCE_RE.fullmatch(line)
    return bool(m) and m.group(2)[0] == fence.char and len(m.group(2)) >= fence.length \
        and not m.group(3).strip(" \t\r")


def _fence_at(text, pos):
    starts = set()
    for marker in ("```", "~~~"):
        i = text.find(marker, 0, pos)
        while i >= 0:
            line_start = text.rfind("\n", 0, i) + 1
            if i - line_start <= 3 and text[line_start:i] == " " * (i - line_start):
                starts.add(line_start)
            nl = text.find("\n", i, pos)
            i = text.find(marker, nl, pos) if nl >= 0 else -1
    fence, after = None, 0
    for line_start in sorted(starts):
        end = text.find("\n", line_start)
        end = len(text) if end < 0 else end
        line = text[line_start:end]
        if fence is None:
            fence = _opens(line)
        elif _closes(fence, line):
            fence = None
        after = end + 1
    return fence, after


def _is_heading(line, complete):
    m = _HEADING_RE.match(line)
    return m is not None and (complete or len(line) > m.end())


def _cuts(text, start, fence):
    cuts = []
    seg, pos, after_block, in_table = start, start, False, False
    while pos < len(text):
        nl = text.find("\n", pos)
        complete = nl >= 0
        line = text[pos:nl] if complete else text[pos:]
        long = pos - seg >= SEGMENT_CAP
        if fence is not None:
            if complete and _closes(fence, line):
                fence, after_block = None, True
            elif complete and long:
                cuts.append((pos, fence))
                seg = pos
        elif not line.strip():
            after_block = after_block or complete
        else:
            if line[0] not in " \t" and pos > seg and (
                after_block or _is_heading(line, complete)
                or (long and complete and not in_table and not _SETEXT_UNDERLINE_RE.fullmatch(line))
            ):
                cuts.append((pos, None))
                seg, in_table = pos, False
            in_table = in_table or ("|" in line and _TABLE_DELIMITER_RE.fullmatch(line) is not None)
            after_block = False
            fence = _opens(line) if complete else None
        if not complete:
            break
        pos = nl + 1
    return cuts


def _close_inline(block):
    if not block or block[-1] in "`*~_\\":
        return ""
    span, i, strong, strike = 0, 0, 0, 0
    while i < len(block):
        ch = block[i]
        if ch == "\\" and not span:
            i += 2
            continue
        if ch == "`":
            j = i
            while j < len(block) and block[j] == "`":
                j += 1
            if not span:
                span = j - i
            elif span == j - i:
                span = 0
            i = j
            continue
        if not span and block.startswith("**", i):
            strong, i = strong + 1, i + 2
            continue
        if not span and block.startswith("~~", i):
            strike, i = strike + 1, i + 2
            continue
        i += 1
    return "`" * span + "**" * (strong % 2) + "~~" * (strike % 2)


def old_closing_suffix(text):
    last_start = text.rfind("\n") + 1
    last = text[last_start:]
    fence, after_fence = _fence_at(text, last_start)
    if fence is not None:
        m = _PARTIAL_CLOSER_RE.fullmatch(last)
        if m and m.group(1)[0] == fence.char:
            return fence.char * max(0, fence.length - len(m.group(1)))
        return ("\n" if last else "") + fence.indent + fence.char * fence.length
    opening = _opens(last)
    if opening is not None:
        return "\n" + opening.indent + opening.char * opening.length
    if not last.strip():
        return ""
    return _close_inline(text[max(after_fence, text.rfind("\n\n") + 1):])


def _render_source(source, continued):
    from quanda.render import render_markdown

    out = render_markdown(source)
    if continued and out.startswith("<pre>"):
        out = '<pre class="md-cont">' + out[len("<pre>"):]
    return out


def old_render_update(content, since=0, estimate=None, final=False):
    fence = _fence_at(content, since)[0] if since else None
    starts = [(since, fence), *_cuts(content, since, fence)]
    if final:
        starts.append((len(content), None))
    seg = lambda s, e, f: (f.line + "\n" if f else "") + content[s:e]  # noqa: E731
    stable = "".join(_render_source(seg(s, e, f), f is not None) for (s, f), (e, _) in zip(starts, starts[1:]) if s < e)
    offset, fence = starts[-1]
    if final:
        return stable, offset, ""
    tail = ""
    if offset < len(content) or estimate:
        source = seg(offset, len(content), fence) + (estimate or "")
        tail = _render_source(source + old_closing_suffix(source), fence is not None)
    return stable, offset, tail


class OldView:
    """Today's ChatView streaming path: the open segment's text, re-rendered and re-sent every frame."""

    def __init__(self, content: str = ""):
        self.head, self.tail = "", content
        self.sent = 0

    def feed(self, text: str, estimate: str | None) -> None:
        self.tail += text
        self.estimate = estimate

    def flush(self) -> None:
        content = self.head + self.tail
        stable, offset, tail = old_render_update(content, len(self.head), self.estimate)
        if offset > len(self.head):
            fence = _fence_at(content, offset)[0]
            self.head = fence.line + "\n" if fence else ""
            self.tail = content[offset:]
        self.sent += len(stable) + len(tail) + 60  # + the two elements' tags


def run_baseline(tokens: list[str], every: int, window: int) -> float:
    """µs per token over the last `window` tokens (the producer's closing_suffix included)."""
    prefix = "".join(tokens[:-window])
    view = OldView(prefix)
    view.estimate = None
    view.flush()
    content = prefix
    start = time.process_time()
    for i, text in enumerate(tokens[-window:], 1):
        content += text
        view.feed(text, old_closing_suffix(content) or None)  # what app/chat.py does with each chunk
        if i % every == 0:
            view.flush()
    return (time.process_time() - start) / window * 1e6


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--every", default="1,4,30", help="tokens per flush (frame)")
    parser.add_argument("--window", type=int, default=400)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    everies = [int(s) for s in args.every.split(",")]
    if args.profile:
        import cProfile
        import pstats

        tokens = mixed_answer(max(sizes))
        cProfile.runctx("run_ours(tokens, 1)", globals(), {"tokens": tokens}, "/tmp/render_bench.prof")
        pstats.Stats("/tmp/render_bench.prof").sort_stats("cumulative").print_stats(25)
        return 0
    rows, verdicts = [], []
    for kind, make in KINDS.items():
        for every in everies:
            ours = {}
            for n in sizes:
                tokens = make(n)
                ours[n] = run_ours(tokens, every)
                base = run_baseline(tokens, every, min(args.window, n // 2))
                rows.append([kind, str(n), str(every), f"{ours[n].us_per_token:.1f}", f"{base:.1f}",
                             f"{ours[n].bytes_ratio:.2f}"])
            small, large = ours[sizes[0]], ours[sizes[-1]]
            ratio = large.us_per_token / small.us_per_token
            verdicts.append((f"{kind}, {every} token(s)/frame: µs/token at {sizes[-1]} within 1.5x of {sizes[0]} "
                             f"({ratio:.2f}x)", ratio <= 1.5))
            worst = max(r.bytes_ratio for r in ours.values())
            verdicts.append((f"{kind}, {every} token(s)/frame: bytes <= 3x final HTML ({worst:.2f}x)", worst <= 3))
    print(table(["answer", "tokens", "tokens/frame", "ours µs/token", "baseline µs/token", "ours bytes/final"], rows))
    print()
    for text, ok in verdicts:
        print(("PASS " if ok else "FAIL ") + text)
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
