"""The exceptions trio_durable raises.

::

    TrioDurableError                 base of everything below
    ├── ObjectResetError             the object was reset (abort, failed commit,
    │                                failure in the constructor, in
    │                                block_concurrency_while or in wait_until work)
    │                                while this call was waiting on it
    ├── StorageError                 the storage backend failed (our side)
    │   └── CommitFailedError        a commit did not reach the disk
    ├── ObjectUnavailableError       no process could run the object in time
    │                                (its owner died and no other took over)
    ├── RemoteError                  an object in another process raised an
    │                                exception whose type cannot be rebuilt
    │                                here; carries its type name and traceback
    ├── SqlError (also ValueError)   user SQL was refused (BEGIN, ATTACH, the
    │                                runtime's own _td_ tables, ...)
    ├── LimitExceededError (also ValueError)
    │                                a documented limit was exceeded; the message
    │                                names the limit and the value
    ├── WebSocketClosedError         receive() on a WebSocket whose connection
    │                                ended; carries ``code`` and ``reason``
    └── WebSocketProtocolError       the peer broke the WebSocket protocol (given
                                     to websocket_error); ``code`` and ``reason``
                                     are what we closed the socket with

Errors that Python or Trio already name are reused rather than wrapped:

* ``ValueError`` for malformed input (a forged or foreign object ID, a bad
  close code), ``TypeError`` for a value of the wrong type, ``AttributeError``
  for a stub method that does not exist;
* ``trio.ClosedResourceError`` for using something we closed (a runtime after
  ``open_runtime`` exited, a WebSocket after ``close()``);
* ``trio.BrokenResourceError`` when the other side failed (a WebSocket peer
  went away).

An exception raised by user code inside an object reaches the caller with its
original type.
"""

from __future__ import annotations

__all__ = [
    "CommitFailedError",
    "LimitExceededError",
    "ObjectResetError",
    "ObjectUnavailableError",
    "RemoteError",
    "SqlError",
    "StorageError",
    "TrioDurableError",
    "WebSocketClosedError",
    "WebSocketProtocolError",
]


class TrioDurableError(Exception):
    """Base class of the errors defined by trio_durable."""


class ObjectResetError(TrioDurableError):
    """The object was reset while this call was waiting on it.

    The instance was dropped; the next call builds a fresh one. ``__cause__``
    holds the error that caused the reset, when there was one.
    """


class ObjectUnavailableError(TrioDurableError):
    """No process of the deployment could run the object within the time allowed.

    Its owner died or stopped answering and no other process took it over
    in time. Nothing was run: the call may be retried.
    """


class RemoteError(TrioDurableError):
    """An object in another process raised an exception that cannot be rebuilt here.

    Builtin exceptions, trio_durable's and those defined in the app's own
    modules arrive with their type; any other arrives as this.

    Attributes:
        type_name: The remote exception's qualified type name.
        message: ``str()`` of the remote exception.
        remote_traceback: The remote traceback, formatted.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


class StorageError(TrioDurableError):
    """The storage backend failed."""


class CommitFailedError(StorageError):
    """A commit did not reach durable storage; the object was reset."""


class SqlError(TrioDurableError, ValueError):
    """User SQL was refused: it would manage transactions, attach a database, etc."""


class LimitExceededError(TrioDurableError, ValueError):
    """A documented limit was exceeded; the message names the limit and the value."""


class WebSocketClosedError(TrioDurableError):
    """The WebSocket connection ended; ``code`` and ``reason`` say how."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the WebSocket closed with code {code}: {reason!r}")
        self.code = code
        self.reason = reason


class WebSocketProtocolError(TrioDurableError):
    """The peer broke the WebSocket protocol; the connection was closed with ``code``.

    This is what ``websocket_error`` receives for a protocol violation.

    Attributes:
        code: The close code we sent (1002, 1007, 1008 or 1009).
        reason: The close reason we sent.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"WebSocket protocol error {code}: {reason}")
        self.code = code
        self.reason = reason
