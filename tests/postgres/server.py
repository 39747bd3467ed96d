"""A throwaway PostgreSQL server for tests, benchmarks and CI.

It installs nothing: it uses the server binaries of Debian's ``postgresql``
package (``/usr/lib/postgresql/<version>/bin``, the newest version found;
``TD_PG_BIN`` names another directory). :func:`start_server` runs
``initdb`` and ``pg_ctl start`` under a new temporary directory, on a free
port of 127.0.0.1, as the ``postgres`` user when we are root (the server
refuses to run as root) and as ourselves otherwise, and creates the database
``td``. :meth:`PostgresServer.close` stops the server and removes the
directory.

Authentication is ``trust`` for connections from this machine only: the
server listens on 127.0.0.1 and on a Unix socket inside its private
directory.

From a shell (``.ci/run``, a benchmark, a debugging session)::

    python -m tests.postgres.server        # prints the URL, stops on Ctrl-C
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "find_bin_dir",
    "running_server",
    "start_server",
]

#: The database every server starts with.
DEFAULT_DATABASE = "td"
#: Seconds ``pg_ctl`` may take to start or stop the server.
_PG_CTL_TIMEOUT = 60
#: Server settings: enough connections for several runtimes' pools, and logs
#: in the data directory's log file only.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


class PostgresUnavailable(RuntimeError):
    """A server cannot be started here; the message says why."""


def find_bin_dir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: ``TD_PG_BIN``, else Debian's newest.

    Raises:
        PostgresUnavailable: none was found.
    """
    override = os.environ.get("TD_PG_BIN")
    if override:
        candidates = [Path(override)]
    else:
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: [int(part) for part in re.findall(r"\d+", p.parent.name)] or [0],
            reverse=True,
        )
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    where = f"TD_PG_BIN={override!r}" if override else "/usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries (initdb, pg_ctl) in {where}; "
        "install Debian's postgresql package (apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define(eq=False)
class PostgresServer:
    """One running throwaway server (made by :func:`start_server`).

    Attributes:
        port: Its TCP port on 127.0.0.1.
        base_dir: The temporary directory holding its data, socket and log.
        bin_dir: Where its binaries are.
    """

    port: int
    base_dir: Path
    bin_dir: Path
    _user: str | None = None
    _running: bool = True
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _serial: int = 0

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def running(self) -> bool:
        """True between start and stop."""
        return self._running

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        """The URL of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, args: Sequence[str], *, timeout: float = _PG_CTL_TIMEOUT) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise PostgresUnavailable(
                f"{args[0]} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}\n{log}"
            )

    def _options(self) -> str:
        settings = {
            **_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(self.base_dir),
        }
        return " ".join(f"-c {key}={value}" for key, value in settings.items())

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`) on the same port and data."""
        with self._lock:
            self._run(
                ["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o",
                 self._options(), "-w", "-t", str(_PG_CTL_TIMEOUT), "start"]
            )  # fmt: skip
            self._running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` is pg_ctl's (``fast`` disconnects every client)."""
        with self._lock:
            if not self._running:
                return
            self._run(
                ["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t",
                 str(_PG_CTL_TIMEOUT), "stop"]
            )  # fmt: skip
            self._running = False

    def create_database(self, prefix: str = "t") -> str:
        """Create a new empty database (UTF-8, C collation) and return its URL."""
        with self._lock:
            self._serial += 1
            name = f"{prefix}_{os.getpid()}_{self._serial}"
        self.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, disconnecting its clients."""
        name = url.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, statement: str, database: str = "postgres") -> None:
        """Run one statement in autocommit mode (as the superuser)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement.encode())

    def close(self) -> None:
        """Stop the server (at once) and remove its directory. Idempotent."""
        try:
            if self.data_dir.exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_server() -> PostgresServer:
    """Create, start and return a throwaway server with the database ``td``.

    Raises:
        PostgresUnavailable: no binaries, or the server did not start (the
            message has the tool's output and the end of the server log).
    """
    bin_dir = find_bin_dir()
    user: str | None = None
    if os.geteuid() == 0:
        user = "postgres"
        try:
            owner = pwd.getpwnam(user)
        except KeyError:
            raise PostgresUnavailable(
                "running as root and there is no 'postgres' user to run the server as"
            ) from None
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root and runuser is missing")
    base_dir = Path(tempfile.mkdtemp(prefix="td-pg-"))
    if user is not None:
        os.chown(base_dir, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(port=0, base_dir=base_dir, bin_dir=bin_dir, user=user, running=False)
    try:
        server._run(
            ["initdb", "-D", str(server.data_dir), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            timeout=120,
        )  # fmt: skip
        for attempt in range(5):
            server.port = _free_port()
            try:
                server.start()
                break
            except PostgresUnavailable:
                # Someone took the port between our probe and the server's bind.
                if attempt == 4:
                    raise
        server.execute(f"CREATE DATABASE {DEFAULT_DATABASE}")
    except BaseException:
        server.close()
        raise
    return server


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """``with running_server() as server:`` — a server for the block, removed after it."""
    server = start_server()
    try:
        yield server
    finally:
        server.close()


def main() -> None:
    """Start a server, print its URL, and stop it on SIGINT or SIGTERM."""
    with running_server() as server:
        print(server.url(), flush=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
    print("stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
