"""Helpers for testing durable objects (not imported by ``import trio_durable``).

Everything here works with pytest-trio's ``autojump_clock``: the runtime
reads time only from Trio's clock, so a 10-second hibernation test takes
milliseconds.

The pytest plugin (registered through the ``pytest11`` entry point) adds the
fixtures ``durable_data_dir`` and ``runtime_factory``; see
:mod:`trio_durable.testing._plugin`.
"""

from ._alarms import run_alarm as run_alarm
from ._helpers import evict as evict
from ._helpers import list_object_ids as list_object_ids
from ._helpers import run_in_object as run_in_object
from ._websocket import open_websocket as open_websocket
