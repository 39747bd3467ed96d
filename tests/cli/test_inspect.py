"""``trio-durable inspect``: a real data directory, made through the runtime, read-only."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import trio_durable as td
from trio_durable import _codec

from ..postgres.server import PostgresServer
from .helpers import ROOT, Command, one_line_error, run


@attrs.define(eq=False)
class Room(td.DurableObject):
    async def fill(self, values: dict[str, Any], rows: int, alarm_in: float | None) -> None:
        await self.ctx.storage.put(values)
        if rows:
            self.ctx.storage.sql.exec("CREATE TABLE members (name TEXT)")
            for n in range(rows):
                self.ctx.storage.sql.exec("INSERT INTO members VALUES (?)", f"m{n}")
        if alarm_in is not None:
            await self.ctx.storage.set_alarm(self.ctx.now() + alarm_in)

    async def alarm(self, info: td.AlarmInfo) -> None:
        pass


VALUES = {"count": 3, "nested": {"a": [1, None]}, "text": "hi", "long": "x" * 500}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """rooms:lobby (4 keys, a SQL table of 2 rows, an alarm), a unique room, boxes:empty."""
    path = tmp_path / "data"

    async def make() -> None:
        async with td.open_runtime({"rooms": Room, "boxes": Room}, path) as runtime:
            rooms = runtime.namespace("rooms")
            await rooms.get_by_name("lobby").fill(VALUES, 2, 3600.0)
            await rooms.get(rooms.new_unique_id()).fill({"k": 1}, 0, None)
            await runtime.namespace("boxes").get_by_name("empty").fill({}, 0, None)

    trio.run(make)
    return path


def inspect_json(*args: str, cwd: Path) -> Any:
    result = run("inspect", *args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_lists_namespaces_objects_names_keys_tables_and_alarms(data_dir: Path) -> None:
    report = inspect_json("--data-dir", str(data_dir), cwd=data_dir.parent)
    namespaces = {ns["name"]: ns for ns in report["namespaces"]}
    assert sorted(namespaces) == ["boxes", "rooms"], namespaces
    rooms = namespaces["rooms"]
    assert (len(rooms["objects"]), rooms["keys"], rooms["alarms"]) == (2, 5, 1), rooms
    (lobby,) = [o for o in rooms["objects"] if o["name"] == "lobby"]
    assert lobby["keys"] == 4 and lobby["size"] > 500, lobby
    assert lobby["sql_tables"] == [{"name": "members", "rows": 2}], lobby
    assert lobby["alarm"]["retry_count"] == 0 and lobby["alarm"]["time"] > 0, lobby
    (unique,) = [o for o in rooms["objects"] if o["name"] is None]
    assert re.fullmatch("[0-9a-f]{64}", unique["id"]), unique
    (empty,) = namespaces["boxes"]["objects"]
    assert (empty["name"], empty["keys"], empty["alarm"]) == ("empty", 0, None), (
        "an object activated with no data is listed"
    )


def test_the_text_listing_names_what_the_json_has(data_dir: Path) -> None:
    result = run("inspect", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{data_dir}: read-only, no object woken", lines[0]
    assert "rooms: 2 objects, 5 keys" in result.stdout, result.stdout
    (lobby,) = [line for line in lines if " lobby " in line]
    assert "members (2 rows)" in lobby and " UTC (in " in lobby, lobby


def test_one_object_by_name_shows_its_decoded_values_and_alarm(data_dir: Path) -> None:
    detail = inspect_json("--data-dir", str(data_dir), "rooms:lobby", cwd=data_dir.parent)
    values = {entry["key"]: entry["value"] for entry in detail["entries"]}
    assert (values["count"], values["text"]) == ("3", "'hi'"), values
    assert values["nested"] == "{'a': [1, None]}", values
    (long,) = [entry for entry in detail["entries"] if entry["key"] == "long"]
    assert long["whole"] is False and long["value"].endswith("…"), long
    assert len(long["value"]) == 80, "a long value is shortened"
    assert detail["alarm"] is not None and detail["sql_tables"][0]["rows"] == 2, detail


def test_values_in_the_codecs_binary_format_are_decoded(data_dir: Path) -> None:
    # Written beside the runtime's own rows, as a runtime storing with the
    # codec writes them: bytes and sets come back as themselves.
    listing = inspect_json("--data-dir", str(data_dir), "rooms:lobby", cwd=data_dir.parent)
    with contextlib.closing(sqlite3.connect(data_dir / "trio_durable.sqlite3")) as db, db:
        db.execute(
            "INSERT INTO _td_kv (namespace, id, key, value) VALUES ('rooms', ?, 'packed', ?)",
            (listing["id"], _codec.encode({"raw": b"\x00\x01", "tags": {"a"}})),
        )
    detail = inspect_json("--data-dir", str(data_dir), "rooms:lobby", cwd=data_dir.parent)
    (packed,) = [entry for entry in detail["entries"] if entry["key"] == "packed"]
    assert packed["value"] == "{'raw': b'\\x00\\x01', 'tags': {'a'}}", packed


def test_one_object_by_its_64_hex_id(data_dir: Path) -> None:
    listing = inspect_json("--data-dir", str(data_dir), cwd=data_dir.parent)
    (rooms,) = [ns for ns in listing["namespaces"] if ns["name"] == "rooms"]
    (unique,) = [o for o in rooms["objects"] if o["name"] is None]
    detail = inspect_json("--data-dir", str(data_dir), unique["id"], cwd=data_dir.parent)
    assert (detail["namespace"], detail["id"]) == ("rooms", unique["id"]), detail
    assert [(e["key"], e["value"]) for e in detail["entries"]] == [("k", "1")], detail


def test_limit_bounds_the_keys_shown(data_dir: Path) -> None:
    result = run("inspect", "--data-dir", str(data_dir), "rooms:lobby", "--limit", "1")
    assert result.returncode == 0, result.stderr
    assert "(1 of 4 keys shown; --limit 0 shows all)" in result.stdout, result.stdout


def test_a_name_with_nothing_stored_says_so(data_dir: Path) -> None:
    result = run("inspect", "--data-dir", str(data_dir), "rooms:nobody")
    assert result.returncode == 0, result.stderr
    assert "(nothing stored)" in result.stdout, result.stdout


def test_an_unknown_id_is_one_line(data_dir: Path) -> None:
    line = one_line_error(run("inspect", "--data-dir", str(data_dir), "ab" * 32))
    assert f"no stored object has the ID {'ab' * 32!r}" in line, line


def test_an_unknown_namespace_lists_the_known_ones(data_dir: Path) -> None:
    line = one_line_error(run("inspect", "--data-dir", str(data_dir), "--namespace", "romos"))
    assert line.endswith("(namespaces: boxes, rooms)"), line


def test_a_directory_without_data_is_refused(tmp_path: Path) -> None:
    line = one_line_error(run("inspect", "--data-dir", str(tmp_path)))
    assert line == (
        f"trio-durable: error: no trio_durable data in {str(tmp_path)!r} (no trio_durable.sqlite3)"
    ), line


def test_the_data_dir_comes_from_the_config_file(data_dir: Path) -> None:
    (data_dir.parent / "trio-durable.toml").write_text('app = "unused:app"\ndata_dir = "data"\n')
    report = inspect_json(cwd=data_dir.parent)
    assert [ns["name"] for ns in report["namespaces"]] == ["boxes", "rooms"], report


# ------------------------------------------------- while a server holds it

APP = """\
import attrs
import trio_durable as td
from trio_durable import _codec


