"""How a model is named on screen: short (a llama.cpp server names its models by their file path), the full
name kept for a tooltip."""

from __future__ import annotations

import re

MAX_LABEL = 40
_WEIGHTS_SUFFIX = re.compile(r"\.(gguf|ggml|bin|safetensors|pt|pth)$", re.IGNORECASE)


def model_label(name: str) -> str:
    """`/models/llama-3.2-3b-instruct-q4_k_m.gguf` → `llama-3.2-3b-instruct-q4_k_m`; `hf.co/org/repo:Q4` →
    `repo:Q4`; plain names (`qwen3:4b`) as they are; at most MAX_LABEL characters (the end cut, marked …)."""
    label = _WEIGHTS_SUFFIX.sub("", name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]) or name
    return label if len(label) <= MAX_LABEL else label[:MAX_LABEL - 1] + "…"
