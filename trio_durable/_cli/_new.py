"""``trio-durable new NAME``: a small working project to start from.

The scaffold is one module (a durable object, a worker and the ``App``), a
test file that uses :mod:`trio_durable.testing` and ``autojump_clock``, a
``pyproject.toml`` with the pytest settings those tests need, and a README
with the command that runs it and the one that tests it. Its tests pass
right after creation (``tests/cli/test_new.py`` runs them).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import keyword
import os
import re
import sys
from pathlib import Path
from string import Template

from ._common import Commands, UsageError

__all__ = ["add_parser", "create_project", "run"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def add_parser(commands: Commands) -> None:
    """Add ``new`` to the command line."""
    parser = commands.add_parser(
        "new",
        help="create a project to start from",
        description=(
            "Create ./NAME: a durable object, a worker, tests using trio_durable.testing "
            "and the pytest settings they need, and a README with the commands to run "
            "and test it."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the project's name, e.g. my-counter")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``new`` with parsed arguments; returns the exit status."""
    project = create_project(Path.cwd(), args.name)
    module = module_name(args.name)
    print(f"created {project}/ with {module}.py, tests/ and a README")
    print(f"next:  cd {args.name} && python -m trio_durable serve {module}:app")
    return 0


def module_name(name: str) -> str:
    """The Python module of project ``name`` ("my-counter" → "my_counter")."""
    return name.replace("-", "_")


def check_name(name: str) -> str:
    """Return the module name for project ``name``.

    Raises:
        UsageError: the name is not a letter then letters, digits, ``-`` or
            ``_``; is a Python keyword; or its module would shadow one that
            is already installed (so ``import`` in the new project would get
            the wrong one).
    """
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid project name {name!r}: use a letter, then letters, digits, '-' or '_'"
        )
    module = module_name(name)
    if keyword.iskeyword(module):
        raise UsageError(f"invalid project name {name!r}: {module!r} is a Python keyword")
    cwd = os.getcwd()
    search = [entry for entry in sys.path if entry not in ("", cwd)]
    if (
        module in sys.stdlib_module_names
        or module in sys.builtin_module_names
        or importlib.machinery.PathFinder.find_spec(module, search) is not None
    ):
        raise UsageError(
            f"invalid project name {name!r}: its module {module!r} would shadow the "
            f"installed module of that name; pick another name"
        )
    return module


def create_project(parent: Path, name: str) -> Path:
    """Write the scaffold of project ``name`` into ``parent / name``; return that path.

    Raises:
        UsageError: invalid name (see :func:`check_name`), or ``parent / name``
            exists and is not an empty directory.
    """
    module = check_name(name)
    root = parent / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        what = "directory" if root.is_dir() else "file"
        raise UsageError(f"{str(root)!r} already exists and is a non-empty {what}")
    files = {
        f"{module}.py": _MODULE,
        f"tests/test_{module}.py": _TESTS,
        "tests/__init__.py": "",
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        ".gitignore": _GITIGNORE,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(name=name, module=module))
    return root


_MODULE = '''\
"""$name: a trio_durable app.

Run it with ``python -m trio_durable serve $module:app`` (or ``dev`` instead
of ``serve`` to reload on every change), then::

    curl -X POST http://127.0.0.1:8787/counter/hello     # {"count": 1}
    curl http://127.0.0.1:8787/counter/hello             # {"count": 1}
"""

from __future__ import annotations

import attrs

import trio_durable as td


@attrs.define(eq=False)
class Counter(td.DurableObject):
    """One counter per name. The count is stored, so it outlives hibernation and restarts."""

    async def increment(self, by: int = 1) -> int:
        """Add ``by`` to the count; returns the new count. Callable over RPC."""
        count = await self.count() + by
        await self.ctx.storage.put("count", count)
        return count

    async def count(self) -> int:
        """The current count (0 for a new counter)."""
        value: int | None = await self.ctx.storage.get("count")
        return value or 0

    async def fetch(self, request: td.Request) -> td.Response:
        """HTTP: POST increments, GET reads."""
        if request.method == "POST":
            return td.Response.json({"count": await self.increment()})
        return td.Response.json({"count": await self.count()})


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    """Route ``/counter/<name>`` to the counter of that name."""
    parts = request.path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "counter" and parts[1]:
        counters = runtime.namespace("counters")
        return await counters.get_by_name(parts[1]).fetch(request)
    if request.path == "/":
        return td.Response.text("POST /counter/<name> to count, GET to read\\n")
    return td.Response.text("not found\\n", status=404)


app = td.App(worker=worker, objects={"counters": Counter})
'''

