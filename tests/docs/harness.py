"""Every Python code block in README.md and docs/*.md runs as a test (Sybil).

A block runs as written, in one namespace per page, in a temporary current
directory (so ``data_dir="data"`` is harmless):

* a block with no top-level ``await`` is executed as a module would be;
* a block with a top-level ``await`` (or ``async with``/``async for``) runs
  in a Trio loop that lives as long as the page, so a later block sees what
  an earlier one stored;
* after ``run_blocks_inside(cls)`` (in a hidden block) every block runs
  *inside* a live object of ``cls`` (``self`` is the instance; the runtime
  is in memory and never hibernates it), which is how fragments of a method
  body (``await self.ctx.storage.put(...)``, ``self.ctx.storage.sql``) run;
  ``run_blocks_outside()`` goes back to the first two rules.

Pages steer this with HTML comments, which neither GitHub nor Sphinx shows:

* ``<!-- invisible-code-block: python ... -->``: hidden setup or checks;
* ``<!-- skip: next "the reason" -->``: a block that cannot run here (the
  reason is shown in the test report); keep these rare;
* in a hidden block, ``postgres_database()`` returns the URL of an empty
  database of the tests' throwaway PostgreSQL (``tests/postgres``): the
  block is skipped where none can be started, and fails under ``CI=true``;
* in a hidden block, ``serve_then_check(check)``: the next block's call of
  ``td.serve`` serves on a free port of 127.0.0.1 instead of the one
  written, runs ``check(base_url)`` (in a thread, with a real client) and
  then returns, so a server example runs to its end; the block must call
  ``td.serve``. The checks live in :mod:`tests.docs.checks`.

Every block is bounded in time: 60 s in the page's Trio loop; a sync block
that hangs ends the run with a traceback after 300 s (faulthandler).
"""

from __future__ import annotations

import ast
import faulthandler
import functools
import inspect
import os
import shutil
import tempfile
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
from sybil import Example, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser, SkipParser

import trio_durable
import trio_durable as td
from trio_durable.testing import run_in_object

from . import checks

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a block may take in the page's Trio loop.
BLOCK_TIMEOUT = 60.0
#: Seconds after which a hung synchronous block ends the run with a traceback.
HANG_TIMEOUT = 300.0

_LOOP = "__doc_loop__"
_SERVE_CHECK = "__serve_check__"
_CWD = "__doc_cwd__"


class DocLoop:
    """A Trio loop in a thread for one page, optionally with a runtime open in it."""

    def __init__(self) -> None:
        self.runtime: td.Runtime | None = None
        self.inside: td.Stub | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._objects: Mapping[str, type[td.DurableObject]] | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self, objects: Mapping[str, type[td.DurableObject]] | None = None) -> None:
        if self._thread is not None:
            if objects is not None and objects != self._objects:
                raise RuntimeError(
                    f"the page's runtime is already open with {self._objects}; "
                    "open it once, before any block needs it"
                )
            return
        self._objects = objects
        self._thread = threading.Thread(target=self._main, name="doc-loop", daemon=True)
        self._thread.start()
        self._ready.wait(BLOCK_TIMEOUT)
        if self._error is not None:
            raise self._error
        if self._token is None:
            raise RuntimeError("the page's Trio loop did not start")

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the waiting test
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        if self._objects is None:
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            return
        # In memory, and no hibernation between blocks: `storage = self.ctx.storage`
        # in one block is still the live object's storage in the next.
        async with td.open_runtime(self._objects, None, hibernate_after=3600) as runtime:
            self.runtime = runtime
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def run(self, code: types.CodeType, namespace: dict[str, Any]) -> None:
        self.start()
        assert self._token is not None
        trio.from_thread.run(self._run, code, namespace, trio_token=self._token)

    async def _run(self, code: types.CodeType, namespace: dict[str, Any]) -> None:
        with trio.fail_after(BLOCK_TIMEOUT):
            if self.inside is None:
                await types.FunctionType(code, namespace)()
                return

            async def body(instance: td.DurableObject, ctx: td.ObjectContext) -> None:
                namespace["self"] = instance
                try:
                    result = types.FunctionType(code, namespace)()
                    if inspect.isawaitable(result):  # a block with a top-level await
                        await result
                finally:
                    del namespace["self"]

            await run_in_object(self.inside, body)

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(BLOCK_TIMEOUT)
        if self._error is not None:
            raise self._error


