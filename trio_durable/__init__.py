"""trio_durable: Cloudflare-style Durable Objects for Python, on Trio.

The public API is exactly the set of names re-exported here.
"""

from ._alarms import AlarmInfo as AlarmInfo
from ._app import App as App
from ._exceptions import CommitFailedError as CommitFailedError
from ._exceptions import LimitExceededError as LimitExceededError
from ._exceptions import ObjectResetError as ObjectResetError
from ._exceptions import SqlError as SqlError
from ._exceptions import StorageError as StorageError
from ._exceptions import TrioDurableError as TrioDurableError
from ._exceptions import WebSocketClosedError as WebSocketClosedError
from ._exceptions import WebSocketProtocolError as WebSocketProtocolError
from ._http import Headers as Headers
from ._http import Request as Request
from ._http import Response as Response
from ._ids import DurableObjectId as DurableObjectId
from ._ids import Namespace as Namespace
from ._ids import Stub as Stub
from ._object import DurableObject as DurableObject
from ._object import ObjectContext as ObjectContext
from ._runtime import Runtime as Runtime
from ._runtime import RuntimeStatistics as RuntimeStatistics
from ._runtime import open_runtime as open_runtime
from ._storage._kv import Storage as Storage
from ._storage._kv import Transaction as Transaction
from ._storage._sql import SqlCursor as SqlCursor
from ._storage._sql import SqlStorage as SqlStorage
from ._websocket._gateway import serve as serve
from ._websocket._interop import connect_websocket as connect_websocket
from ._websocket._interop import hand_over_websocket as hand_over_websocket
from ._websocket._socket import WebSocket as WebSocket
from ._websocket._socket import WebSocketPair as WebSocketPair
from ._websocket._socket import WebSocketRequestResponsePair as WebSocketRequestResponsePair

__version__ = "0.1.0"
