"""Invariants 4 and 7 as properties: for random token sequences the stored state equals `replay` of the log
after every step, every past state is reproduced by a prefix of the log, and a reader joining at any step
reconstructs the stored state."""

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quanda.core import QuandaImmutableError, QuandaMessage, QuandaReader, QuandaToken, QuandaWriter, replay
from quanda.core.replay import MessageState, apply
from tests.backends import NO_POSTGRES, POSTGRES_URL, make_store

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
estimates = st.none() | texts
ops = st.one_of(
    st.tuples(st.just("chunk"), texts, estimates),
    st.tuples(st.just("override"), texts, st.none()),
    st.tuples(st.just("warning"), texts, st.none()),
    st.tuples(st.just("immutable"), st.just(""), st.none()),
)


async def run_scenario(backend, tmp, steps, reader_at):
    store = await make_store(backend, Path(tmp))
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        states = [MessageState()]
        reader_task = None
        log = []
        for index, (kind, text, estimate) in enumerate(steps):
            if index == reader_at:
                reader_task = asyncio.create_task(collect(msg))
                await asyncio.sleep(0)
            was_immutable = states[-1].immutable
            write = {"chunk": lambda: w.chunk(text, estimate), "override": lambda: w.override(text),
                     "warning": lambda: w.warning(text), "immutable": w.make_immutable}[kind]
            if was_immutable and kind != "immutable":
                with pytest.raises(QuandaImmutableError):
                    await write()
            else:
                token = await write()
                if not was_immutable:
                    assert token.seq == len(states)
                    states.append(apply(states[-1], token))
            await msg.refresh()
            log = await store.select_tokens(msg.id, limit=10_000)
            assert msg.state == replay(log) == states[-1]
        for seq, state in enumerate(states):  # every state the message ever had, from a prefix of the log
            assert replay(log[:seq]) == state
        await w.make_immutable()
        await msg.refresh()
        if reader_task is None:
            reader_task = asyncio.create_task(collect(msg))
        assert replay(await asyncio.wait_for(reader_task, 10)) == msg.state
    finally:
        await store.close()


async def collect(msg):
    return [token async for token in QuandaReader(msg)]


@pytest.mark.parametrize("backend", ["sqlite", "mongomock", pytest.param(
    "postgres", marks=pytest.mark.skipif(not POSTGRES_URL, reason=NO_POSTGRES))])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(ops, max_size=25), reader_at=st.integers(min_value=0, max_value=25))
def test_stored_state_equals_replay_after_every_step(backend, steps, reader_at):
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_scenario(backend, tmp, steps, reader_at))


@given(st.lists(st.builds(QuandaToken, st.sampled_from(["chunk", "override", "warning", "immutable"]), texts,
                          estimates, st.integers(1, 100))))
def test_reducer_rules(tokens):
    state = replay(tokens)
    content, estimate, warning, immutable = "", None, "", False
    for t in tokens:
        if t.kind == "chunk":
            content, estimate = content + t.text, t.estimate
        elif t.kind == "override":
            content, estimate = t.text, t.estimate
        elif t.kind == "warning":
            warning = t.text
        else:
            immutable, warning, estimate = True, "", None
    assert (state.content, state.estimate, state.warning, state.immutable) == (content, estimate, warning, immutable)
    assert state.display == content + (estimate or "")
    assert str(state) == (content if immutable else (warning or "WARNING: message is still mutable.") + "\n\n" + content)
