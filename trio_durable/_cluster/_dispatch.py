"""Calls to objects in a deployment of several processes: run here, or at the owner.

:class:`ClusterDispatcher` is the :class:`~trio_durable._stubs.Dispatcher`
of a worker process. A call to an object whose shard this process holds
runs here, exactly as in a single process. Any other is sent to the
member that holds the shard, over its link, and behaves the same:

* arguments and results cross as RPC encodings of the value codec, so the
  callee gets copies and records keep their class (see ``_remote.py``);
* an exception arrives with its type (or as ``RemoteError``);
* cancelling the caller cancels the call at the owner;
* while no member holds the shard (its owner died and the lease has not
  moved yet), the call waits for the next owner, up to ``call_timeout``;
  then :class:`~trio_durable.ObjectUnavailableError`, or
  :class:`~trio_durable.StorageError` when the deployment's storage is
  out of reach. A link that breaks after the call was sent raises
  :class:`~trio_durable.ObjectResetError` (the call may or may not have
  run, as when an object is reset).

A WebSocket upgrade for an object of another process goes there with the
client's connection: as a descriptor to a worker of this node, through a
byte relay (``_proxy.py``) to another node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import trio

from .. import _codec
from .._core._live import State, current_object
from .._exceptions import ObjectResetError, ObjectUnavailableError, StorageError
from .._gateway._handoff import CURRENT_HANDOFF, UpgradeHandoff, answer_on, upgrades_of
from .._http import Response
from .._ids import DurableObjectId, shard_of
from .._limits import MAX_PROXIED_CONNECTIONS
from .._stubs import Invocation, LocalDispatcher, Namespace
from .._websocket._hub import MovedObject, MovedSocket
from ._link import MAX_FDS_PER_FRAME, PROXY, Connection, LinkClosedError, LinkUnavailableError
from ._member import ClusterMember, ShardNotHeldError
from ._placement import Member
from ._proxy import relay
from ._remote import AppClasses, encode_error, rebuild_error
from ._shards import LocalShards

__all__ = ["ClusterDispatcher"]

logger: Final = logging.getLogger("trio_durable.cluster")

#: What one attempt returns when the call must be tried again elsewhere.
_RETRY: Final = object()

#: Pause between two attempts to find an object's owner.
_RETRY_PAUSE: Final = 0.05
#: Seconds the node that relays an upgrade waits for it to arrive.
_PROXY_REQUEST_TIMEOUT: Final = 10.0


class ClusterDispatcher:
    """Runs calls where their object lives, in this process or another.

    Args:
        member: This process's membership (leases, owners, links).
        local: Runs calls on objects of this process.
        namespace: Namespace[Any] name → :class:`Namespace` (to rebuild stubs).
        classes: The classes that may cross this process's boundary.
    """

    def __init__(
        self,
        member: ClusterMember,
        local: LocalDispatcher,
        namespace: Callable[[str], Namespace[Any]],
        classes: AppClasses,
    ) -> None:
        self._member = member
        self._local = local
        self._namespace = namespace
        self._classes = classes
        member.on("invoke", self._serve_invoke)
        member.on("upgrade", self._serve_upgrade)
        member.on("adopt", self._serve_adopt)
        member.on_proxy(self._serve_proxy)
        #: WebSocket connections this process relays to other nodes now.
        self.proxied = 0
        #: The runtime whose gateway completes handed-over upgrades (set by the runtime).
        self.runtime: Any = None
        #: Where adopted sockets wait for their shard (set by the runtime).
        self.shards: LocalShards | None = None

    async def invoke(
        self, namespace: Namespace[Any], object_id: DurableObjectId, invocation: Invocation
    ) -> Any:
        """Run one call on its object, wherever it lives; return (a copy of) its result.

        Raises:
            TypeError: an argument or the result is not data.
            ObjectUnavailableError: no process ran the object within ``call_timeout``.
            ObjectResetError: the owner went away during the call (its cause
                is an ``ObjectUnavailableError``: the call may or may not
                have run).
            Exception: what the object raised, with its type when it may be rebuilt.
        """
        member = self._member
        shard = shard_of(object_id.hex)
        payload: tuple[bytes, bytes] | None = None
        deadline = trio.current_time() + member.spec.call_timeout
        while True:
            if member.holds(shard):
                try:
                    return await self._local.invoke(namespace, object_id, invocation)
                except ShardNotHeldError:
                    pass  # the lease lapsed between the check and the event
            else:
                owner = member.owner_of(shard)
                if owner is not None and owner.member_id != member.member.member_id:
                    handoff = _offered_connection(invocation)
                    if handoff is not None:
                        if member.same_node(owner):
                            result = await self._hand_over(owner, namespace, object_id, handoff)
                        else:
                            result = await self._relay(owner, namespace, object_id, handoff)
                        if result is not _RETRY:
                            return result
                        continue
                    if payload is None:
                        payload = (
                            _codec.encode_call(invocation.args, where="args"),
                            _codec.encode_call(invocation.kwargs, where="kwargs"),
                        )
                    result = await self._call_remote(
                        owner, namespace, object_id, invocation, payload
                    )
                    if result is not _RETRY:
                        return result
            unreachable = member.storage_unreachable()
            if unreachable is not None:
                raise StorageError(
                    f"{object_id!r} cannot run: the deployment's storage is out of reach "
                    f"({unreachable}); nothing was run"
                ) from unreachable
            if trio.current_time() >= deadline:
                raise ObjectUnavailableError(
                    f"no process of the deployment ran {object_id!r} within "
                    f"{member.spec.call_timeout:g} s (call_timeout); nothing was run"
                )
            member.request_round()
            await trio.sleep(_RETRY_PAUSE)

    async def _call_remote(
        self,
        owner: Any,
        namespace: Namespace[Any],
        object_id: DurableObjectId,
        invocation: Invocation,
        payload: tuple[bytes, bytes],
    ) -> Any:
        """One attempt at the owner; ``_RETRY`` when it does not hold the object."""
        caller = current_object()
        try:
            peer = await self._member.peer(owner)
            body = [namespace.name, object_id.hex, object_id.name, invocation.method, *payload]
            try:
                reply, fds = await peer.call("invoke", body)
            except LinkUnavailableError:
                return _RETRY  # nothing was sent: find the owner again
            except LinkClosedError as exc:
                raise ObjectResetError(
                    f"the process running {object_id!r} went away during the call; "
                    "it may or may not have run"
                ) from _gone(object_id, exc)
        except LinkClosedError:
            return _RETRY  # could not connect: its owner may have changed
        finally:
            if caller is not None and caller.state is not State.CLOSED:
                await caller.input_gate.pass_through()
        for fd in fds:  # no call answers with descriptors
            _close(fd)
        kind = reply[0]
        if kind == "ok":
            allowed = self._classes.allowed(namespace.object_class, invocation.method)
            return _codec.decode_call(
                reply[1], allowed=allowed, resolve_handle=self._resolve, where="result"
            )
        if kind == "raise":
            raise rebuild_error(reply[1], self._classes)
        return _RETRY  # "moved": the owner changed since our last round

    async def _serve_invoke(self, op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        for fd in fds:
            _close(fd)
        namespace_name, hex_id, name, method, args_data, kwargs_data = body
        try:
            namespace = self._namespace(namespace_name)
        except KeyError as exc:
            return ["raise", encode_error(exc)], ()
        object_id = DurableObjectId(namespace.name, hex_id, name)
        if not self._member.holds(shard_of(hex_id)):
            return ["moved"], ()
        allowed = self._classes.allowed(namespace.object_class, method)
        try:
            args = _codec.decode_call(
                args_data, allowed=allowed, resolve_handle=self._resolve, where="args"
            )
            kwargs = _codec.decode_call(
                kwargs_data, allowed=allowed, resolve_handle=self._resolve, where="kwargs"
            )
            result = await self._local.invoke(
                namespace, object_id, Invocation(method, tuple(args), dict(kwargs))
            )
            return ["ok", _codec.encode_call(result, where="result")], ()
        except ShardNotHeldError:
            return ["moved"], ()
        except Exception as exc:
            return ["raise", encode_error(exc)], ()

    async def _hand_over(
        self,
        owner: Any,
        namespace: Namespace[Any],
        object_id: DurableObjectId,
        handoff: UpgradeHandoff,
    ) -> Any:
        """Send an upgrade's ``fetch`` with its connection to the owner, which answers on it.

        Returns the object's response (without its WebSocket, which stays
        with the owner), or ``_RETRY``.
        """
        try:
            peer = await self._member.peer(owner)
            body = [
                namespace.name,
                object_id.hex,
                object_id.name,
                _codec.encode_call(handoff.request, where="request"),
                handoff.trailing,
            ]
            reply, fds = await peer.call("upgrade", body, [handoff.sock.fileno()])
        except LinkUnavailableError:
            return _RETRY
        except LinkClosedError as exc:
            # The owner may have taken the connection: this process lets it go.
            handoff.taken = True
            raise ObjectResetError(
                f"the process running {object_id!r} went away during a WebSocket upgrade"
            ) from _gone(object_id, exc)
        for fd in fds:
            _close(fd)
        if reply[0] == "moved":
            return _RETRY
        handoff.taken = True
        if reply[0] == "raise":
            raise rebuild_error(reply[1], self._classes)
        return _codec.decode_call(reply[1], where="response")

    async def _serve_upgrade(self, op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        namespace_name, hex_id, name, request_data, trailing = body
        [fd] = fds
        if not self._member.holds(shard_of(hex_id)):
            _close(fd)  # the sender keeps its own descriptor and asks the owner
            return ["moved"], ()
        sock = socket.socket(fileno=fd)
        try:
            upgrades = upgrades_of(self.runtime)
            if upgrades is None:
                raise RuntimeError("this worker's gateway is not serving")
            namespace = self._namespace(namespace_name)
            request = _codec.decode_call(request_data, where="request")
            object_id = DurableObjectId(namespace.name, hex_id, name)
            response = await self._local.invoke(
                namespace, object_id, Invocation("fetch", (request,))
            )
        except ShardNotHeldError:
            sock.close()
            return ["moved"], ()
        except Exception as exc:
            sock.close()
            return ["raise", encode_error(exc)], ()
        await answer_on(
            upgrades, sock, request, response, trailing, write_timeout=upgrades.write_timeout
        )
        summary = Response(status=response.status, headers=response.headers)
        return ["ok", _codec.encode_call(summary, where="response")], ()

    async def _relay(
        self,
        owner: Any,
        namespace: Namespace[Any],
        object_id: DurableObjectId,
        handoff: UpgradeHandoff,
    ) -> Any:
        """Send an upgrade to the owner on another node, then relay the client's bytes to it.

        Returns the object's response (the owner answers the client itself,
        through the relay), or ``_RETRY``.
        """
        if self.proxied >= MAX_PROXIED_CONNECTIONS:
            raise ObjectUnavailableError(
                f"this process relays {self.proxied:,} WebSocket connections to other nodes "
                f"(MAX_PROXIED_CONNECTIONS is {MAX_PROXIED_CONNECTIONS:,})"
            )
        try:
            connection = await self._member.open_connection(owner, PROXY)
        except LinkClosedError:
            return _RETRY
        try:
            body = [
                namespace.name,
                object_id.hex,
                object_id.name,
                _codec.encode_call(handoff.request, where="request"),
                handoff.trailing,
            ]
            await connection.send(body)
            reply, fds = await connection.receive()
            for fd in fds:
                _close(fd)
        except BaseException as exc:
            connection.close()
            if isinstance(exc, LinkClosedError):
                # Nothing reached the client yet: the gateway answers it.
                raise ObjectResetError(
                    f"the node running {object_id!r} went away during a WebSocket upgrade"
                ) from _gone(object_id, exc)
            raise
        if reply[0] != "ok":
            connection.close()
            if reply[0] == "raise":
                raise rebuild_error(reply[1], self._classes)
            return _RETRY  # "moved"
        first = connection.take_buffered()
        owner_sock = trio.socket.from_stdlib_socket(connection.detach())
        client_sock = trio.socket.from_stdlib_socket(
            socket.socket(fileno=os.dup(handoff.sock.fileno()))
        )
        handoff.taken = True  # the gateway closes its descriptor; the relay keeps its own
        self.proxied += 1
        try:
            self._member.spawn(self._run_relay, client_sock, owner_sock, first)
        except LinkClosedError:
            self.proxied -= 1
            client_sock.close()
            owner_sock.close()
            raise ObjectResetError("this process is stopping") from None
        return _codec.decode_call(reply[1], where="response")

    async def _run_relay(
        self, client: trio.socket.SocketType, owner: trio.socket.SocketType, first: bytes
    ) -> None:
        try:
            await relay(client, owner, first)
        finally:
            self.proxied -= 1

    async def _serve_proxy(self, member_id: str, connection: Connection) -> None:
        """Answer an upgrade another node relays: the link connection stands for the client's."""
        try:
            with trio.fail_after(_PROXY_REQUEST_TIMEOUT):
                message, fds = await connection.receive()
            for fd in fds:
                _close(fd)
            namespace_name, hex_id, name, request_data, trailing = message
            if not self._member.holds(shard_of(hex_id)):
                await connection.send(["moved"])
                connection.close()
                return
            namespace = self._namespace(namespace_name)
            request = _codec.decode_call(request_data, where="request")
            object_id = DurableObjectId(namespace.name, hex_id, name)
            upgrades = upgrades_of(self.runtime)
            if upgrades is None:
                raise RuntimeError("this worker's gateway is not serving")
        except (LinkClosedError, trio.TooSlowError, ValueError, TypeError) as exc:
            logger.warning("refused a relayed upgrade from %s: %s", member_id, exc)
            connection.close()
            return
        except Exception as exc:
            with contextlib.suppress(LinkClosedError):
                await connection.send(["raise", encode_error(exc)])
            connection.close()
            return
        try:
            response = await self._local.invoke(
                namespace, object_id, Invocation("fetch", (request,))
            )
            summary = Response(status=response.status, headers=response.headers)
            await connection.send(["ok", _codec.encode_call(summary, where="response")])
        except ShardNotHeldError:
            with contextlib.suppress(LinkClosedError):
                await connection.send(["moved"])
            connection.close()
            return
        except LinkClosedError:
            connection.close()  # the relaying node went away: so did the client
            return
        except Exception as exc:
            with contextlib.suppress(LinkClosedError):
                await connection.send(["raise", encode_error(exc)])
            connection.close()
            return
        await answer_on(
            upgrades,
            connection.detach(),
            request,
            response,
            trailing,
            write_timeout=upgrades.write_timeout,
        )

    async def send_sockets(
        self, successor: Member, moving: list[tuple[MovedObject, list[socket.socket]]]
    ) -> None:
        """Hand objects' sockets (descriptors and state) to ``successor``, which adopts them.

        Raises:
            LinkClosedError: the successor cannot be reached, or runs on
                another node, where descriptors cannot go (the caller
                closes the sockets).
            RuntimeError: the successor refused them.
        """
        if not self._member.same_node(successor):
            raise LinkClosedError(
                f"{successor.member_id} runs on another node: sockets cannot move there"
            )
        peer = await self._member.peer(successor)
        for moved, socks in moving:
            for start in range(0, max(len(socks), 1), MAX_FDS_PER_FRAME):
                part = moved.sockets[start : start + MAX_FDS_PER_FRAME]
                fds = [sock.fileno() for sock in socks[start : start + MAX_FDS_PER_FRAME]]
                body = [
                    moved.namespace,
                    moved.hex_id,
                    moved.name,
                    moved.auto_response,
                    moved.event_timeout,
                    [attrs.astuple(state, recurse=False) for state in part],
                ]
                await peer.call("adopt", body, fds)

    async def _serve_adopt(self, op: str, body: Any, fds: list[int]) -> tuple[Any, Sequence[int]]:
        socks = [socket.socket(fileno=fd) for fd in fds]
        try:
            namespace_name, hex_id, name, auto_response, event_timeout, states = body
            namespace = self._namespace(namespace_name)
            upgrades = upgrades_of(self.runtime)
            if upgrades is None or self.shards is None:
                raise RuntimeError("this worker's gateway is not serving")
            moved = MovedObject(
                namespace_name,
                hex_id,
                name,
                tuple(auto_response) if auto_response is not None else None,
                event_timeout,
                [MovedSocket(*state) for state in states],
            )
            starts = self.runtime.sockets.import_object(
                moved, socks, namespace.object_class, upgrades.connection_home()
            )
        except Exception:
            for sock in socks:
                sock.close()
            raise
        shard = shard_of(hex_id)
        self.shards.adopted(shard, starts, held=self._member.holds(shard))
        return ["ok"], ()

    def _resolve(self, kind: str, reference: Any) -> Any:
        if kind != "stub":
            raise TypeError(f"a {kind!r} handle cannot cross to another process")
        namespace_name, hex_id, name = reference
        namespace = self._namespace(namespace_name)
        return namespace.get(DurableObjectId(namespace.name, hex_id, name))


def _gone(object_id: DurableObjectId, exc: LinkClosedError) -> ObjectUnavailableError:
    """The cause of a reset by a link that broke: the owner is out of reach, not at fault.

    (A gateway answers such a reset as it answers an unreachable owner;
    the object answers again where it runs next.)
    """
    gone = ObjectUnavailableError(f"the process running {object_id!r} is out of reach: {exc}")
    gone.__cause__ = exc
    return gone


def _offered_connection(invocation: Invocation) -> UpgradeHandoff | None:
    """The connection on offer, when this call is the ``fetch`` of its upgrade request."""
    handoff = CURRENT_HANDOFF.get()
    if (
        handoff is None
        or handoff.taken
        or invocation.method != "fetch"
        or len(invocation.args) != 1
        or invocation.args[0] is not handoff.request
    ):
        return None
    return handoff


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
