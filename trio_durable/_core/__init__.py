"""The activation core: live objects, the registry, eviction timers, gates, clock, yield budget.

It knows nothing of storage, sockets, stubs or the runtime: what it needs
from above (how to build an instance, who to tell when an object is reset
or closed) is passed in as callables.
"""
