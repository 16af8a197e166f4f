"""GET /-/metrics: Prometheus text, parsed with prometheus_client's own parser — counters move while an answer
streams; a tab, its frames, the store's calls, the LLM request and the answer's outcome are counted; no label
names a workspace; two servers on one database each count only their own work; several workers sharing
PROMETHEUS_MULTIPROC_DIR show their sum; only loopback (or a token, or the public setting) may scrape."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quanda.config import Settings
from quanda.metrics import allowed
from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer, open_tab

TOKEN = "metrics-api-token"
WAIT_S = 20


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get("/-/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def wait_for(check, what: str) -> None:
    for _ in range(int(WAIT_S / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)  # polling a server's state over HTTP: there is no event to wait on
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["ok"])) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, llm):
    server = AppServer(tmp_path_factory.mktemp("metrics"), QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url,
                       OLLAMA_MODEL="quanda-test").start()
    yield server
    server.stop()


async def test_counters_move_while_an_answer_streams(server, llm):
    llm.script = Reply(chunks=[f"t{i} " for i in range(300)], delay=0.01)
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=WAIT_S) as api:
        page = await api.get("/", headers={"Authorization": ""})
        cookie = "; ".join(f"{k}={v}" for k, v in page.cookies.items())
        async with open_tab(server, cookie, page="todo") as tab:
            before = await scrape(api)
            asked = await api.post("/api/chat/ask", json={"text": "Stream please"})
            assert asked.status_code == 201, asked.text
            await tab.send(json.dumps({"action": "follow", "streams": {asked.json()["answer_id"]: 0}}))
            seen = []

            async def moved() -> bool:
                now = await scrape(api)
                seen.append(value(now, "quanda_tokens_streamed_total", kind="text"))
                return len(set(seen)) >= 3  # three different counts: it moves while the answer streams
            await wait_for(moved, "the tokens counter to move")
            entries = (await api.get("/api/chat/conversation")).json()["entries"]
            assert entries[-1]["status"] == "generating", "the answer ended before the counter was seen moving"

            async def done() -> bool:
                return (await api.get("/api/chat/conversation")).json()["entries"][-1]["status"] == "done"
            await wait_for(done, "the answer to end")

            async def released() -> bool:  # the job winds up (and gives its lease back) after marking the answer
                return value(await scrape(api), "quanda_leases_held") == 0
            await wait_for(released, "the answer's job to give its lease back")
            after = await scrape(api)
            assert value(after, "quanda_open_tabs") == 1
    tokens = value(after, "quanda_tokens_streamed_total", kind="text") - value(before, "quanda_tokens_streamed_total",
                                                                              kind="text")
    assert tokens == 300
    assert value(after, "quanda_answers_total", outcome="done") - value(before, "quanda_answers_total",
                                                                      outcome="done") == 1
    assert value(after, "quanda_llm_requests_total", result="completed") >= 1
    assert value(after, "quanda_time_to_first_token_seconds_count") >= 1
    assert value(after, "quanda_token_to_frame_seconds_count") > value(before, "quanda_token_to_frame_seconds_count")
    assert value(after, "quanda_ws_frames_total", direction="out") > value(before, "quanda_ws_frames_total",
                                                                         direction="out")
    assert value(after, "quanda_ws_frames_total", direction="in") >= 1
    assert value(after, "quanda_store_operation_seconds_count", operation="append") > 0
    assert value(after, "quanda_leases_held") == 0  # (waited for above: a job that never ended fails there)
    labels = {name for (_n, pairs) in after for name, _v in pairs}
    assert not labels & {"owner", "workspace", "user", "message_id", "conversation"}


async def test_two_servers_on_one_database_each_count_their_own(tmp_path, llm):
    llm.script = Reply(chunks=["a ", "b ", "c"])
    env = dict(QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test",
               QUANDA_DB_URL=f"sqlite:///{tmp_path / 'shared.db'}")
    one, two = AppServer(tmp_path, **env).start(), AppServer(tmp_path, **env).start()
    try:
        async with httpx.AsyncClient(base_url=one.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api, \
                httpx.AsyncClient(base_url=two.url) as other:
            assert (await api.post("/api/chat/ask", json={"text": "hi"})).status_code == 201

            async def answered() -> bool:
                return value(await scrape(api), "quanda_answers_total", outcome="done") == 1
            await wait_for(answered, "the answer on the first server")
            assert value(await scrape(other), "quanda_tokens_streamed_total", kind="text") == 0
            assert value(await scrape(other), "quanda_answers_total", outcome="done") == 0
    finally:
        one.stop()
        two.stop()


async def test_workers_sharing_a_multiprocess_dir_show_their_sum(tmp_path, llm):
    llm.script = Reply(chunks=["x ", "y"])
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = dict(QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test",
               QUANDA_DB_URL=f"sqlite:///{tmp_path / 'shared.db'}", PROMETHEUS_MULTIPROC_DIR=str(folder))
    one, two = AppServer(tmp_path, **env).start(), AppServer(tmp_path, **env).start()
    try:
        async with httpx.AsyncClient(base_url=one.url, headers={"Authorization": f"Bearer {TOKEN}"}) as a, \
                httpx.AsyncClient(base_url=two.url, headers={"Authorization": f"Bearer {TOKEN}"}) as b:
            for client in (a, b):
                assert (await client.post("/api/chat/ask", json={"text": "hi"})).status_code == 201

                async def answered(client=client) -> bool:
                    entries = (await client.get("/api/chat/conversation")).json()["entries"]
                    return entries[-1].get("status") == "done"
                await wait_for(answered, "an answer")
            for client in (a, b):  # either worker shows both answers, once each
                assert value(await scrape(client), "quanda_answers_total", outcome="done") == 2
                assert value(await scrape(client), "quanda_tokens_streamed_total", kind="text") == 4
    finally:
        one.stop()
        two.stop()


def test_who_may_scrape():
    assert allowed(Settings(), "127.0.0.1", "") and allowed(Settings(), "::1", "")
    assert not allowed(Settings(), "192.0.2.7", "") and not allowed(Settings(), None, "")
    with_token = Settings(metrics_token="scrape-me")
    assert allowed(with_token, "192.0.2.7", "Bearer scrape-me")
    assert not allowed(with_token, "192.0.2.7", "Bearer wrong")
    assert allowed(Settings(metrics_public=1), "192.0.2.7", "")
