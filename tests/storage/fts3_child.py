"""Child process of ``test_fts3_tokenizer_cannot_crash_the_process``.

Runs the steps that registered a tokenizer at a forged address and then used
it (a segfault, exit 139, when the guard allowed every function), printing
one line per step: the statement, then ``ok``, ``SqlError`` or the error.
Usage: ``python fts3_child.py DATA_DIR``.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
import trio

import trio_durable as td
from trio_durable.testing import run_in_object

STEPS = [
    "SELECT fts3_tokenizer('simple')",
    "SELECT fts3_tokenizer('evil', X'4141414141414141')",
    "CREATE VIRTUAL TABLE w USING fts3(c, tokenize=evil)",
    "INSERT INTO w VALUES ('boom')",
]


@attrs.define(eq=False)
class Target(td.DurableObject):
    async def noop(self) -> None:
        pass


async def main(data_dir: str) -> None:
    async with td.open_runtime({"targets": Target}, data_dir) as runtime:

        async def body(obj: Any, ctx: td.ObjectContext) -> None:
            for step in STEPS:
                try:
                    ctx.storage.sql.exec(step)
                except td.SqlError:
                    print(f"{step} -> SqlError", flush=True)
                except Exception as exc:
                    print(f"{step} -> {type(exc).__name__}: {exc}", flush=True)
                else:
                    print(f"{step} -> ok", flush=True)

        await run_in_object(runtime.namespace("targets").get_by_name("x"), body)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
