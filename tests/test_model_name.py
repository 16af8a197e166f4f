"""Model names as shown: short, whatever the server calls them."""

import pytest
from hypothesis import given, strategies as st

from quanda.components.model_name import MAX_LABEL, model_label


@pytest.mark.parametrize("name, label", [
    ("/models/llama-3.2-3b-instruct-q4_k_m.gguf", "llama-3.2-3b-instruct-q4_k_m"),
    ("C:\\models\\Mistral-7B.Q4_0.gguf", "Mistral-7B.Q4_0"),
    ("hf.co/bartowski/Qwen3-4B-GGUF:Q4_K_M", "Qwen3-4B-GGUF:Q4_K_M"),
    ("qwen3:4b", "qwen3:4b"),
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("/", "/"),
    ("/models/" + "x" * 80 + ".gguf", "x" * (MAX_LABEL - 1) + "…"),
])
def test_model_label(name, label):
    assert model_label(name) == label


@given(st.text(min_size=1))
def test_a_label_is_never_empty_nor_longer_than_the_limit(name):
    label = model_label(name)
    assert label and len(label) <= MAX_LABEL
