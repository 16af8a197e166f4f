"""What an answer cost, as the server counted it: tokens read (the prompt) and written, and speed.

Each wire says it its own way; `openai_usage` and `ollama_usage` turn it into one dict (keys only where
the server gave the number)::

    {"prompt_tokens": 812, "completion_tokens": 95, "tokens_per_s": 27.9, "prompt_ms": 2950.0}

OpenAI-compatible servers send ``usage`` in a stream only when asked (``stream_options.include_usage``);
llama.cpp's ``llama-server`` adds ``timings`` (``predicted_per_second``, ``prompt_ms``); Ollama's final line
has ``prompt_eval_count``, ``eval_count`` and ``eval_duration`` / ``prompt_eval_duration`` in nanoseconds.
"""

from __future__ import annotations

from typing import Any


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _clean(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in usage.items() if value is not None}


def openai_usage(chunk: dict[str, Any]) -> dict[str, Any]:
    """From a chunk's ``usage`` (and llama.cpp's ``timings``); empty when it has neither."""
    usage = chunk.get("usage") if isinstance(chunk.get("usage"), dict) else {}
    timings = chunk.get("timings") if isinstance(chunk.get("timings"), dict) else {}
    speed = _number(timings.get("predicted_per_second"))
    prompt_ms = _number(timings.get("prompt_ms"))
    return _clean({
        "prompt_tokens": _count(usage.get("prompt_tokens")) if usage else _count(timings.get("prompt_n")),
        "completion_tokens": (_count(usage.get("completion_tokens")) if usage
                              else _count(timings.get("predicted_n"))),
        "tokens_per_s": round(speed, 1) if speed is not None else None,
        "prompt_ms": round(prompt_ms, 1) if prompt_ms is not None else None,
    })


def ollama_usage(final: dict[str, Any]) -> dict[str, Any]:
    """From Ollama's final line (``done: true``)."""
    written = _count(final.get("eval_count"))
    eval_ns = _number(final.get("eval_duration"))
    prompt_ns = _number(final.get("prompt_eval_duration"))
    speed = written / (eval_ns / 1e9) if written and eval_ns else None
    return _clean({
        "prompt_tokens": _count(final.get("prompt_eval_count")),
        "completion_tokens": written,
        "tokens_per_s": round(speed, 1) if speed is not None else None,
        "prompt_ms": round(prompt_ns / 1e6, 1) if prompt_ns is not None else None,
    })


def usage_text(usage: dict) -> str:
    """"812 tokens in · 95 out · first token 0.41 s · 27.9 tokens/s" (≈ where the app estimated)."""
    about = "≈" if usage.get("counted") == "estimate" else ""
    parts = []
    if usage.get("prompt_tokens") is not None:
        parts.append(f"{about}{usage['prompt_tokens']:,} tokens in")
    if usage.get("completion_tokens") is not None:
        parts.append(f"{about}{usage['completion_tokens']:,} out")
    if usage.get("ttft_s") is not None:
        parts.append(f"first token {usage['ttft_s']:.2f} s")
    if usage.get("tokens_per_s") is not None:
        parts.append(f"{usage['tokens_per_s']:.1f} tokens/s")
    return " · ".join(parts)
