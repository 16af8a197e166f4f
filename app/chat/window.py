"""The prompt fitted to the model's context window, in tokens.

The window: the conversation's own context size if set (never more than the server allows), else what the
server says — llama.cpp's `/props` (per slot), a refusal that named it — else QUANDA_LLM_CONTEXT. Ollama has
no fixed window: it uses the `num_ctx` the request sends, so that is QUANDA_LLM_CONTEXT (or the
conversation's), capped by the model's trained length from `/api/show`, and it is sent with every request.

Tokens are counted by the server's own tokenizer where it has one (llama.cpp `/tokenize`, llama-cpp-python
`/extras/tokenize`), else estimated at CHARS_PER_TOKEN characters a token; both get PER_MESSAGE tokens a
message for the chat template, and an estimate a SAFETY margin on top.

What always fits: the system prompt, the plugins' live state (each bounded to its share of STATE_SHARE of the
window, cut with a note), the latest question (cut in the middle, with a note, if it alone is too long), the
tool rounds of this answer, and room for the answer (ANSWER_SHARE of the window, at least ANSWER_MIN tokens).
Older turns go first, oldest first; when some went, an answer or ambient event left at the start of what is
kept goes with them, so what the assistant sees starts at a question (the page marks it: "earlier messages
are no longer seen"). The room left is sent as the answer's `max_tokens` (`num_predict` on Ollama).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quanda.context import Handle

from . import prompt

CHARS_PER_TOKEN = 3.0  # English is ~4 characters a token; code and other scripts fewer
PER_MESSAGE = 8
SAFETY = 0.15  # added to estimated counts
ANSWER_SHARE, ANSWER_MIN = 0.25, 256
STATE_SHARE = 0.25
MIN_WINDOW = 512


@dataclass
class Fitted:
    """A prompt that fits, and what was left out."""

    messages: list[dict]
    window: int
    prompt_tokens: int
    max_tokens: int
    counted_by: str  # "server" (its tokenizer) or "estimate"
    seen_from: str | None = None  # the key of the first entry the model sees, when older ones were left out
    dropped: int = 0  # turns left out
    cut: list[str] = field(default_factory=list)  # what was shortened to fit
    temperature: float | None = None  # the conversation's, sent with the request


async def window_for(h: Handle, model: str, context: int | None = None) -> int:
    """The window to fit the prompt to (see the module's docstring)."""
    llm = h.ctx.llm
    told = await llm.context_window(model) if hasattr(llm, "context_window") else None
    chosen_by_request = getattr(llm, "window_by_request", False)
    wanted = context or (h.settings.llm_context if chosen_by_request or not told else None)
    window = min(wanted, told) if wanted and told else (wanted or told or h.settings.llm_context)
    return max(MIN_WINDOW, int(window))


class Counter:
    """Token counts of texts: the server's tokenizer once asked (inside the answer's turn), else estimates."""

    def __init__(self, llm, model: str) -> None:
        self.llm, self.model, self.by_server = llm, model, False

    async def counts(self, texts: list[str]) -> list[int]:
        found = None
        if hasattr(self.llm, "count_tokens"):
            found = await self.llm.count_tokens(texts, self.model)
        if found is not None:
            self.by_server = True
            return [n + PER_MESSAGE for n in found]
        return [estimate(text) for text in texts]


def estimate(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN * (1 + SAFETY)) + PER_MESSAGE


def shorten(text: str, tokens: int, total: int, where: str) -> str:
    """`text` (counted `total` tokens) cut to about `tokens`, with a note saying so; `where`: "end" keeps the
    start, "middle" keeps both ends."""
    keep = max(0, int(len(text) * tokens / max(total, 1)) - 120)
    note = f"\n[… {len(text) - keep:,} characters left out to fit the model's context window …]\n"
    if where == "middle":
        return text[: keep // 2] + note + text[len(text) - keep // 2:]
    return text[:keep] + note


async def fit(h: Handle, answer_id: str, model: str, *, tools_offered: bool, own_prompt: str = "",
              context: int | None = None, extra: list[dict] | None = None) -> Fitted:
    """The messages for an answer (system prompt, the turns that fit, then `extra`: this answer's tool rounds)."""
    window = await window_for(h, model, context)
    counter = Counter(h.ctx.llm, model)
    fixed, states = await prompt.system_layers(h, tools_offered, own_prompt)
    turns = await prompt.history(h, answer_id)
    extra = list(extra or [])
    cut: list[str] = []
    budget_state = int(window * STATE_SHARE / max(len(states), 1))
    state_counts = await counter.counts(states)
    states = [shorten(state, budget_state, n, "end") if n > budget_state else state
              for state, n in zip(states, state_counts)]
    cut += ["live state"] * sum(n > budget_state for n in state_counts)
    system = "\n\n".join([fixed, *states])
    room = max(ANSWER_MIN, int(window * ANSWER_SHARE))
    [system_n] = await counter.counts([system])
    extra_n = sum(await counter.counts([m.get("content") or "" for m in extra])) if extra else 0
    turn_counts = await counter.counts([t.message["content"] for t in turns])
    left = window - room - system_n - extra_n
    if turns and turn_counts[-1] > left:  # the latest question alone is too long: keep both its ends
        last = turns[-1]
        last.message = {**last.message, "content": shorten(last.message["content"], max(left, 64),
                                                           turn_counts[-1], "middle")}
        turn_counts[-1] = (await counter.counts([last.message["content"]]))[0]
        cut.append("question")
    kept, used = 0, 0
    for n in reversed(turn_counts):
        if used + n > left:
            break
        used, kept = used + n, kept + 1
    first = len(turns) - kept
    if first > 0:  # some went: start at a question
        start = next((i for i in range(first, len(turns)) if turns[i].is_message
                      and turns[i].message["role"] == "user"), first)
        used -= sum(turn_counts[first:start])
        first = start
    messages = [{"role": "system", "content": system}, *(t.message for t in turns[first:]), *extra]
    total = system_n + extra_n + used
    return Fitted(messages, window, total, max(room, window - total), "server" if counter.by_server else "estimate",
                  seen_from=turns[first].key if first > 0 and first < len(turns) else None, dropped=first, cut=cut)

