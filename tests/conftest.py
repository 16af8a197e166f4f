import pytest

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
