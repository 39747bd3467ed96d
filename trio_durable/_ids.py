"""Object identity: IDs bound to their namespace, namespaces, and stubs.

An ID is 32 bytes shown as 64 hex characters: a 16-byte *body* followed by a
16-byte tag, ``HMAC-SHA256(secret, namespace, body)[:16]``. The secret is the
runtime's (kept by the storage backend, so every node of a deployment shares
it). A named ID's body is itself a keyed hash of the name, so the same name
always gives the same ID; a unique ID's body is random. Checking the tag
rejects a random 64-hex string and an ID minted by another namespace or
another deployment, with a clear ``ValueError``.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ._http import Request, Response

if TYPE_CHECKING:
    from ._object import DurableObject
    from ._registry import Registry

__all__ = ["HANDLER_NAMES", "DurableObjectId", "Invocation", "Namespace", "Stub"]

_BODY_BYTES = 16
_TAG_BYTES = 16
ID_HEX_LENGTH = 2 * (_BODY_BYTES + _TAG_BYTES)

#: Methods the runtime calls itself; a stub refuses them.
HANDLER_NAMES = frozenset({"alarm", "websocket_message", "websocket_close", "websocket_error"})


@attrs.frozen(repr=False)
class DurableObjectId:
    """The identity of one object: 64 hex characters bound to a namespace.

    IDs compare and hash by namespace and value; ``name`` is ``None`` for
    unique IDs and for IDs rebuilt with :meth:`Namespace.id_from_string`.
    Not constructible by hand: get IDs from a :class:`Namespace`.
    """

    namespace: str
    hex: str
    name: str | None = attrs.field(default=None, eq=False)

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        label = f" name={self.name!r}" if self.name is not None else ""
        return f"<DurableObjectId {self.namespace}:{self.hex[:12]}…{label}>"


class Invocation:
    """One call to an object: a method name and its arguments.

    This is the unit the registry dispatches. It holds plain values only, so
    a later multi-node transport can serialize it; nothing on the call path
    may rely on arguments crossing by reference. (A slotted plain class, not
    attrs: it is built once per call and sits on the hot path.)
    """

    __slots__ = ("args", "kwargs", "method")

    def __init__(
        self, method: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}

    def __repr__(self) -> str:
        return f"Invocation({self.method!r}, {self.args!r}, {self.kwargs!r})"


def _tag(secret: bytes, namespace: str, body: bytes) -> bytes:
    message = b"td-id\x00" + namespace.encode("utf-8") + b"\x00" + body
    return hmac.new(secret, message, hashlib.sha256).digest()[:_TAG_BYTES]


def _named_body(secret: bytes, namespace: str, name: str) -> bytes:
    message = b"td-name\x00" + namespace.encode("utf-8") + b"\x00" + name.encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()[:_BODY_BYTES]


_rpc_method_cache: dict[type, frozenset[str]] = {}


def rpc_methods(cls: type[DurableObject]) -> frozenset[str]:
    """The names a stub may call on ``cls``: public async methods, not handlers."""
    cached = _rpc_method_cache.get(cls)
    if cached is not None:
        return cached
    names = set()
    for name in dir(cls):
        if name.startswith("_") or name in HANDLER_NAMES:
            continue
        if inspect.iscoroutinefunction(getattr(cls, name, None)):
            names.add(name)
    result = _rpc_method_cache[cls] = frozenset(names)
    return result


def _refuse_reason(cls: type[DurableObject], name: str) -> tuple[type[Exception], str] | None:
    if name in rpc_methods(cls):
        return None
    owner = cls.__name__
    if name.startswith("_"):
        return AttributeError, f"{name!r} is private: a stub only calls public methods of {owner}"
    if name in HANDLER_NAMES:
        return TypeError, (
            f"{owner}.{name} is an event handler that the runtime calls itself; "
            "it cannot be called through a stub"
        )
    if not hasattr(cls, name):
        return AttributeError, f"{owner} has no method {name!r}"
    return TypeError, f"{owner}.{name} is not an async method, so it cannot be called over RPC"


class Namespace:
    """The IDs and stubs of one object class (``runtime.namespace("rooms")``)."""

    __slots__ = ("_registry", "_secret", "name", "object_class")

    def __init__(
        self, name: str, object_class: type[DurableObject], secret: bytes, registry: Registry
    ) -> None:
        self.name = name
        self.object_class = object_class
        self._secret = secret
        self._registry = registry

    def __repr__(self) -> str:
        return f"<Namespace {self.name!r} of {self.object_class.__name__}>"

    def id_from_name(self, name: str) -> DurableObjectId:
        """The ID for ``name``: the same name always gives the same ID."""
        if not isinstance(name, str):
            raise TypeError(f"an object name must be a str, got {type(name).__name__}")
        body = _named_body(self._secret, self.name, name)
        return self._make(body, name)

    def new_unique_id(self) -> DurableObjectId:
        """A fresh random ID that no name maps to."""
        return self._make(secrets.token_bytes(_BODY_BYTES), None)

    def id_from_string(self, hex_id: str) -> DurableObjectId:
        """Rebuild an ID from its 64-hex form (``str(id)``).

        Raises:
            ValueError: the string is not 64 hex characters, or was not minted
                by this namespace of this deployment (forged or foreign).
        """
        if not isinstance(hex_id, str):
            raise TypeError(f"an object ID string must be a str, got {type(hex_id).__name__}")
        if len(hex_id) != ID_HEX_LENGTH:
            raise ValueError(f"an object ID is {ID_HEX_LENGTH} hex characters; got {len(hex_id)}")
        try:
            raw = bytes.fromhex(hex_id)
        except ValueError:
            raise ValueError(f"an object ID must be hex; got {hex_id!r}") from None
        body, tag = raw[:_BODY_BYTES], raw[_BODY_BYTES:]
        if not hmac.compare_digest(tag, _tag(self._secret, self.name, body)):
            raise ValueError(
                f"{hex_id[:16]}… is not an ID of namespace {self.name!r}: "
                "it was forged or belongs to another namespace"
            )
        return DurableObjectId(self.name, raw.hex())

    def _make(self, body: bytes, name: str | None) -> DurableObjectId:
        return DurableObjectId(self.name, (body + _tag(self._secret, self.name, body)).hex(), name)

    def _check_own(self, object_id: DurableObjectId) -> None:
        if not isinstance(object_id, DurableObjectId):
            raise TypeError(f"expected a DurableObjectId, got {type(object_id).__name__}")
        if object_id.namespace != self.name:
            raise ValueError(
                f"ID {object_id.hex[:16]}… belongs to namespace {object_id.namespace!r}, "
                f"not {self.name!r}"
            )
        # An ID is a frozen value, but one could be built by hand: check the tag.
        self.id_from_string(object_id.hex)

    def get(self, object_id: DurableObjectId) -> Stub:
        """A stub for ``object_id``. Creates nothing: the first call activates the object."""
        self._check_own(object_id)
        return Stub(self, object_id)

    def get_by_name(self, name: str) -> Stub:
        """Shorthand for ``get(id_from_name(name))``."""
        return Stub(self, self.id_from_name(name))


class Stub:
    """A handle on one object: ``await stub.fetch(request)``, ``await stub.method(...)``.

    Getting a stub is free and creates nothing; the first call activates the
    object. Handlers (``alarm``, ``websocket_*``), private names and
    non-async attributes are refused.
    """

    __slots__ = ("_methods", "_namespace", "id")

    def __init__(self, namespace: Namespace, object_id: DurableObjectId) -> None:
        self._namespace = namespace
        self.id = object_id
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {}

    @property
    def name(self) -> str | None:
        """The name the ID was made from, or ``None`` for unique IDs."""
        return self.id.name

    @property
    def namespace(self) -> Namespace:
        """The namespace this stub belongs to."""
        return self._namespace

    def __repr__(self) -> str:
        return f"<Stub {self._namespace.name}:{self.id.hex[:12]}…>"

    async def fetch(self, request: Request) -> Response:
        """Send ``request`` to the object's ``fetch`` handler and return its response.

        Raises:
            TypeError: ``request`` is not a :class:`Request`, or ``fetch``
                did not return a :class:`Response`.
            ObjectResetError: the object was reset while the call waited.
            Exception: whatever ``fetch`` raised, with its original type.
        """
        if not isinstance(request, Request):
            raise TypeError(f"fetch() takes a trio_durable.Request, got {type(request).__name__}")
        refusal = _refuse_reason(self._namespace.object_class, "fetch")
        if refusal is not None:
            raise refusal[0](refusal[1])
        response = await self._namespace._registry.invoke(
            self._namespace, self.id, Invocation("fetch", (request,))
        )
        if not isinstance(response, Response):
            raise TypeError(
                f"{self._namespace.object_class.__name__}.fetch returned "
                f"{type(response).__name__}, not a trio_durable.Response"
            )
        return response

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        try:
            return self._methods[method]
        except KeyError:
            pass
        refusal = _refuse_reason(self._namespace.object_class, method)
        if refusal is not None:
            raise refusal[0](refusal[1])
        registry = self._namespace._registry
        namespace = self._namespace
        object_id = self.id

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await registry.invoke(namespace, object_id, Invocation(method, args, kwargs))

        call.__name__ = method
        call.__qualname__ = f"Stub.{method}"
        self._methods[method] = call
        return call
