"""Whether a question asked for a change: an imperative verb (add, delete, mark, rename, …, or the name of
one of the plugins' actions) opening it, or any such verb next to one of the plugins' nouns ("could you put
milk on my list"). When an answer to such a question ran no command, the chat says that nothing changed
(the model may have answered in prose only)."""

from __future__ import annotations

import re

VERBS = {"add", "append", "create", "insert", "new", "put", "note", "remember", "delete", "remove", "drop",
         "erase", "clear", "rename", "update", "change", "edit", "set", "mark", "check", "uncheck", "tick",
         "untick", "toggle", "complete", "finish", "move", "reorder", "start", "stop", "run", "undo"}
NOUNS = {"todo", "todos", "task", "tasks", "item", "items", "list", "run", "simulator", "simulation"}
FILLERS = {"please", "pls", "can", "could", "would", "will", "you", "kindly", "just", "now", "ok", "okay", "hey",
           "then", "and", "also", "so", "i", "want", "need", "to", "let's", "lets", "go", "ahead"}
ASKING = {"why", "what", "how", "when", "who", "where", "which", "whose", "is", "are", "was", "were", "do", "does",
          "did", "has", "have", "should"}  # a question about something, not a request
_WORD = re.compile(r"[a-z']+")


def looks_like_request(text: str, actions: set[str] = frozenset(), targets: set[str] = frozenset()) -> bool:
    """`actions` and `targets`: the plugins' command names and what they act on (e.g. insert, todo)."""
    words = _WORD.findall(text.lower())
    if words and words[0] in ASKING:
        return False
    verbs = VERBS | {a.lower() for a in actions if a.isalpha() and a != "list"}
    nouns = NOUNS | {t.lower() for t in targets} | {t.lower() + "s" for t in targets}
    rest = words
    while rest and rest[0] in FILLERS:
        rest = rest[1:]
    if rest and rest[0] in verbs:
        return True
    return any(w in verbs for w in words) and any(w in nouns for w in words)
