"""The supervisor of one node: N worker processes on one port.

:func:`run_cluster` (what ``trio-durable serve --workers N`` runs) takes the
data directory's lock (with a data directory: one node; with a PostgreSQL
database, the node joins the deployment that shares it), binds the
listening socket once, and starts N worker processes
(``python -m trio_durable worker ...``) that inherit the socket, the lock
and a control channel each. Then it watches them:

* a worker that dies (``kill -9`` included) has its leases revoked at once,
  so the others take its shards within a lease round, and it is started
  again in the same slot (it gets its shards back), with a back-off when it
  keeps dying at start;
* SIGTERM or SIGINT stops every worker (each closes its runtime: clients
  get Close 1001, buffered writes are committed) and the supervisor exits 0;
* SIGHUP is a rolling restart: for each slot in turn a successor starts
  beside the worker (re-importing the app's code), and once it serves, the
  old worker hands it its objects and open sockets and exits. Restarts run
  one at a time: a SIGHUP during one queues one more, which starts when it
  ends (the workers it already replaced may run code older than that
  SIGHUP); further SIGHUPs meanwhile are folded into the queued one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from .._storage._lock import DataDirLock
from ._control import ControlChannel
from ._leases import LeaseStore, SqliteLeaseStore

__all__ = ["SERVE_CLUSTER_COMMAND", "ClusterOptions", "run_cluster", "serve_cluster"]

#: The ``command`` of the options ``serve_cluster`` gives its workers: only
#: the options of a worker's runtime, server and storage are allowed in it.
SERVE_CLUSTER_COMMAND = "serve_cluster"

logger: Final = logging.getLogger("trio_durable.cluster")

#: Seconds a stopping worker may take before it is killed.
_STOP_TIMEOUT: Final = 30.0
#: Seconds a starting worker may take to say it serves.
_START_TIMEOUT: Final = 60.0
#: Restart back-off of a worker that keeps dying: first and longest pause.
_FIRST_BACKOFF: Final = 0.25
_MAX_BACKOFF: Final = 10.0
#: A worker that served this long before dying is restarted at once.
_HEALTHY_AFTER: Final = 10.0
#: How a worker gets the database URL (not on its command line, where ``ps`` shows it).
DATABASE_VARIABLE: Final = "TRIO_DURABLE_WORKER_DATABASE"


@attrs.frozen
class ClusterOptions:
    """How to run a cluster.

    Attributes:
        app: The app to serve, ``"module:attribute"`` (imported by each worker).
        workers: How many worker processes.
        host: Address to listen on.
        port: Port to listen on (0 picks one).
        data_dir: The data directory the workers share (without ``database``).
        lease_seconds: Shard lease time (see ``docs/cluster.md``).
        log_level: The workers' logging level.
        worker_args: More arguments for each worker's command line.
        database: A PostgreSQL URL: the node's workers keep everything
            there, and join every other node on it in one deployment.
        node: This node's name in the deployment (with ``database``);
            ``None``: ``HOSTNAME:PORT``.
        link_host: Where other nodes reach this node's workers (with
            ``database``); ``None``: ``host``, or this machine's address
            when ``host`` is a wildcard.
    """

    app: str
    workers: int = attrs.field(validator=attrs.validators.ge(1))
    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: str = "data"
    lease_seconds: float = 4.0
    log_level: str = "info"
    worker_args: Sequence[str] = ()
    database: str | None = None
    node: str | None = None
    link_host: str | None = None


@attrs.define(eq=False)
class _Worker:
    slot: int
    process: trio.Process
    control: ControlChannel
    member_id: str | None = None
    ready: trio.Event = attrs.field(factory=trio.Event)
    exited: trio.Event = attrs.field(factory=trio.Event)
    started_at: float = 0.0
    retiring: bool = False
    #: Why it refused to start (its app or its options), if it said so.
    refused: str | None = None
    #: Seconds to wait before restarting it if it dies soon after starting.
    backoff: float = _FIRST_BACKOFF


class _Supervisor:
    def __init__(
        self,
        options: ClusterOptions,
        listener: socket.socket,
        lock: DataDirLock | None,
        run_dir: str,
        store: LeaseStore,
    ) -> None:
        self.options = options
        self.listener = listener
        self.lock = lock
        self.run_dir = run_dir
        self.slots: dict[int, _Worker] = {}
        #: Every worker process not yet seen exiting (successors still starting too).
        self.running: set[_Worker] = set()
        self.stopping = False
        self.restart_wanted = trio.Event()
        self.restarting = False
        #: Set once every worker served at start.
        self.started = False
        self.store = store
        self.nursery: trio.Nursery | None = None
        self.node = ""
        self.link_host: str | None = None
        if options.database is not None:
            port = listener.getsockname()[1]
            self.node = options.node or f"{socket.gethostname()}:{port}"
            self.link_host = options.link_host or _reachable(options.host)

    def command(self, slot: int, control_fd: int) -> list[str]:
        o = self.options
        storage = (
            [f"--data-dir={o.data_dir}", f"--lock-fd={self.lock.fd}"]
            if self.lock is not None
            else [f"--node={self.node}", f"--link-host={self.link_host}"]
        )
        return [
            sys.executable,
            "-m",
            "trio_durable",
            "worker",
            o.app,
            f"--slot={slot}",
            *storage,
            f"--run-dir={self.run_dir}",
            f"--listen-fd={self.listener.fileno()}",
            f"--control-fd={control_fd}",
            f"--lease-seconds={o.lease_seconds}",
            f"--log-level={o.log_level}",
            *o.worker_args,
        ]

    async def start_worker(self, slot: int) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [self.listener.fileno(), theirs.fileno()]
        if self.lock is not None:
            fds.append(self.lock.fd)
        env = None
        if self.options.database is not None:
            env = {**os.environ, DATABASE_VARIABLE: self.options.database}
        try:
            process = await trio.lowlevel.open_process(
                self.command(slot, theirs.fileno()), pass_fds=fds, env=env
            )
        finally:
            theirs.close()
        worker = _Worker(slot, process, ControlChannel(trio.socket.from_stdlib_socket(ours)))
        worker.started_at = trio.current_time()
        self.running.add(worker)
        assert self.nursery is not None
        self.nursery.start_soon(self.watch, worker)
        return worker

    async def watch(self, worker: _Worker) -> None:
        """Follow one worker: its messages, then its exit (and restart it if it died)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read_control, worker)
            status = await worker.process.wait()
            nursery.cancel_scope.cancel()
        self.running.discard(worker)
        worker.exited.set()
        await worker.control.aclose()
        if worker.member_id is not None:
            # Its shards go to the others now, not when its leases expire.
            with trio.CancelScope(shield=True):
                try:
                    await self.store.revoke(worker.member_id)
                except Exception:
                    logger.exception("could not revoke the leases of %s", worker.member_id)
        if self.stopping or worker.retiring or self.slots.get(worker.slot) is not worker:
            return
        if worker.refused is not None and not self.started:
            return  # the cluster does not start (start_all says why)
        logger.warning(
            "worker %d (pid %d) exited with %s; restarting it",
            worker.slot,
            worker.process.pid,
            status,
        )
        served = trio.current_time() - worker.started_at
        # A worker that keeps dying at start is restarted less and less often.
        pause = 0.0 if served >= _HEALTHY_AFTER else worker.backoff
        await trio.sleep(pause)
        if self.stopping or self.slots.get(worker.slot) is not worker:
            return  # stopping, or a rolling restart's successor took the slot
        replacement = await self.start_worker(worker.slot)
        replacement.backoff = min(max(pause * 2, _FIRST_BACKOFF), _MAX_BACKOFF)
        self.slots[worker.slot] = replacement  # its own watcher follows it from now on

    async def read_control(self, worker: _Worker) -> None:
        while True:
            message = await worker.control.receive()
            if message is None:
                return
            if "ready" in message:
                worker.member_id = str(message["ready"])
                worker.ready.set()
                logger.info("worker %d (pid %d) serves", worker.slot, worker.process.pid)
            elif "refused" in message:
                worker.refused = str(message["refused"])

    async def start_all(self) -> str | None:
        """Start every worker and wait until each serves; why they refused, if they did."""
        for slot in range(self.options.workers):
            self.slots[slot] = await self.start_worker(slot)
        for worker in list(self.slots.values()):
            with trio.move_on_after(_START_TIMEOUT):
                await _first(worker.ready, worker.exited)
            if worker.refused is not None:
                # Its app or options: every worker would refuse them alike.
                return worker.refused
        return None

    def request_restart(self) -> None:
        """SIGHUP: a rolling restart now, or once the one under way ends."""
        if self.restarting:
            logger.info(
                "SIGHUP during a rolling restart: another one follows once this one is done"
            )
        self.restart_wanted.set()

    async def run_restarts(self) -> None:
        """Run the requested rolling restarts, one at a time."""
        while True:
            await self.restart_wanted.wait()
            self.restart_wanted = trio.Event()
            self.restarting = True
            try:
                await self.rolling_restart()
            finally:
                self.restarting = False

    async def rolling_restart(self) -> None:
        """Replace each worker in turn by a fresh process, handing over its sockets."""
        logger.info("rolling restart of %d worker(s)", len(self.slots))
        for slot in sorted(self.slots):
            if self.stopping:
                return
            successor = await self.start_worker(slot)
            with trio.move_on_after(_START_TIMEOUT):
                await _first(successor.ready, successor.exited)
            if not successor.ready.is_set():
                logger.error("the successor of worker %d did not start; keeping the old one", slot)
                successor.retiring = True
                successor.process.kill()
                continue
            # The slot's worker now: the one there before, or its
            # replacement if that one died meanwhile.
            old = self.slots[slot]
            self.slots[slot] = successor
            old.retiring = True
            # It may have exited meanwhile (its watcher closed the channel and
            # revoked its leases): there is nothing to drain then.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await old.control.send({"drain": successor.member_id})
            with trio.move_on_after(_STOP_TIMEOUT):
                await old.exited.wait()
            if not old.exited.is_set():
                logger.error("worker %d did not finish its hand-over in time; killing it", slot)
                old.process.kill()
                await old.exited.wait()
        logger.info("rolling restart done")

    async def stop_all(self) -> None:
        self.stopping = True
        workers = list(self.running)
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(_STOP_TIMEOUT):
            for worker in workers:
                await worker.exited.wait()
        for worker in workers:
            if worker.process.returncode is None:
                logger.error("worker %d did not stop in time; killing it", worker.slot)
                worker.process.kill()
        for worker in workers:
            await worker.exited.wait()


