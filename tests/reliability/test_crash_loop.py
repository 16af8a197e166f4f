"""Crash loop: the real server on the embedded store, `kill -9` at random moments, restarted each time.

Each round: the server starts on the same data directory; the jobs the last kill cut short must be marked
interrupted (answers: a warning saying so, Retry offered; simulator runs: "interrupted" and sealed); every
interrupted answer is retried; new answers (HTTP API questions) and a simulator run start, and a script
writes chunks through the HTTP API; readers follow every one of them over SSE and record each token they are
given, the script each seq it is returned. At a random moment — after a random number of acknowledged
tokens, or while the restarted server is still marking what the last one left — the server is killed. Then,
with no server running: `PRAGMA integrity_check` is ok, every message's stored state equals `replay` of its
log, seqs are 1..n with no gap, and every acknowledged token is still in the log at its seq. At the end every
answer is complete (its full reply, sealed) and every run ended.

Short variant: 3 kills (default run). Long: 25 kills (QUANDA_RELIABILITY_LONG=1). QUANDA_RELIABILITY_SEED
replays a run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import httpx
import pytest

from tests.llm_server import LLMTestServer, Reply
from tests.reliability.harness import (LONG, TOKEN, Ack, Acks, SSEReader, Tab, api_client, browser_cookie,
                                       check_store, integrity, seeded, short, wait_token)
from tests.servers import AppServer

pytestmark = pytest.mark.reliability

KILLS = 25 if LONG else 3
LEASE_S = "1"
REPLY = [f"w{i} " for i in range(300)]
REPLY_TEXT = "".join(REPLY)
SIM_CHUNKS = 250
MARK_TIMEOUT = 30
DONE_TIMEOUT = 60


class World:
    """What the loop started and must find again: answers, simulator runs, the script's message."""

    def __init__(self, tmp_path, llm: LLMTestServer):
        self.tmp_path, self.llm = tmp_path, llm
        self.db = tmp_path / "data" / "quanda.db"
        self.acks = Acks()
        self.answers: list[str] = []
        self.runs: list[str] = []
        self.written: str | None = None  # the message the script writes chunks into, across every crash
        self.cookie = ""
        self.server: AppServer | None = None
        self.figures = {"kills": 0, "marked": 0, "retried": 0, "answers": 0, "runs": 0, "restart_s": []}

    def start(self) -> AppServer:
        began = time.monotonic()
        self.server = AppServer(self.tmp_path, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=self.llm.url,
                                OLLAMA_MODEL="quanda-test", QUANDA_JOB_LEASE_S=LEASE_S).start()
        self.figures["restart_s"].append(time.monotonic() - began)
        return self.server

    def kill(self) -> None:
        assert self.server is not None and self.server.proc is not None
        os.kill(self.server.proc.pid, signal.SIGKILL)
        assert self.server.proc.wait(30) == -signal.SIGKILL
        self.server.log.close()
        self.figures["kills"] += 1

    async def offline_checks(self) -> None:
        assert integrity(str(self.db)) == "ok"
        await check_store(f"sqlite:///{self.db}", self.acks)
        assert not self.acks.problems, "\n".join(self.acks.problems[:10])

    # -- one round --------------------------------------------------------------------------------------------

    async def unfinished(self, client: httpx.AsyncClient) -> tuple[list[str], list[str]]:
        answers = [a for a in self.answers if not (await client.get(f"/api/messages/{a}")).json()["immutable"]]
        runs = [r for r in self.runs if not (await client.get(f"/api/messages/{r}")).json()["immutable"]]
        return answers, runs

    async def marked(self, client: httpx.AsyncClient, answers: list[str], runs: list[str],
                     first_only: bool = False) -> None:
        """Until what the last kill cut short is marked: answers interrupted (Retry offered), runs sealed."""
        waits = [wait_token(client, a, lambda tok, st: st["warning"].startswith("interrupted"), MARK_TIMEOUT,
                            "an answer cut short marked interrupted") for a in answers]
        waits += [wait_token(client, r, lambda tok, st: st["immutable"], MARK_TIMEOUT,
                             "a simulator run cut short sealed") for r in runs]
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            if first_only:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                next(iter(done)).result()
            else:
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not first_only:
            self.figures["marked"] += len(tasks)
            for run in runs:  # a run cut short ends with the warning "interrupted", then its seal
                reader = SSEReader(client, run, self.acks)
                await reader.wait(DONE_TIMEOUT, "the sealed run's events")
                log = [(a.kind, a.text) for _seq, a in sorted(self.acks.tokens[run].items())]
                assert log[-2:] == [("warning", "interrupted"), ("immutable", "")], \
                    f"run {run} not marked interrupted: {log[-3:]}"

    async def retry(self, tab: Tab, client: httpx.AsyncClient, answer: str) -> None:
        await tab.send("chat.retry", message_id=answer)
        try:
            await wait_token(client, answer, lambda tok, st: st["warning"] == "", MARK_TIMEOUT,
                             "Retry accepted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; notices: {tab.notices()[-3:]}") from None
        self.figures["retried"] += 1

    async def start_run(self, tab: Tab) -> str:
        seen = len(tab.frames)
        await tab.send("sim.start", chunks=str(SIM_CHUNKS), delay_min="1", delay_max="6")
        while True:
            m = await tab.wait_frame(r'id="sim-run"[^>]*data-message="([0-9a-f]{24})"|'
                                     r'data-message="([0-9a-f]{24})"[^>]*id="sim-run"', MARK_TIMEOUT,
                                     "the simulator run started")
            run = m.group(1) or m.group(2)
            if run not in self.runs:
                self.runs.append(run)
                self.figures["runs"] += 1
                return run
            del tab.frames[seen:]

    async def ask(self, client: httpx.AsyncClient, text: str) -> str:
        q = (await client.post("/api/messages", json={"role": "q", "content": text})).json()["id"]
        response = await client.post(f"/api/messages/{q}/answer", json={})
        assert response.status_code == 202, response.text
        answer = response.json()["answer_id"]
        self.answers.append(answer)
        self.figures["answers"] += 1
        return answer

    async def write_chunks(self, client: httpx.AsyncClient) -> None:
        """The script's own writes: every seq the API returns is acknowledged."""
        if self.written is None:
            self.written = (await client.post("/api/messages", json={"role": "note"})).json()["id"]
        n = self.acks.last(self.written)
        with contextlib.suppress(httpx.HTTPError, OSError):
            while True:
                n += 1
                text, estimate = f"n{n} ", f"({n})"
                response = await client.post(f"/api/messages/{self.written}/tokens",
                                             json={"kind": "chunk", "text": text, "estimate": estimate})
                assert response.status_code == 200, response.text
                self.acks.add(self.written, response.json()["seq"], Ack("chunk", text, estimate))

    async def round(self, rng, final: bool = False) -> None:
        """Restart, check recovery, retry, start new work; then (unless final) kill at a random moment."""
        server = self.start()
        self.cookie = self.cookie or await browser_cookie(server.url)
        async with api_client(server.url) as client, Tab(server.url, self.cookie) as tab:
            answers, runs = await self.unfinished(client)
            if not final and (answers or runs) and rng.random() < 0.25:
                await self.marked(client, answers, runs, first_only=True)  # kill while it marks
                self.kill()
                return
            await self.marked(client, answers, runs)
            readers = []
            for answer in answers:
                await self.retry(tab, client, answer)
                readers.append(SSEReader(client, answer, self.acks))
            if not final:
                for i in range(2):
                    readers.append(SSEReader(client, await self.ask(client, f"question {len(self.answers)}"),
                                             self.acks))
                readers.append(SSEReader(client, await self.start_run(tab), self.acks))
            writer = asyncio.create_task(self.write_chunks(client))
            if final:
                for reader in readers:
                    await reader.wait(DONE_TIMEOUT, "a retried answer")
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                return
            target = self.acks.count + rng.randrange(0, 900)
            assert await self.acks.wait_count(target, DONE_TIMEOUT), f"only {self.acks.count} of {target} tokens"
            self.kill()
            for reader in readers:
                await reader.stop()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def finish(self) -> None:
        """The last server: everything complete, then stopped cleanly and checked."""
        async with api_client(self.server.url) as client:
            for answer in self.answers:
                state = (await client.get(f"/api/messages/{answer}")).json()
                assert state["immutable"] and state["content"] == REPLY_TEXT and state["warning"] == "", \
                    f"answer {answer} not complete: {short(state)}"
            for run in self.runs:
                state = (await client.get(f"/api/messages/{run}")).json()
                assert state["immutable"], f"run {run} never ended: {short(state)}"
            assert (await client.post(f"/api/messages/{self.written}/immutable")).status_code == 204
        self.server.stop()
        await self.offline_checks()


@pytest.fixture
def llm():
    with LLMTestServer(Reply(chunks=REPLY, delay=0.004)) as server:
        yield server


async def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path, llm):
    rng = seeded("crash loop")
    world = World(tmp_path, llm)
    began = time.monotonic()
    try:
        while world.figures["kills"] < KILLS:
            await world.round(rng)
            await world.offline_checks()
        await world.round(rng, final=True)
        await world.finish()
    finally:
        if world.server is not None and world.server.proc.poll() is None:
            world.server.stop()
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("server-*.log"))
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 2000:][:6000]
    f = world.figures
    print(f"[crash loop] {f['kills']} kills in {time.monotonic() - began:.1f} s; {world.acks.count} acknowledgements "
          f"over {len(world.acks.tokens)} messages; {f['answers']} answers, {f['runs']} runs, {f['marked']} jobs "
          f"marked interrupted, {f['retried']} retries; restart {min(f['restart_s']):.2f}–"
          f"{max(f['restart_s']):.2f} s")
