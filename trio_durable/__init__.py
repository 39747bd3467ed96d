"""trio_durable: Cloudflare-style Durable Objects for Python, on Trio.

The public API is exactly the set of names in ``__all__``; everything else
(modules whose names start with ``_``) is private and may change.
"""

from ._alarms import AlarmInfo as AlarmInfo
from ._app import App as App
from ._cluster._supervisor import serve_cluster as serve_cluster
from ._exceptions import CommitFailedError as CommitFailedError
from ._exceptions import LimitExceededError as LimitExceededError
from ._exceptions import ObjectResetError as ObjectResetError
from ._exceptions import ObjectUnavailableError as ObjectUnavailableError
from ._exceptions import RemoteError as RemoteError
from ._exceptions import SqlError as SqlError
from ._exceptions import StorageError as StorageError
from ._exceptions import TrioDurableError as TrioDurableError
from ._exceptions import WebSocketClosedError as WebSocketClosedError
from ._exceptions import WebSocketProtocolError as WebSocketProtocolError
from ._gateway._serve import serve as serve
from ._http import Headers as Headers
from ._http import Request as Request
from ._http import Response as Response
from ._ids import DurableObjectId as DurableObjectId
from ._object import DurableObject as DurableObject
from ._object import ObjectContext as ObjectContext
from ._runtime import Runtime as Runtime
from ._runtime import RuntimeStatistics as RuntimeStatistics
from ._runtime import open_runtime as open_runtime
from ._storage._backend import Backend as Backend
from ._storage._facade import Storage as Storage
from ._storage._sql import SqlCursor as SqlCursor
from ._storage._sql import SqlStorage as SqlStorage
from ._storage._sqlite import SqliteBackend as SqliteBackend
from ._storage._transaction import Transaction as Transaction
from ._stubs import Namespace as Namespace
from ._stubs import Stub as Stub
from ._websocket._auto_response import (
    WebSocketRequestResponsePair as WebSocketRequestResponsePair,
)
from ._websocket._interop import connect_websocket as connect_websocket
from ._websocket._interop import hand_over_websocket as hand_over_websocket
from ._websocket._socket import WebSocket as WebSocket
from ._websocket._socket import WebSocketPair as WebSocketPair

__version__ = "0.1.0"

__all__ = [
    "AlarmInfo",
    "App",
    "Backend",
    "CommitFailedError",
    "DurableObject",
    "DurableObjectId",
    "Headers",
    "LimitExceededError",
    "Namespace",
    "ObjectContext",
    "ObjectResetError",
    "ObjectUnavailableError",
    "RemoteError",
    "Request",
    "Response",
    "Runtime",
    "RuntimeStatistics",
    "SqlCursor",
    "SqlError",
    "SqlStorage",
    "SqliteBackend",
    "Storage",
    "StorageError",
    "Stub",
    "Transaction",
    "TrioDurableError",
    "WebSocket",
    "WebSocketClosedError",
    "WebSocketPair",
    "WebSocketProtocolError",
    "WebSocketRequestResponsePair",
    "connect_websocket",
    "hand_over_websocket",
    "open_runtime",
    "serve",
    "serve_cluster",
]


def _fix_module_names() -> None:
    # Public names report the package, not the private module that defines
    # them (as trio's fixup_module_metadata does): reprs, docs and pickling
    # refusals then name what users import.
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith(__name__ + "."):
            value.__module__ = __name__


_fix_module_names()
del _fix_module_names