@attrs.define
class ServeCheck:
    """What ``serve_then_check`` armed for the next block."""

    check: Callable[[str], None]
    served: bool = False


def evaluate(example: Example) -> None:
    """Run one Python block (see the module docstring)."""
    __tracebackhide__ = True
    namespace = example.namespace
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    code = compile(
        source, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    armed: ServeCheck | None = namespace.pop(_SERVE_CHECK, None)
    real_serve = trio_durable.serve
    if armed is not None:
        trio_durable.serve = functools.partial(_serve_and_check, real_serve, armed)  # type: ignore[assignment]
    try:
        loop: DocLoop = namespace[_LOOP]
        if code.co_flags & inspect.CO_COROUTINE or loop.inside is not None:
            loop.run(code, namespace)
        else:
            faulthandler.dump_traceback_later(HANG_TIMEOUT, exit=True)
            try:
                exec(code, namespace)
            finally:
                faulthandler.cancel_dump_traceback_later()
    finally:
        trio_durable.serve = real_serve
        namespace.pop("__builtins__", None)
    if armed is not None and not armed.served:
        raise AssertionError("serve_then_check() was armed, but the next block never served")


async def _serve_and_check(
    real_serve: Callable[..., Any],
    armed: ServeCheck,
    runtime: td.Runtime,
    worker: Any,
    *,
    host: str,
    port: int,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    # Serves as the block asked, but on a free loopback port, and only until
    # the check has run: then the block goes on to its end.
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            functools.partial(real_serve, runtime, worker, host="127.0.0.1", port=0, **options)
        )
        task_status.started(bound)
        with trio.fail_after(BLOCK_TIMEOUT):
            await trio.to_thread.run_sync(armed.check, f"http://127.0.0.1:{bound}")
        armed.served = True
        nursery.cancel_scope.cancel()


def setup(namespace: dict[str, Any]) -> None:
    """A page starts: a temporary current directory and the helpers hidden blocks use."""
    directory = Path(tempfile.mkdtemp(prefix="doc-"))
    namespace[_CWD] = (os.getcwd(), directory)
    os.chdir(directory)
    loop = DocLoop()
    namespace[_LOOP] = loop
    namespace["__name__"] = "__doc__"  # `if __name__ == "__main__":` stays False

    def run_blocks_inside(cls: type[td.DurableObject]) -> td.Stub:
        loop.start({"docs": cls})
        assert loop.runtime is not None
        loop.inside = loop.runtime.namespace("docs").get_by_name("example")
        return loop.inside

    def run_blocks_outside() -> None:
        loop.inside = None

    def open_page_runtime(objects: Mapping[str, type[td.DurableObject]]) -> td.Runtime:
        loop.start(objects)
        assert loop.runtime is not None
        return loop.runtime

    def serve_then_check(check: Callable[[str], None]) -> None:
        namespace[_SERVE_CHECK] = ServeCheck(check)

    def run_test(test: Callable[..., Any], **fixtures: Any) -> None:
        checks.run_test(test, directory, **fixtures)

    def postgres_database() -> str:
        # An empty database of the tests' throwaway PostgreSQL (the page is
        # skipped where there is none, and fails under CI=true).
        from tests.postgres.fixtures import database_url

        return database_url()

    namespace.update(
        run_blocks_inside=run_blocks_inside,
        run_blocks_outside=run_blocks_outside,
        open_page_runtime=open_page_runtime,
        serve_then_check=serve_then_check,
        run_test=run_test,
        postgres_database=postgres_database,
        checks=checks,
    )


def teardown(namespace: dict[str, Any]) -> None:
    """A page ends: stop its loop, go back to the first directory, remove the temporary one."""
    try:
        namespace[_LOOP].stop()
    finally:
        previous, directory = namespace[_CWD]
        os.chdir(previous)
        shutil.rmtree(directory, ignore_errors=True)


sybil = Sybil(
    parsers=[CodeBlockParser(language="python", evaluator=evaluate), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    path=str(ROOT),
    setup=setup,
    teardown=teardown,
)