@attrs.define(eq=False)
class Note(td.DurableObject):
    async def fetch(self, request):
        await self.ctx.storage.put("text", request.query.get("text", ""))
        return td.Response.text("stored")


async def worker(request, runtime):
    name = request.path.strip("/")
    return await runtime.namespace("notes").get_by_name(name).fetch(request)


app = td.App(worker=worker, objects={"notes": Note})
"""


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def activations(metrics_url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(fetch(metrics_url)):
        if family.name == "trio_durable_activations":
            return float(family.samples[0].value)
    raise AssertionError("no activations counter")


@pytest.mark.slow
async def test_inspect_reads_while_a_server_holds_the_data_dir_and_wakes_nothing(
    tmp_path: Path,
) -> None:
    pytest.importorskip("prometheus_client")
    (tmp_path / "notes.py").write_text(APP)
    args = ["--port", "0", "--metrics-port", "0", "--hibernate-after", "0.2"]
    server = Command("serve", "notes:app", *args, cwd=tmp_path)
    try:
        base = server.wait_for(r"serving notes:app on (http://\S+) ").group(1)
        metrics = server.wait_for(r"metrics on (http://\S+)").group(1)
        assert await trio.to_thread.run_sync(fetch, base + "/memo?text=hello") == "stored", (
            "the server wrote the note"
        )
        server.wait_for(r"hibernated notes:memo \(idle for 0.2 s\)")
        before = await trio.to_thread.run_sync(activations, metrics)

        result = await trio.to_thread.run_sync(
            lambda: run("inspect", "--data-dir", "data", "notes:memo", "--json", cwd=tmp_path)
        )
        assert result.returncode == 0, result.stderr
        detail = json.loads(result.stdout)
        assert [(e["key"], e["value"]) for e in detail["entries"]] == [("text", "'hello'")]

        after = await trio.to_thread.run_sync(activations, metrics)
        assert after == before, "inspect woke no object"
        assert await trio.to_thread.run_sync(fetch, base + "/memo?text=again") == "stored", (
            "the server goes on: its lock and files were left alone"
        )
        assert server.stop(signal.SIGTERM) == 0, server.lines
    finally:
        server.kill()


# ------------------------------------------------------------- on PostgreSQL


async def _fill(runtime: td.Runtime) -> None:
    rooms = runtime.namespace("rooms")
    await rooms.get_by_name("lobby").fill(VALUES, 2, 3600.0)
    await rooms.get(rooms.new_unique_id()).fill({"k": 1}, 0, None)
    await runtime.namespace("boxes").get_by_name("empty").fill({}, 0, None)


@pytest.fixture
def database(postgres_url: str) -> str:
    """The data of ``data_dir``, made by a runtime on a PostgreSQL database."""

    async def make() -> None:
        async with td.open_runtime({"rooms": Room, "boxes": Room}, database=postgres_url) as rt:
            await _fill(rt)

    trio.run(make)
    return postgres_url


def test_a_database_lists_what_a_data_dir_would(database: str, data_dir: Path) -> None:
    on_postgres = inspect_json("--database", database, cwd=data_dir.parent)
    on_sqlite = inspect_json("--data-dir", str(data_dir), cwd=data_dir.parent)

    def shape(report: Any) -> Any:
        # IDs differ (each deployment has its own secret); the rest must not.
        return [
            (
                ns["name"],
                ns["keys"],
                ns["alarms"],
                sorted(
                    (o["name"] or "", o["keys"], o["size"], repr(o["sql_tables"]))
                    for o in ns["objects"]
                ),
            )
            for ns in report["namespaces"]
        ]

    assert shape(on_postgres) == shape(on_sqlite)
    (rooms,) = [ns for ns in on_postgres["namespaces"] if ns["name"] == "rooms"]
    (lobby,) = [o for o in rooms["objects"] if o["name"] == "lobby"]
    assert lobby["sql_tables"] == [{"name": "members", "rows": 2}], "read from its stored pages"
    assert lobby["alarm"]["time"] > 0, lobby
    assert on_postgres["source"] == database, "the URL, which has no password here"


def test_one_object_of_a_database_by_name_and_by_id(database: str, tmp_path: Path) -> None:
    detail = inspect_json("--database", database, "rooms:lobby", cwd=tmp_path)
    values = {entry["key"]: entry["value"] for entry in detail["entries"]}
    assert (values["count"], values["nested"]) == ("3", "{'a': [1, None]}"), values
    assert detail["sql_tables"] == [{"name": "members", "rows": 2}], detail
    again = inspect_json("--database", database, detail["id"], cwd=tmp_path)
    assert again["entries"] == detail["entries"]
    nothing = run("inspect", "--database", database, "rooms:nobody", cwd=tmp_path)
    assert "(nothing stored)" in nothing.stdout, nothing.stdout


def test_a_database_password_is_not_shown(database: str, tmp_path: Path) -> None:
    with_password = database.replace("postgres@", "postgres:hunter2@")  # trust: any password
    result = run("inspect", "--database", with_password, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and result.stdout.startswith(database), result.stdout


def test_a_database_without_trio_durable_data_is_refused(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database("empty")
    line = one_line_error(run("inspect", "--database", url, cwd=tmp_path))
    assert line == f"trio-durable: error: no trio_durable data in the database {url}", line


def test_data_dir_and_database_together_are_refused(database: str, data_dir: Path) -> None:
    line = one_line_error(run("inspect", "--data-dir", str(data_dir), "--database", database))
    assert "give only one of --data-dir and --database" in line, line


async def test_inspect_reads_a_database_in_use_and_wakes_nothing(postgres_url: str) -> None:
    async with td.open_runtime({"rooms": Room, "boxes": Room}, database=postgres_url) as rt:
        await _fill(rt)
        before = rt.statistics().activations
        report = await trio.to_thread.run_sync(
            lambda: inspect_json("--database", postgres_url, "rooms:lobby", cwd=ROOT)
        )
        assert report["keys"] == 4
        assert rt.statistics().activations == before, "no object was woken"
        await rt.namespace("rooms").get_by_name("lobby").fill({"more": 1}, 0, None)
    # While the runtime held the database (its owner lock), inspect read it;
    # it wrote nothing: the runtime's last write is there, alone.
    report = await trio.to_thread.run_sync(
        lambda: inspect_json("--database", postgres_url, "rooms:lobby", cwd=ROOT)
    )
    assert report["keys"] == 5


def test_the_database_of_the_config_file_is_read(database: str, tmp_path: Path) -> None:
    (tmp_path / "trio-durable.toml").write_text(f'database = "{database}"\n')
    from_file = inspect_json(cwd=tmp_path)
    assert from_file["source"] == database, "no flag: the config file's database"
    both = run("inspect", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert both.returncode == 2 and "only one of --data-dir and --database" in both.stderr
