"""The CLI: `show` prints state and token count; `tail` prints the snapshot, follows live tokens, ends when
immutable; bad ids give a clear error."""

import asyncio
import json
import sys

from quanda.core import QuandaMessage, QuandaWriter, open_store


async def run_cli(*args):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "quanda.core", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return proc


async def test_show_prints_state_and_token_count(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with await open_store(url) as store:
        msg = await QuandaMessage.create(store, role="assistant")
        await QuandaWriter(msg).chunk("Hello", estimate="…")
        await QuandaWriter(msg).warning("busy")
        proc = await run_cli("--db", url, "show", msg.id)
        out, err = await proc.communicate()
    assert proc.returncode == 0, err
    shown = json.loads(out)
    assert shown | {"id": None} == {"id": None, "role": "assistant", "content": "Hello", "estimate": "…",
                                    "warning": "busy", "immutable": False, "tokens": 2}


async def test_tail_prints_snapshot_then_follows_until_immutable(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with await open_store(url) as store:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        await w.chunk("Hello")
        proc = await run_cli("--db", url, "tail", msg.id)
        assert await proc.stdout.readexactly(5) == b"Hello"  # the snapshot, before any live token
        await w.chunk(", world")
        assert await proc.stdout.readexactly(7) == b", world"
        await w.chunk("!\n")
        await w.make_immutable()
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    assert out == b"!\n\n"


async def test_bad_id_is_a_clear_error(tmp_path):
    proc = await run_cli("--db", f"sqlite:///{tmp_path / 'q.db'}", "show", "nope")
    out, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"no message with id 'nope'" in err and b"Traceback" not in err
