"""The public API of the core on every backend: messages, tokens, the reducer's rules, records."""

import re

import pytest

from quanda.core import QuandaImmutableError, QuandaMessage, QuandaToken, QuandaWriter, replay


async def test_create_and_load_by_id(store):
    msg = await QuandaMessage.create(store, role="assistant", content="")
    assert re.fullmatch(r"[0-9a-f]{24}", msg.id)
    same = await QuandaMessage.from_id(store, msg.id)
    assert (same.id, same.role, same.content, same.last_seq, same.immutable) == (msg.id, "assistant", "", 0, False)
    assert (await QuandaMessage.from_id(store, msg.id.upper())).id == msg.id


async def test_chunk_returns_the_token_with_its_seq(store):
    w = QuandaWriter(await QuandaMessage.create(store, role="assistant"))
    assert await w.chunk("Hel", estimate="…") == QuandaToken(kind="chunk", text="Hel", estimate="…", seq=1)
    assert (await w.chunk("lo")).seq == 2


async def test_estimate_is_a_transient_suffix_never_part_of_the_content(store):
    msg = await QuandaMessage.create(store, role="simulator")
    w = QuandaWriter(msg)
    await w.chunk("Simulated chunk 1/2\n", estimate="(1/2)")
    await msg.refresh()
    assert (msg.content, msg.estimate, msg.display) == ("Simulated chunk 1/2\n", "(1/2)", "Simulated chunk 1/2\n(1/2)")
    await w.chunk("Simulated chunk 2/2\n")
    await msg.refresh()
    assert (msg.content, msg.estimate) == ("Simulated chunk 1/2\nSimulated chunk 2/2\n", None)


async def test_override_replaces_content_and_clears_estimate(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    await w.chunk("partial", estimate="```")
    await w.override("Hello, world")
    await msg.refresh()
    assert (msg.content, msg.estimate, msg.last_seq) == ("Hello, world", None, 2)


async def test_str_rule_mutable_then_immutable(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    await w.chunk("abc")
    await msg.refresh()
    assert str(msg) == "WARNING: message is still mutable.\n\nabc"
    await w.warning("still generating")
    await msg.refresh()
    assert str(msg) == "still generating\n\nabc"
    await w.make_immutable()
    await msg.refresh()
    assert str(msg) == "abc" and msg.warning == "" and msg.immutable


async def test_make_immutable_is_idempotent_and_terminal(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    await w.chunk("x", estimate="…")
    first = await w.make_immutable()
    again = await w.make_immutable()
    assert first == again == QuandaToken("immutable", "", None, 2)
    for write in (w.chunk("y"), w.override("z"), w.warning("w")):
        with pytest.raises(QuandaImmutableError):
            await write
    await msg.refresh()
    assert (msg.content, msg.last_seq, msg.estimate) == ("x", 2, None)


async def test_initial_content_is_logged_so_replay_reproduces_it(store):
    msg = await QuandaMessage.create(store, role="q", content="What is 2+2?")
    tokens = await store.select_tokens(msg.id)
    assert tokens == [QuandaToken("override", "What is 2+2?", None, 1)]
    assert replay(tokens).content == msg.content


async def test_dollar_and_unicode_text_is_stored_verbatim(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    for text in ["$content", "$$", "{\"$set\": 1}", "é🙂\u0000", "$literal"]:
        await w.chunk(text, estimate="$last_seq")
    await w.warning("$warning")
    await msg.refresh()
    assert msg.content == "$content$${\"$set\": 1}é🙂\u0000$literal"
    assert (msg.estimate, msg.warning) == ("$last_seq", "$warning")
    assert replay(await store.select_tokens(msg.id)) == msg.state


async def test_select_messages_filters_by_role_and_mutability(store):
    a = await QuandaMessage.create(store, role="assistant")
    b = await QuandaMessage.create(store, role="assistant")
    await QuandaMessage.create(store, role="q")
    await QuandaWriter(b).make_immutable()
    mutable = await store.select_messages(role="assistant", immutable=False)
    assert [m.id for m in mutable] == [a.id]
    assert {m.id for m in await store.select_messages(role="assistant")} == {a.id, b.id}


async def test_records_insert_once_put_get_list_delete(store):
    assert await store.insert_record("todo", "0001", {"name": "buy milk"}) is True
    assert await store.insert_record("todo", "0001", {"name": "other"}) is False
    assert await store.get_record("todo", "0001") == {"name": "buy milk"}
    await store.put_record("todo", "0002", {"name": "$x", "done": True})
    await store.put_record("todo", "0001", {"name": "buy oat milk"})
    await store.put_record("other", "0003", {"n": 1})
    assert await store.list_records("todo") == [("0001", {"name": "buy oat milk"}), ("0002", {"name": "$x", "done": True})]
    assert await store.list_records("todo", prefix="0002") == [("0002", {"name": "$x", "done": True})]
    assert await store.delete_record("todo", "0001") is True
    assert await store.delete_record("todo", "0001") is False
    assert await store.get_record("todo", "0001") is None


def test_as_stream_piece_shows_the_estimate_only_for_chunks():
    assert QuandaToken("chunk", "Hel", "…", 1).as_stream_piece() == "Hel…"
    assert QuandaToken("chunk", "Hel", None, 1).as_stream_piece() == "Hel"
    assert QuandaToken("override", "Hello", "(1/2)", 2).as_stream_piece() == "Hello"
    assert QuandaToken("warning", "busy", None, 3).as_stream_piece() == "busy"
