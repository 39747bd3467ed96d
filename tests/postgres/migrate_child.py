"""``python -m tests.postgres.migrate_child URL START``: migrate at the wall-clock time START.

Started several times at once by the migration test: each process waits for
the same moment, runs the migrations on its own connection and prints the
schema version the database had before (0: this process created it).
"""

from __future__ import annotations

import sys
import time

import psycopg

from trio_durable._storage._pg_schema import migrate


def main() -> None:
    url, start = sys.argv[1], float(sys.argv[2])
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(max(0.0, start - time.time()))
        print(migrate(conn), flush=True)


if __name__ == "__main__":
    main()
