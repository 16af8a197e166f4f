import pytest

from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer
from tests.backends import (BACKENDS, NO_POSTGRES, NO_REAL_MONGO, POSTGRES_URL, REAL_MONGO_URL,
                            drop_postgres_schemas, make_store, postgres_problem)


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "mongo" and not REAL_MONGO_URL:
        pytest.skip(NO_REAL_MONGO)
    if request.param == "postgres":
        if not POSTGRES_URL:
            pytest.skip(NO_POSTGRES)
        problem = postgres_problem()
        if problem:  # the variable asks for PostgreSQL: an unreachable server fails the run, never skips it
            pytest.fail(problem, pytrace=False)
    return request.param


@pytest.fixture(autouse=True)
def _drop_postgres_schemas():
    """Every PostgreSQL store a test opened lives in its own schema: drop them after the test (this autouse
    fixture is set up first, so torn down last, after the stores are closed)."""
    yield
    if POSTGRES_URL:
        drop_postgres_schemas()


@pytest.fixture
async def store(backend, tmp_path):
    store = await make_store(backend, tmp_path)
    yield store
    if backend == "mongo":
        await store._client.drop_database(store._db.name)
    await store.close()


# -- a module's app server (`python main.py` in a subprocess) over the scripted LLM --------------------------
# A module that uses `server` says how its server differs in SERVER_ENV (e.g. QUANDA_API_TOKEN), and what the
# LLM answers in LLM_REPLY (default "ok"); a module that needs other shapes defines its own fixtures.

@pytest.fixture(scope="module")
def llm(request):
    with LLMTestServer(getattr(request.module, "LLM_REPLY", Reply(chunks=["ok"]))) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, llm, request):
    env = {"OLLAMA_HOST": llm.url, "OLLAMA_MODEL": "quanda-test", **getattr(request.module, "SERVER_ENV", {})}
    server = AppServer(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), **env).start()
    yield server
    server.stop()
