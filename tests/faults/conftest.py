import pytest

from tests.backends import NO_POSTGRES, POSTGRES_URL, postgres_problem


@pytest.fixture
def postgres():
    """QUANDA_TEST_POSTGRES_URL (skipped, saying so, when unset; failing when set and unreachable)."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    problem = postgres_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return POSTGRES_URL
