"""GET /api/openapi.json describes the HTTP API: every route under /api/ and /-/ that the app has, nothing it
has not; and real responses (successes and errors, from a real server and the scripted LLM) are what it says,
checked with openapi-schema-validator."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from openapi_schema_validator import OAS31Validator

from quanda.config import Settings
from quanda.openapi import described_routes, full_description, mounted_routes
from quanda.server import create_app
from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer

TOKEN = "openapi-token"


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["Fine, ", "thanks."])) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, llm):
    server = AppServer(tmp_path_factory.mktemp("openapi"), QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url,
                       OLLAMA_MODEL="quanda-test").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spec(server):
    response = httpx.get(server.url + "/api/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_description_names_every_route_and_no_other(tmp_path, spec):
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}"), entry_point_group=None)
    mounted = mounted_routes(app)
    assert ("POST", "/api/ag-ui") in mounted and ("GET", "/api/openapi.json") in mounted
    described = described_routes(spec)
    assert not mounted - described, f"routes missing from the description: {sorted(mounted - described)}"
    assert not described - mounted, f"described routes that do not exist: {sorted(described - mounted)}"
    assert described_routes(full_description()) == described
    assert spec["openapi"].startswith("3.1")
    OAS31Validator.check_schema(spec["components"]["schemas"]["RunAgentInput"])


def test_a_host_without_the_chat_is_described_without_it(tmp_path):
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}"), entry_point_group=None,
                     builtin=("quanda.http_api",))
    from starlette.testclient import TestClient
    with TestClient(app, base_url="http://127.0.0.1") as client:
        paths = client.get("/api/openapi.json").json()["paths"]
    assert "/api/messages" in paths and "/api/chat/ask" not in paths and "/api/ag-ui" not in paths


class Checker:
    """Sends requests and checks each response against the description."""

    def __init__(self, client: httpx.AsyncClient, spec: dict):
        self.client, self.spec, self.seen = client, spec, set()

    async def __call__(self, method: str, template: str, status: int, path: str | None = None, **kwargs):
        response = await self.client.request(method, path or template, **kwargs)
        assert response.status_code == status, f"{method} {path or template}: {response.status_code} {response.text}"
        declared = self.spec["paths"][template][method.lower()]["responses"].get(str(status))
        assert declared is not None, f"{method} {template} answered {status}, which the description does not list"
        self.seen.add((method, template, status))
        if "content" not in declared:
            assert not response.content
            return response
        media = response.headers["content-type"].split(";")[0]
        assert media in declared["content"], f"{method} {template}: {media} is not described"
        if media == "application/json":
            schema = {**declared["content"][media]["schema"], "components": self.spec["components"]}
            OAS31Validator(schema).validate(response.json())
        return response


async def test_real_responses_are_what_the_description_says(server, spec, llm):
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=20) as client:
        check = Checker(client, spec)
        created = (await check("POST", "/api/messages", 201, json={"role": "note", "content": "a"})).json()
        one = f"/api/messages/{created['id']}"
        await check("GET", "/api/messages/{message_id}", 200, one)
        await check("GET", "/api/messages/{message_id}", 404, "/api/messages/" + "0" * 24)
        await check("POST", "/api/messages/{message_id}/tokens", 200, one + "/tokens",
                    json={"kind": "chunk", "text": "b", "estimate": "…"})
        await check("POST", "/api/messages/{message_id}/tokens", 400, one + "/tokens", json={"kind": "nope"})
        await check("POST", "/api/messages/{message_id}/tokens", 413, one + "/tokens",
                    json={"kind": "chunk", "text": "x" * (1 << 20) + "x"})
        await check("POST", "/api/messages/{message_id}/immutable", 204, one + "/immutable")
        await check("POST", "/api/messages/{message_id}/tokens", 409, one + "/tokens", json={"kind": "chunk", "text": "c"})
        async with client.stream("GET", one + "/events") as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
        await check("POST", "/api/messages", 400, json={"role": "wizard"})
        await check("GET", "/api/chat/status", 200)
        asked = (await check("POST", "/api/chat/ask", 201, json={"text": "How are you?"})).json()
        await check("POST", "/api/chat/ask", 400, json={"text": ""})
        for _ in range(200):
            listed = (await check("GET", "/api/chat/conversation", 200)).json()
            if listed["entries"][-1].get("status") == "done":
                break
            await asyncio.sleep(0.05)  # the answer ends in the background: polled over HTTP
        await check("GET", "/api/chat/conversation", 400, "/api/chat/conversation?limit=0")
        answer = f"/api/chat/answers/{asked['answer_id']}"
        await check("POST", "/api/chat/answers/{message_id}/stop", 409, answer + "/stop")
        await check("POST", "/api/chat/answers/{message_id}/retry", 409, answer + "/retry")
        await check("POST", "/api/chat/answers/{message_id}/stop", 404, "/api/chat/answers/" + "0" * 24 + "/stop")
        await check("POST", "/api/messages/{message_id}/answer", 202, f"/api/messages/{asked['question_id']}/answer",
                    json={})
        assert not await answering(client), "the answer asked through /answer did not end"
        await check("POST", "/api/chat/new", 200)
        await check("POST", "/api/ag-ui", 400, json={"threadId": "t"})
        await check("GET", "/-/health", 200)
        await check("GET", "/-/plugins", 200)
        await check("GET", "/-/metrics", 200)
        await check("GET", "/api/openapi.json", 200)
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        await Checker(anonymous, spec)("GET", "/api/chat/status", 401)
    statuses = {status for _m, _t, status in check.seen}
    assert {200, 201, 202, 204, 400, 404, 409, 413} <= statuses


async def answering(client: httpx.AsyncClient) -> bool:
    for _ in range(200):
        if (await client.get("/api/chat/status")).json()["answering"] is None:
            return False
        await asyncio.sleep(0.05)  # the answer asked through /answer ends in the background
    return True