async def _first(*events: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        for event in events:

            async def wait(event: trio.Event = event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


def _reachable(host: str) -> str:
    """An address of this machine other nodes may reach: ``host``, unless it is a wildcard."""
    if host not in ("", "0.0.0.0", "::"):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (bound once, by the supervisor).

    Raises:
        OSError: the address cannot be bound (in use, not ours).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(4096)
        listener.set_inheritable(True)
    except BaseException:
        listener.close()
        raise
    return listener


async def serve_cluster(
    app: str,
    *,
    workers: int,
    host: str = "127.0.0.1",
    port: int,
    data_dir: str | os.PathLike[str] | None = None,
    database: str | None = None,
    node: str | None = None,
    link_host: str | None = None,
    lease_seconds: float = 4.0,
    log_level: str = "info",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``app`` with ``workers`` processes on one port until SIGTERM or SIGINT.

    ::

        trio.run(functools.partial(
            td.serve_cluster, "myapp:app", workers=4, port=8787, data_dir="data",
            hibernate_after=30, max_connections=20_000,
        ))

    What ``trio-durable serve MODULE:APP --workers N`` runs. This process
    becomes the supervisor: each worker is a new process that imports
    ``app`` (``"module:attribute"``, a :class:`~trio_durable.App`), so the
    app must be importable by name. One live instance per object ID across
    the workers; SIGHUP replaces the workers one by one without closing a
    WebSocket (see ``docs/cluster.md``). Returns once every worker stopped.

    With ``database`` instead of ``data_dir``, this process serves one node
    of a deployment: every node started on the same PostgreSQL database
    shares its objects, one live instance per ID across all of them.

    Args:
        app: The app to serve, ``"module:attribute"``.
        workers: How many worker processes (at least 1).
        host: The address to listen on.
        port: The port; ``0`` picks a free one (see ``task_status``).
        data_dir: The data directory the workers share (locked for the
            cluster: a second runtime on it is refused).
        database: A ``postgresql://`` URL instead of ``data_dir``: the
            database every node of the deployment shares.
        node: This node's name (with ``database``), stable across its
            restarts so it gets its objects back; default ``HOSTNAME:PORT``.
        link_host: The address the other nodes reach this node's workers
            on (with ``database``); default ``host``, or this machine's
            address when ``host`` is a wildcard.
        lease_seconds: How long a silent worker keeps its objects from the
            others (a dead one's are moved at once by this supervisor).
        log_level: The workers' logging level.
        task_status: Gets the bound port once every worker serves.
        **options: What each worker passes to ``open_runtime()`` and
            ``serve()``, and to its ``SqliteBackend`` (``durability``,
            ``max_open_sql``), as in ``trio-durable.toml``: plain data, so
            TLS is ``ssl_certfile``/``ssl_keyfile`` (not an ``SSLContext``)
            and ``authenticate`` is ``"module:function"``. Each worker
            checks them before it serves.

    Raises:
        TypeError: both or neither of ``data_dir`` and ``database``, or an
            option that is not plain data.
        ValueError: the workers refused to start: an unknown or bad option,
            or an app that cannot be imported (the message says which).
        StorageError: the data directory is in use by another runtime, or
            the database cannot be reached.
        OSError: the address cannot be bound.
    """
    if (data_dir is None) == (database is None):
        raise TypeError("serve_cluster() takes exactly one of data_dir and database")
    worker_args: tuple[str, ...] = ()
    if options:
        try:
            # The form trio-durable worker reads (_cli/_serve.py worker_config).
            text = json.dumps(
                {"command": SERVE_CLUSTER_COMMAND, "values": options, "given": sorted(options)}
            )
        except TypeError:
            raise TypeError(
                "serve_cluster()'s options travel to the workers as plain data (JSON); "
                f"got {options!r:.200}: give ssl_certfile and ssl_keyfile instead of "
                "ssl_context, and authenticate as 'module:function'"
            ) from None
        worker_args = (f"--options={text}",)
    cluster = ClusterOptions(
        app=app,
        workers=workers,
        host=host,
        port=port,
        data_dir=os.fspath(data_dir) if data_dir is not None else "",
        database=database,
        node=node,
        link_host=link_host,
        lease_seconds=lease_seconds,
        log_level=log_level,
        worker_args=worker_args,
    )
    await run_cluster(cluster, task_status=task_status)


async def run_cluster(
    options: ClusterOptions,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the workers until SIGTERM or SIGINT; SIGHUP restarts them one by one.

    Reports the bound port with ``task_status.started(port)``.

    Raises:
        ValueError: the workers refused to start (their app cannot be
            imported, or their options are refused).
        StorageError: the data directory is in use by another runtime.
        OSError: the address cannot be bound.
    """
    lock: DataDirLock | None = None
    store: LeaseStore
    if options.database is None:
        lock = DataDirLock.acquire(options.data_dir)
        os.set_inheritable(lock.fd, True)
        store = SqliteLeaseStore(Path(options.data_dir) / "trio_durable.sqlite3")
    else:
        from ._pg_leases import PgLeaseStore  # psycopg is needed only here

        store = PgLeaseStore(options.database)
    try:
        listener = bind_listener(options.host, options.port)
        run_dir = tempfile.mkdtemp(prefix="trio-durable-")  # 0700; short enough for AF_UNIX
        supervisor = _Supervisor(options, listener, lock, run_dir, store)
        try:
            await supervisor.store.setup()
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    supervisor.nursery = nursery
                    refused = await supervisor.start_all()
                    if refused is None:
                        supervisor.started = True
                        nursery.start_soon(supervisor.run_restarts)
                        task_status.started(listener.getsockname()[1])
                        async for signum in signals:
                            if signum == signal.SIGHUP:
                                supervisor.request_restart()
                                continue
                            break
                    await supervisor.stop_all()
                    nursery.cancel_scope.cancel()
                if refused is not None:
                    raise ValueError(f"the workers refused to start: {refused}")
        finally:
            listener.close()
            await supervisor.store.aclose()
            # Workers remove their own sockets; a killed one may leave one.
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        if lock is not None:
            lock.release()
