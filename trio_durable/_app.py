"""The :class:`App` record: what ``trio-durable serve module:app`` runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._gateway._serve import Worker
from ._object import DurableObject

__all__ = ["App"]


def _check_worker(instance: App, attribute: attrs.Attribute[Worker], value: Worker) -> None:
    if not callable(value):
        raise TypeError(f"App.worker must be an async function, got {value!r}")


def _check_objects(
    instance: App,
    attribute: attrs.Attribute[Mapping[str, type[DurableObject]]],
    value: Mapping[str, type[DurableObject]],
) -> None:
    if not isinstance(value, Mapping) or not value:
        raise TypeError("App.objects must be a non-empty mapping of namespace name to class")


@attrs.frozen(eq=False)
class App:
    """A servable application: a worker and the object classes it reaches.

    ::

        app = td.App(worker=worker, objects={"rooms": ChatRoom, "limiters": RateLimiter})

    Then ``trio-durable serve mymodule:app --port 8787`` opens a runtime with
    ``objects`` and ``env`` on ``--data-dir`` and serves ``worker`` with
    :func:`~trio_durable.serve`, which is what this does by hand::

        async with td.open_runtime(app.objects, data_dir, env=app.env) as runtime:
            await td.serve(runtime, app.worker, host=host, port=port)

    Attributes:
        worker: ``async worker(request, runtime) -> Response``, called for every
            HTTP request and WebSocket upgrade.
        objects: Namespace name → :class:`~trio_durable.DurableObject` subclass.
        env: Any value the objects see as ``self.env`` (configuration).
    """

    worker: Worker = attrs.field(validator=_check_worker)
    objects: Mapping[str, type[DurableObject]] = attrs.field(validator=_check_objects)
    env: Any = None
