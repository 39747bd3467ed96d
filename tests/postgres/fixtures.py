"""pytest fixtures for a real PostgreSQL (a plugin: the root ``conftest.py`` loads it).

``postgres_server``
    One throwaway server for the whole session (:mod:`tests.postgres.server`),
    started the first time a test asks for it and removed at the end.
``postgres_url``
    The URL of an empty database for one test: a database of the session's
    server, emptied (its ``public`` schema dropped and made again, its other
    connections ended) before each test that gets it. Tests that need a
    database no one ever used call ``postgres_server.create_database()``.

Where no server can be started, a test that needs one is skipped with the
reason, except under ``CI=true``: there it fails, so that CI can never pass
without having run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .server import PostgresServer, PostgresUnavailable, start_server

__all__ = ["postgres_server", "postgres_url", "require_postgres"]


def require_postgres(reason: str) -> None:
    """Skip the test for ``reason`` outside CI; fail it under ``CI=true``."""
    message = f"PostgreSQL is not available: {reason}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message + " (CI=true: tests that need PostgreSQL must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        require_postgres(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield server
    finally:
        server.close()


_idle_databases: list[str] = []


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database, for this test alone."""
    if not postgres_server.running:
        postgres_server.start()  # a previous test stopped it and failed before restarting it
    url = _idle_databases.pop() if _idle_databases else postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    postgres_server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    postgres_server.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public", database=name)
    yield url
    _idle_databases.append(url)
