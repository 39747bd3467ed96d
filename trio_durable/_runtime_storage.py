"""Where a runtime keeps its data: the backend ``open_runtime`` chooses, and a cluster's leases.

``open_runtime`` takes at most one of ``data_dir`` (embedded SQLite, or
memory when ``None``), ``database`` (PostgreSQL) and ``backend`` (any
:class:`~trio_durable.Backend`). :func:`choose_backend` checks them and
``cluster`` first, naming the option at fault, and only then builds the
backend; nothing is created or opened before every check passed.
"""

from __future__ import annotations

import inspect
import os
from typing import Final

from ._cluster._leases import LeaseStore, SqliteLeaseStore
from ._cluster._member import ClusterSpec
from ._storage._backend import Backend
from ._storage._sqlite import DATABASE_NAME, SqliteBackend

__all__ = ["choose_backend", "lease_store_for"]


#: The methods a storage backend has (those of the `Backend` protocol).
_BACKEND_METHODS: Final = tuple(
    sorted(
        name
        for name, value in vars(Backend).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )
)


def _check_storage_options(
    data_dir: object, database: object, backend: object, cluster: object
) -> None:
    """Refuse a bad ``data_dir``, ``database``, ``backend`` or ``cluster``, naming it.

    Typed ``object``: the values come from users' code as they are, and are
    checked here at run time.
    """
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise TypeError(f"data_dir must be a path (str or os.PathLike) or None, got {data_dir!r}")
    if isinstance(data_dir, str) and not data_dir:
        raise ValueError("data_dir must not be empty (None keeps everything in memory)")
    if database is not None and not isinstance(database, str):
        raise TypeError(f"database must be a postgresql:// URL (a str) or None, got {database!r}")
    if backend is not None:
        missing = [name for name in _BACKEND_METHODS if not callable(getattr(backend, name, None))]
        if missing:
            raise TypeError(
                "backend must be a storage backend (td.SqliteBackend, or an object with the "
                f"methods of td.Backend), got {backend!r}, which lacks {', '.join(missing)}"
            )
    if cluster is not None and not isinstance(cluster, ClusterSpec):
        raise TypeError(
            "cluster must be a ClusterSpec (set by `trio-durable serve --workers N`) or None, "
            f"got {cluster!r}"
        )
    chosen = [
        name
        for name, value in (("data_dir", data_dir), ("database", database), ("backend", backend))
        if value is not None
    ]
    if len(chosen) > 1:
        raise TypeError(
            f"pass only one of data_dir, database and backend (got {' and '.join(chosen)})"
        )


def choose_backend(
    *,
    data_dir: str | os.PathLike[str] | None,
    database: str | None,
    backend: Backend | None,
    cluster: ClusterSpec | None,
) -> Backend:
    """The backend of ``open_runtime(data_dir=, database=, backend=, cluster=)``, not opened.

    Raises:
        TypeError, ValueError: an option is bad (the message names it), more
            than one of ``data_dir``, ``database`` and ``backend`` was given,
            or a cluster was asked for on a backend that cannot hold its
            leases (in memory).
        ImportError: ``database`` without psycopg installed.
    """
    _check_storage_options(data_dir, database, backend, cluster)
    if database is not None:
        # A cluster's nodes share the database; a runtime alone owns it.
        chosen = _postgres_backend(database, exclusive=cluster is None)
    elif backend is not None:
        chosen = backend
    else:
        chosen = SqliteBackend(data_dir)
    if cluster is not None:
        lease_store_for(chosen)  # refuses a backend that cannot hold leases, before opening
    return chosen


def lease_store_for(backend: Backend) -> LeaseStore:
    """Where a cluster on ``backend`` keeps its leases: in the same database.

    Raises:
        TypeError: the backend cannot hold a cluster's leases (in memory).
    """
    if isinstance(backend, SqliteBackend) and backend.data_dir is not None:
        return SqliteLeaseStore(backend.data_dir / DATABASE_NAME)
    postgres = _postgres_lease_store(backend)
    if postgres is not None:
        return postgres
    raise TypeError(
        f"a cluster needs its storage in a data directory or a database, not {backend!r}"
    )


def _postgres_lease_store(backend: Backend) -> LeaseStore | None:
    """Leases in the database of a PostgreSQL backend; ``None`` for another backend.

    Raises:
        TypeError: a PostgreSQL backend that does not share its database.
    """
    try:
        from ._cluster._pg_leases import PgLeaseStore
        from ._storage._postgres import PostgresBackend
    except ImportError:  # no psycopg: the backend cannot be a PostgresBackend
        return None
    if not isinstance(backend, PostgresBackend):
        return None
    if backend.exclusive:
        raise TypeError("a cluster's PostgresBackend shares its database: pass exclusive=False")
    return PgLeaseStore(backend.url, timeout=backend.timeout)


def _postgres_backend(database: str, *, exclusive: bool) -> Backend:
    """The backend for ``open_runtime(database=...)``; a bad URL is an error here, at the call."""
    try:
        from ._storage._postgres import PostgresBackend
    except ImportError as exc:  # psycopg is an optional dependency
        raise ImportError(
            f"open_runtime(database=...) needs psycopg 3 and psycopg_pool ({exc}); "
            "install them with: pip install 'trio_durable[postgres]'"
        ) from exc
    return PostgresBackend(database, exclusive=exclusive)
