"""Which questions ask for a change (the chat then says when an answer changed nothing)."""

import pytest

from quanda.chat.requests import looks_like_request

ACTIONS, TARGETS = {"insert", "update", "delete", "toggle", "list"}, {"todo"}


@pytest.mark.parametrize("text", [
    "add buy milk", "Add buy milk", "please add buy milk", "Can you add 'call mum'?", "delete todo 3",
    "Mark the first one as done", "rename #2 to call dad", "could you put oat milk on my list",
    "Start a run of 50 chunks", "insert bread", "ok, clear the done ones", "I need to remove the last task",
])
def test_requests(text):
    assert looks_like_request(text, ACTIONS, TARGETS)


@pytest.mark.parametrize("text", [
    "What is the capital of France?", "Plan my week from my todos", "How many todos are left?",
    "list my todos", "thanks!", "", "Why did the run stop?", "explain this code",
])
def test_not_requests(text):
    assert not looks_like_request(text, ACTIONS, TARGETS)
