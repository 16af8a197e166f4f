import pytest

from tests.backends import BACKENDS, NO_REAL_MONGO, REAL_MONGO_URL, make_store


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "mongo" and not REAL_MONGO_URL:
        pytest.skip(NO_REAL_MONGO)
    return request.param


@pytest.fixture
async def store(backend, tmp_path):
    store = await make_store(backend, tmp_path)
    yield store
    if backend == "mongo":
        await store._client.drop_database(store._db.name)
    await store.close()
