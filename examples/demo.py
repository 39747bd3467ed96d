"""The quick-start demo: a counter object reached over RPC, surviving hibernation.

Run it with ``python examples/demo.py`` (data goes to ``./demo-data``).
"""

from __future__ import annotations

import tempfile

import attrs
import trio

import trio_durable as td


@attrs.define(eq=False)
class Counter(td.DurableObject):
    """Counts calls in memory; the count resets when the object hibernates."""

    calls: int = 0

    async def increment(self) -> int:
        self.calls += 1
        return self.calls


async def main() -> None:
    data_dir = tempfile.mkdtemp(prefix="trio-durable-demo-")
    async with td.open_runtime(
        objects={"counters": Counter}, data_dir=data_dir, hibernate_after=0.5
    ) as runtime:
        counters = runtime.namespace("counters")
        home = counters.get_by_name("home")
        print("id of 'home':", home.id)
        for _ in range(3):
            print("home.increment() ->", await home.increment())
        print("waiting 1 s so 'home' hibernates (hibernate_after=0.5 for the demo)...")
        await trio.sleep(1)
        print("after hibernation, home.increment() ->", await home.increment())
        print("statistics:", runtime.statistics())
        ids = await runtime.list_object_ids("counters")
        print("objects ever activated:", [i.name for i in ids])


if __name__ == "__main__":
    trio.run(main)
