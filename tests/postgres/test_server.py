"""The throwaway server of the tests, and the rule that CI cannot skip them."""

from __future__ import annotations

import psycopg
import pytest

from .fixtures import require_postgres
from .server import PostgresUnavailable, start_server


def test_outside_ci_a_missing_server_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not available: no binaries"):
        require_postgres("no binaries")


def test_under_ci_a_missing_server_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: tests that need PostgreSQL must run"):
        require_postgres("no binaries")


@pytest.mark.slow
def test_a_server_is_stopped_and_removed_by_close() -> None:
    try:
        server = start_server()  # one of this test's own
    except PostgresUnavailable as exc:
        require_postgres(str(exc))
        raise
    with psycopg.connect(server.url(), autocommit=True) as conn:
        row = conn.execute("SHOW server_encoding").fetchone()
    assert row == ("UTF8",), "it answers, with the database td"
    server.close()
    assert not server.base_dir.exists(), "its directory is gone"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url(), connect_timeout=2)
