"""Stored data and attachments are plain data (the value codec): stored bytes can never run code."""

from __future__ import annotations

import ast
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type hints
import pytest

import trio_durable
import trio_durable as td
from trio_durable.testing import open_websocket, run_in_object

#: Set when something unpickles an Evil payload (or pickles a Tripwire).
tripped: list[str] = []


class Evil:
    """Unpickling this runs code: exactly what must never happen."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (tripped.append, ("unpickled and ran code",))


@attrs.define
class Tripwire:
    """A value whose pickling is noticed."""

    secret: str = "s"

    def __reduce_ex__(self, protocol: Any) -> Any:
        tripped.append("pickled")
        return super().__reduce_ex__(protocol)


@attrs.define(eq=False)
class Keeper(td.DurableObject):
    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        server.serialize_attachment(Tripwire(secret="attached"))
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        value = ws.deserialize_attachment(Tripwire)
        await ws.send(value.secret)


OBJECTS: dict[str, type[td.DurableObject]] = {"keepers": Keeper}


@pytest.fixture(autouse=True)
def _untripped() -> None:
    tripped.clear()


def test_no_module_imports_a_code_running_serializer() -> None:
    forbidden = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"}
    root = Path(trio_durable.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in {"eval", "exec"}:
                names = [f"{node.func.id}()"]  # type: ignore[attr-defined]
            for name in names:
                if name.split(".")[0] in forbidden or name.endswith("()"):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    assert offenders == [], offenders


async def test_stored_values_are_plain_msgpack_on_disk_and_never_pickled(
    runtime_factory: Any, durable_data_dir: Path
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("keepers").get_by_name("k")

        async def store(obj: Any, ctx: td.ObjectContext) -> Tripwire:
            await ctx.storage.put("wire", Tripwire(secret="stored"))
            return await ctx.storage.get("wire", type=Tripwire)

        assert (await run_in_object(stub, store)).secret == "stored"
    assert tripped == [], "nothing was pickled"
    rows = _kv_rows(durable_data_dir)
    # The format byte, then MessagePack that a plain decoder (no hooks) reads.
    assert [(value[0], msgpack.unpackb(value[1:])) for value in rows] == [
        (0x01, {"secret": "stored"})
    ], rows


async def test_attachments_are_never_pickled(runtime_factory: Any) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("keepers").get_by_name("k")
        async with open_websocket(stub) as ws:
            await ws.send("what is attached?")
            assert await ws.receive() == "attached"
    assert tripped == [], "the attachment was not pickled"


async def test_a_pickle_planted_in_storage_is_not_executed(
    runtime_factory: Any, durable_data_dir: Path
) -> None:
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("keepers").get_by_name("k")

        async def store(obj: Any, ctx: td.ObjectContext) -> None:
            await ctx.storage.put("wire", "harmless")

        await run_in_object(stub, store)
    # An attacker with write access to the database swaps in a pickle.
    db = sqlite3.connect(_database(durable_data_dir))
    with db:
        db.execute("UPDATE _td_kv SET value = ?", (pickle.dumps(Evil()),))
    db.close()
    async with runtime_factory(objects=OBJECTS) as runtime:
        stub = runtime.namespace("keepers").get_by_name("k")

        async def load(obj: Any, ctx: td.ObjectContext) -> Any:
            return await ctx.storage.get("wire")

        # not a format this runtime writes: refused, as a storage fault naming the key
        with pytest.raises(td.StorageError, match=r"key 'wire' cannot be decoded"):
            await run_in_object(stub, load)
    assert tripped == [], "the planted pickle never ran"


def _database(data_dir: Path) -> Path:
    return data_dir / "trio_durable.sqlite3"


def _kv_rows(data_dir: Path) -> list[bytes]:
    db = sqlite3.connect(_database(data_dir))
    try:
        return [row[0] for row in db.execute("SELECT value FROM _td_kv")]
    finally:
        db.close()