_TESTS = '''\
"""Tests of $module: ``python -m pytest``.

``runtime_factory`` (a fixture of trio_durable's pytest plugin) opens a
runtime on a fresh data directory for each test; ``autojump_clock`` (from
pytest-trio) makes a test that waits seconds run in milliseconds.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

import trio_durable as td
from trio_durable.testing import evict, list_object_ids, run_alarm, run_in_object

from $module import app, worker


async def test_increment_counts(runtime_factory: Any) -> None:
    async with runtime_factory(objects=app.objects) as runtime:
        hello = runtime.namespace("counters").get_by_name("hello")
        assert await hello.increment() == 1
        assert await hello.increment(by=2) == 3


async def test_the_count_outlives_hibernation(
    runtime_factory: Any, autojump_clock: trio.testing.MockClock
) -> None:
    async with runtime_factory(objects=app.objects) as runtime:
        hello = runtime.namespace("counters").get_by_name("hello")
        await hello.increment()
        await trio.sleep(11)  # idle past hibernate_after (10 s): takes milliseconds
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.statistics().live_objects == 0, "the counter hibernated"
        assert await hello.increment() == 2, "a new instance read the stored count"


async def test_the_count_outlives_a_restart(runtime_factory: Any) -> None:
    async with runtime_factory(objects=app.objects) as runtime:
        await runtime.namespace("counters").get_by_name("hello").increment()
    async with runtime_factory(objects=app.objects) as runtime:  # same data directory
        assert await runtime.namespace("counters").get_by_name("hello").count() == 1


async def test_helpers_look_inside(runtime_factory: Any) -> None:
    async with runtime_factory(objects=app.objects) as runtime:
        counters = runtime.namespace("counters")
        hello = counters.get_by_name("hello")
        await hello.increment()
        stored = await run_in_object(hello, lambda counter, ctx: ctx.storage.get("count"))
        assert stored == 1
        assert await evict(hello), "it was live"
        assert [object_id.name for object_id in await list_object_ids(counters)] == ["hello"]
        assert not await run_alarm(hello), "no alarm was set"


async def test_worker_routes_http(runtime_factory: Any) -> None:
    async with runtime_factory(objects=app.objects) as runtime:
        post = td.Request(method="POST", url="http://test/counter/hello")
        assert json.loads((await worker(post, runtime)).body) == {"count": 1}
        get = td.Request(url="http://test/counter/hello")
        assert json.loads((await worker(get, runtime)).body) == {"count": 1}
        missing = td.Request(url="http://test/nowhere")
        assert (await worker(missing, runtime)).status == 404
'''

_PYPROJECT = """\
[project]
name = "$name"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["trio_durable"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-trio>=0.8"]

[tool.pytest.ini_options]
# pytest-trio runs every async test in Trio (and gives autojump_clock).
trio_mode = true
# So that tests import $module from this directory without installing it.
pythonpath = ["."]
testpaths = ["tests"]
"""

_README = """\
# $name

A trio_durable app: a `Counter` durable object per
name, reached over HTTP (`$module.py`), and its tests (`tests/`).

Run it, then `curl -X POST http://127.0.0.1:8787/counter/hello`:

```sh
python -m trio_durable serve $module:app --port 8787
```

Test it:

```sh
python -m pip install -q "pytest>=8" "pytest-trio>=0.8" && python -m pytest -q
```

`python -m trio_durable dev $module:app` serves it too, restarting on every
change to a `.py` file, with a log line per request.
"""

_GITIGNORE = """\
__pycache__/
/data/
"""
