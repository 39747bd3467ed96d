"""attrs instances in storage, ``type=`` with schema evolution, and 0.1.0's JSON values."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import attrs
import cattrs
import pytest

from trio_durable import _codec

from ._same import same

FIXTURE = Path(__file__).parent / "data-0.1.0"


@attrs.define
class Member:
    name: str
    score: int = 0


@attrs.frozen
class Event:
    when: datetime.datetime
    tags: frozenset[str]
    blob: bytes
    amount: decimal.Decimal
    id: uuid.UUID
    members: list[Member] = attrs.Factory(list)


def test_record_without_type_comes_back_as_a_dict() -> None:
    back = _codec.decode(_codec.encode(Member("ada", 7)))
    assert same({"name": "ada", "score": 7}, back), f"got {back!r}"


def test_nested_record_values_keep_their_types_in_the_dict() -> None:
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    back = _codec.decode(_codec.encode({"e": [Member("a")], "when": when}))
    assert same({"e": [{"name": "a", "score": 0}], "when": when}, back), f"got {back!r}"


def test_type_structures_a_record() -> None:
    assert _codec.decode(_codec.encode(Member("ada", 7)), type=Member) == Member("ada", 7)


def test_type_structures_native_values_into_fields() -> None:
    event = Event(
        when=datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
        tags=frozenset({"x"}),
        blob=b"\x00\x01",
        amount=decimal.Decimal("1.10"),
        id=uuid.UUID(int=5),
        members=[Member("a", 1)],
    )
    back = _codec.decode(_codec.encode(event), type=Event)
    assert event == back, f"got {back!r}"


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        ([Member("a"), Member("b", 2)], list[Member], [Member("a"), Member("b", 2)]),
        ({"x": Member("a")}, dict[str, Member], {"x": Member("a")}),
        (None, Member | None, None),
        (Member("a"), Member | None, Member("a")),
    ],
    ids=["list", "dict", "optional-none", "optional"],
)
def test_type_structures_containers(value: Any, type_: Any, expected: Any) -> None:
    back = _codec.decode(_codec.encode(value), type=type_)
    assert expected == back, f"{type_} gave {back!r}"


def test_unknown_keys_are_ignored() -> None:
    data = _codec.encode({"name": "ada", "score": 3, "removed_field": [1]})
    assert _codec.decode(data, type=Member) == Member("ada", 3), "extra keys ignored"


def test_new_fields_take_their_defaults() -> None:
    data = _codec.encode({"name": "ada"})
    assert _codec.decode(data, type=Member) == Member("ada", 0), "missing field defaulted"


def test_missing_required_field_is_a_cattrs_error() -> None:
    with pytest.raises(cattrs.ClassValidationError):
        _codec.decode(_codec.encode({"score": 1}), type=Member)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (b'"h\xc3\xa9llo"', "héllo"),
        (b"42", 42),
        (b"2.5", 2.5),
        (b"true", True),
        (b"null", None),
        (b'[1,"two",3.0,null,false]', [1, "two", 3.0, None, False]),
        (b' {"a":{"b":[1]}}', {"a": {"b": [1]}}),
        (b"\n-1", -1),
    ],
    ids=repr,
)
def test_json_written_by_010_decodes_unchanged(stored: bytes, expected: Any) -> None:
    assert same(expected, _codec.decode(stored)), f"{stored!r} must read as 0.1.0 read it"


@attrs.define
class Old:
    """A record as an app of 0.1.0 stored it."""

    blob: bytes
    when: datetime.datetime
    pair: tuple[int, str]


#: What 0.1.0 stored for values JSON has no type for: its cattrs JSON preset
#: wrote bytes as base85 text, datetimes and dates as ISO 8601 text, tuples,
#: sets and frozensets as arrays. Without ``type=`` they read back as 0.1.0
#: returned them (text, lists); ``type=`` brings the Python type back.
JSON_010 = [
    (b'"00C%e"', "00C%e", bytes, b"\x00\x01hi"),
    (b'""', "", bytes, b""),
    (b'{"a":"cm"}', {"a": "cm"}, dict[str, bytes], {"a": b"x"}),
    (
        b'"2024-05-01T12:30:00+00:00"',
        "2024-05-01T12:30:00+00:00",
        datetime.datetime,
        datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    ),
    (
        b'"2024-05-01T12:30:00.000001+05:30"',
        "2024-05-01T12:30:00.000001+05:30",
        datetime.datetime,
        datetime.datetime(
            2024, 5, 1, 12, 30, 0, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=5.5))
        ),
    ),
    (
        b'"2024-05-01T12:30:00"',
        "2024-05-01T12:30:00",
        datetime.datetime,
        datetime.datetime(2024, 5, 1, 12, 30),
    ),
    (b'"2024-05-01"', "2024-05-01", datetime.date, datetime.date(2024, 5, 1)),
    (b'[1,"a"]', [1, "a"], tuple[int, str], (1, "a")),
    (b"[1,2,3]", [1, 2, 3], tuple[int, ...], (1, 2, 3)),
    (b"[]", [], tuple[()], ()),
    (b"[1,2]", [1, 2], set[int], {1, 2}),
    (b"[3]", [3], frozenset[int], frozenset({3})),
    (
        b'{"blob":"00","when":"2024-01-01T00:00:00","pair":[1,"x"]}',
        {"blob": "00", "when": "2024-01-01T00:00:00", "pair": [1, "x"]},
        Old,
        Old(b"\x00", datetime.datetime(2024, 1, 1), (1, "x")),
    ),
]


@pytest.mark.parametrize(("stored", "plain", "type_", "typed"), JSON_010, ids=repr)
def test_json_forms_of_010_read_as_then_and_with_type(
    stored: bytes, plain: Any, type_: Any, typed: Any
) -> None:
    assert same(plain, _codec.decode(stored)), "without type=: as 0.1.0 returned it"
    assert same(typed, _codec.decode(stored, type=type_)), f"with type={type_}"


def test_json_record_written_by_010_structures() -> None:
    assert _codec.decode(b'{"name":"ada","score":7}', type=Member) == Member("ada", 7)


def test_json_forms_of_010_structure_into_native_fields() -> None:
    # What cattrs' JSON preset wrote for these fields in 0.1.0.
    converter = cattrs.preconf.json.make_converter()

    @attrs.define
    class Old:
        when: datetime.datetime
        blob: bytes

    old = Old(datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC), b"\x00\xff")
    stored = converter.dumps(old).encode()
    assert _codec.decode(stored, type=Old) == old, f"{stored!r} did not structure"


def test_format_byte_is_never_the_start_of_json() -> None:
    data = _codec.encode("x")
    assert data[0] == _codec.FORMAT_V1, "every value starts with the format byte"
    assert chr(data[0]) not in ' \t\n\r{["-0123456789tfn', "it cannot start a JSON text"


def test_unknown_format_byte_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown value format"):
        _codec.decode(b"\x07abc")


def test_encoded_size_is_the_length_of_the_bytes() -> None:
    data = _codec.encode(b"x" * 1000)
    assert isinstance(data, bytes) and 1000 < len(data) < 1010, "len() is what limits check"


def _fixture_rows(tmp_path: Path) -> dict[str, bytes]:
    # Read from a copy: SQLite may leave -wal and -shm files next to a
    # database it opened, and the fixture must stay as 0.1.0 left it.
    copy = tmp_path / "data"
    shutil.copytree(FIXTURE, copy)
    with contextlib.closing(sqlite3.connect(copy / "trio_durable.sqlite3")) as db:
        return dict(db.execute("SELECT key, value FROM _td_kv"))


def test_the_010_fixture_holds_only_its_committed_files() -> None:
    files = sorted(p.relative_to(FIXTURE).as_posix() for p in FIXTURE.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "sql/fixtures/2939e0ae7e0a15ff7fefb50ee8fc36db4e7fcbc362e6e3ff0555267a68f3acbe.sqlite3",
        "trio_durable.sqlite3",
    ], "a test opened the fixture in place (-wal/-shm files); tests must open a copy"


def test_values_in_the_010_fixture_decode_as_its_readme_says(tmp_path: Path) -> None:
    rows = _fixture_rows(tmp_path)
    decoded = {key: _codec.decode(value) for key, value in rows.items()}
    expected = {
        "str": "héllo wörld",
        "int": 42,
        "float": 2.5,
        "bool": True,
        "list": [1, "two", 3.0, None, False],
        "nested": {"a": {"b": [1, 2, {"c": "d"}]}, "e": None},
        "member": {"name": "ada", "score": 7},
    }
    assert same(expected, decoded), f"got {decoded!r}"
    assert _codec.decode(rows["member"], type=Member) == Member("ada", 7), "type= works on it"


def test_unknown_extension_type_is_refused() -> None:
    import msgpack

    data = b"\x01" + msgpack.packb(msgpack.ExtType(99, b"x"))
    with pytest.raises(ValueError, match="unknown extension type 99"):
        _codec.decode(data)


def test_stored_value_never_holds_an_rpc_record() -> None:
    data = _codec.encode_call(Member("ada"))
    with pytest.raises(ValueError, match="RPC-only"):
        _codec.decode(data)
