"""What an answer cost and how fast it came: `Meter`, kept by the answer's rounds, stored with its entry.

    {"prompt_tokens": 812, "completion_tokens": 95, "ttft_s": 0.41, "seconds": 3.9, "tokens_per_s": 27.9,
     "window": 4096, "counted": "server"}

The server's own numbers where it gives them (`usage` / `timings` on OpenAI-compatible servers, the final
line on Ollama; over several tool rounds the tokens written add up and the prompt is the last request's).
Where it does not (llama-cpp-python sends none in a stream), the prompt is what the app counted when fitting
it to the window, the tokens written are the pieces streamed (one per token on the servers tried), the speed
is measured here, and `counted` says "estimate". Time to first token and the whole time are measured here
from the first request.
"""

from __future__ import annotations

import time


class Meter:
    def __init__(self) -> None:
        self.started: float | None = None
        self.first_at: float | None = None
        self.ended: float | None = None
        self.pieces = 0
        self.server: dict = {}
        self.prompt_counted: int | None = None
        self.window: int | None = None

    def request(self, prompt_tokens: int, window: int) -> None:
        """A request goes out (its prompt counted by the app)."""
        if self.started is None:
            self.started = time.monotonic()
        self.prompt_counted, self.window = prompt_tokens, window

    def first(self) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()

    def completed(self, usage: dict | None, pieces: int) -> None:
        """A request's stream ended (`usage`: the server's numbers for it, if any)."""
        self.ended = time.monotonic()
        self.pieces += pieces
        if not usage:
            return
        written = self.server.get("completion_tokens", 0) + usage.get("completion_tokens", 0)
        self.server = {**self.server, **usage, "completion_tokens": written}

    def summary(self) -> dict:
        """The answer's usage (empty when nothing came back: no request went out, or it failed before any
        text and the server counted nothing)."""
        if self.started is None or (not self.server and self.first_at is None and not self.pieces):
            return {}
        end = self.ended or time.monotonic()
        out: dict = {"window": self.window}
        if self.first_at is not None:
            out["ttft_s"] = round(self.first_at - self.started, 3)
        out["seconds"] = round(end - self.started, 3)
        server = "completion_tokens" in self.server
        out["prompt_tokens"] = self.server.get("prompt_tokens", self.prompt_counted)
        out["completion_tokens"] = self.server["completion_tokens"] if server else self.pieces
        speed = self.server.get("tokens_per_s")
        if speed is None and self.first_at is not None and end - self.first_at > 0 and out["completion_tokens"]:
            speed = round(out["completion_tokens"] / (end - self.first_at), 1)
        if speed is not None:
            out["tokens_per_s"] = speed
        out["counted"] = "server" if server else "estimate"
        return out
