"""pytest fixtures for a real PostgreSQL (a plugin: the root ``conftest.py`` loads it).

``postgres_server``
    One throwaway server (:mod:`tests.postgres.server`), started the first
    time a test (or a docs page, through :func:`database_url`) asks for it
    and removed when the test process exits.
``postgres_url``
    The URL of an empty database for one test: a database of that server,
    emptied (its ``public`` schema dropped and made again, its other
    connections ended) before each test that gets it. Tests that need a
    database no one ever used call ``postgres_server.create_database()``.

Where no server can be started, a test that needs one is skipped with the
reason, except under ``CI=true``: there it fails, so that CI can never pass
without having run them.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator

import pytest

from .server import PostgresServer, PostgresUnavailable, start_server

__all__ = ["database_url", "postgres_server", "postgres_url", "require_postgres", "shared_server"]

_server: PostgresServer | None = None
_unavailable: str | None = None
_idle_databases: list[str] = []


def require_postgres(reason: str) -> None:
    """Skip the test for ``reason`` outside CI; fail it under ``CI=true``."""
    message = f"PostgreSQL is not available: {reason}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message + " (CI=true: tests that need PostgreSQL must run)", pytrace=False)
    pytest.skip(message)


def shared_server() -> PostgresServer:
    """The process's throwaway server, started on first use (skip or fail if impossible)."""
    global _server, _unavailable
    if _server is None and _unavailable is None:
        try:
            import psycopg  # noqa: F401 (the tests' client)

            _server = start_server()
        except (ImportError, PostgresUnavailable) as exc:
            _unavailable = str(exc)
        else:
            atexit.register(_server.close)
    if _server is None:
        require_postgres(_unavailable or "unknown reason")
        raise AssertionError("unreachable")
    if not _server.running:
        _server.start()  # a test stopped it and failed before starting it again
    return _server


def database_url() -> str:
    """The URL of an empty database of the shared server (for one test or docs page)."""
    server = shared_server()
    url = _idle_databases.pop() if _idle_databases else server.create_database()
    name = url.rsplit("/", 1)[1]
    server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    server.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public", database=name)
    return url


def give_back(url: str) -> None:
    """The test is done with the database of ``url``: the next one may empty and reuse it."""
    _idle_databases.append(url)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """A throwaway PostgreSQL server for the session."""
    return shared_server()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database, for this test alone."""
    url = database_url()
    yield url
    give_back(url)
