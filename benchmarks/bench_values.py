"""Pick the library under the value codec, with numbers.

Every stored value, attachment and RPC argument crosses one codec, so its
speed matters on the small values that dominate (a few keys, a short string)
and must stay reasonable on a ~10 KB document. This script measures
encode+decode round trips per second, CPU time (``time.process_time``), best
of ``--repeats`` runs, for:

* ``pickle`` and ``json`` (stdlib): the baselines. ``pickle`` is the speed
  to beat but may never be used (stored bytes must not run code); ``json``
  is what 0.1.0 stored, and cannot carry the "rich" value at all;
* a prototype of *our* codec on each candidate library, each with the same
  semantics (exact types: tuples stay tuples, bytes stay bytes, datetimes,
  sets, dicts with int keys; a version byte in front; refusal of anything
  else), each the first design that suited that library:

  - ``cbor2``: one Python walk tags what CBOR has no native form for
    (tuples, frozensets, naive datetimes...) and checks depth and types,
    then one call to the Rust encoder; decoding is one call, with our tags
    decoded by ``semantic_decoders``;
  - ``msgpack``: no walk: ``strict_types=True`` sends every non-native type
    to ``default``, which must wrap it as an extension type whose payload is
    *bytes*, so a tuple (or a datetime inside a set...) costs a nested
    ``packb``; decoding recurses through ``ext_hook`` the same way. This is
    the first design tried on ``msgpack``, kept as the candidate that won
    the comparison; ``ours`` is the design the codec shipped with on the
    same library (one walk, marked arrays decoded by one ``list_hook``);
  - ``orjson``: a walk turns the value into JSON-able tagged data (bytes,
    non-string keys, big ints, nan/inf need tags), and decoding needs a full
    walk too, since orjson has no object hook;

* the three libraries alone on the JSON-typed values (their core speed);
* ``ours``: the real ``trio_durable._codec`` (``encode``/``decode``, and the
  RPC copy ``copy_value``), built on the winner.

Values: a small dict, a 64-byte string, a ~10 KB nested document (JSON
types only), and a "rich" value with bytes, tuples, a set, int keys and
datetimes.

Run ``PYTHONPATH=$PWD python benchmarks/bench_values.py`` (about a minute;
``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import pickle
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import cbor2
import msgpack
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trio_durable import _codec

VERSION = b"\x01"
_ATOMS = frozenset({str, int, float, bool, type(None), bytes})


# ------------------------------------------------------------------ the values


def make_values() -> dict[str, Any]:
    small = {"id": 12345, "name": "ada", "active": True, "score": 3.5}
    text = "The quick brown fox jumps over the lazy dog, again and again!!!!"
    assert len(text.encode()) == 64
    doc = {
        "room": "lobby",
        "members": [
            {
                "id": i,
                "name": f"member-{i}",
                "online": i % 3 == 0,
                "score": i * 1.25,
                "tags": ["alpha", "beta", f"t{i % 7}"],
                "profile": {"city": "Paris", "langs": ["fr", "en"], "age": 20 + i % 50},
            }
            for i in range(70)
        ],
    }
    size = len(json.dumps(doc, separators=(",", ":")))
    assert 9_000 < size < 11_000, size
    tz = dt.timezone(dt.timedelta(hours=2))
    rich = {
        "blob": bytes(range(64)),
        "pairs": [(i, f"p{i}") for i in range(10)],
        "seen": {1, 2, 3, 5, 8},
        "by_id": {i: f"v{i}" for i in range(10)},
        "created": dt.datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=tz),
        "naive": dt.datetime(2024, 5, 1, 12, 30),
        "day": dt.date(2024, 5, 1),
    }
    return {"small dict": small, "64-byte str": text, "10 KB nested": doc, "rich": rich}


# ------------------------------------------------------------------ cbor2 prototype

T_TUPLE, T_FROZENSET, T_NAIVE = 29_796, 29_797, 29_798


def _cbor_prepare(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _ATOMS:
        return value
    if depth > 100:
        raise TypeError("too deep")
    if kind is dict:
        changed = False
        out = {}
        for key, item in value.items():
            k2 = key if type(key) in _ATOMS else _cbor_prepare(key, depth + 1)
            i2 = item if type(item) in _ATOMS else _cbor_prepare(item, depth + 1)
            changed = changed or k2 is not key or i2 is not item
            out[k2] = i2
        return out if changed else value
    if kind is list:
        items = [i if type(i) in _ATOMS else _cbor_prepare(i, depth + 1) for i in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if kind is tuple:
        return cbor2.CBORTag(T_TUPLE, [_cbor_prepare(i, depth + 1) for i in value])
    if kind is set:
        return value  # tag 258, native
    if kind is frozenset:
        return cbor2.CBORTag(T_FROZENSET, list(value))
    if kind is dt.datetime:
        return value if value.tzinfo is not None else cbor2.CBORTag(T_NAIVE, value.isoformat())
    if kind in (dt.date, uuid.UUID, Decimal):
        return value
    raise TypeError(f"unsupported {kind.__name__}")


_CBOR_DECODERS = {
    T_TUPLE: lambda v, imm: tuple(v),
    T_FROZENSET: lambda v, imm: frozenset(v),
    T_NAIVE: lambda v, imm: dt.datetime.fromisoformat(v),
}


def cbor_encode(value: Any) -> bytes:
    return VERSION + cbor2.dumps(_cbor_prepare(value, 0))


def cbor_decode(data: bytes) -> Any:
    return cbor2.loads(data[1:], semantic_decoders=_CBOR_DECODERS)


# ------------------------------------------------------------------ msgpack prototype
# One of the three measured candidates (see the module docstring), not the
# codec itself: ``trio_durable._codec`` is measured as "ours".

X_TUPLE, X_SET, X_FROZENSET, X_DATETIME, X_DATE, X_BIGINT = 1, 2, 3, 4, 5, 6


def _mp_default(value: Any) -> Any:
    kind = type(value)
    if kind is tuple:
        return msgpack.ExtType(X_TUPLE, mp_pack(list(value)))
    if kind is set:
        return msgpack.ExtType(X_SET, mp_pack(list(value)))
    if kind is frozenset:
        return msgpack.ExtType(X_FROZENSET, mp_pack(list(value)))
    if kind is dt.datetime:
        return msgpack.ExtType(X_DATETIME, value.isoformat().encode())
    if kind is dt.date:
        return msgpack.ExtType(X_DATE, value.isoformat().encode())
    if kind is int:  # beyond 64 bits
        return msgpack.ExtType(X_BIGINT, str(value).encode())
    raise TypeError(f"unsupported {kind.__name__}")


def mp_pack(value: Any) -> bytes:
    return msgpack.packb(value, default=_mp_default, strict_types=True, use_bin_type=True)


def _mp_ext(code: int, data: bytes) -> Any:
    if code == X_TUPLE:
        return tuple(mp_unpack(data))
    if code == X_SET:
        return set(mp_unpack(data))
    if code == X_FROZENSET:
        return frozenset(mp_unpack(data))
    if code == X_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == X_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == X_BIGINT:
        return int(data)
    raise ValueError(f"unknown extension type {code}")


def mp_unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_mp_ext, strict_map_key=False, raw=False)


def msgpack_encode(value: Any) -> bytes:
    return VERSION + mp_pack(value)


def msgpack_decode(data: bytes) -> Any:
    return mp_unpack(data[1:])


# ------------------------------------------------------------------ orjson prototype

TAG = "\x00t"  # a dict {TAG: [kind, payload]} is a tagged value; real keys never start with NUL


def _oj_prepare(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if -(2**63) <= value < 2**64 else {TAG: ["bigint", str(value)]}
    if kind is float:
        return (
            value
            if value == value and value not in (float("inf"), float("-inf"))
            else {TAG: ["float", repr(value)]}
        )
    if kind is list:
        return [_oj_prepare(i) for i in value]
    if kind is dict:
        if all(type(k) is str for k in value):
            return {k: _oj_prepare(i) for k, i in value.items()}
        return {TAG: ["dict", [[_oj_prepare(k), _oj_prepare(i)] for k, i in value.items()]]}
    if kind is tuple:
        return {TAG: ["tuple", [_oj_prepare(i) for i in value]]}
    if kind is set or kind is frozenset:
        return {TAG: [kind.__name__, [_oj_prepare(i) for i in value]]}
    if kind is bytes:
        return {TAG: ["bytes", value.hex()]}
    if kind is dt.datetime or kind is dt.date:
        return {TAG: [kind.__name__, value.isoformat()]}
    raise TypeError(f"unsupported {kind.__name__}")


_OJ_BUILD: dict[str, Callable[[Any], Any]] = {
    "bigint": int,
    "float": float,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "bytes": bytes.fromhex,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
}


def _oj_restore(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_oj_restore(i) for i in value]
    if kind is dict:
        tagged = value.get(TAG)
        if tagged is None:
            return {k: _oj_restore(i) for k, i in value.items()}
        name, payload = tagged
        if name == "dict":
            return {_oj_restore(k): _oj_restore(i) for k, i in payload}
        if type(payload) is list:
            payload = [_oj_restore(i) for i in payload]
        return _OJ_BUILD[name](payload)
    return value


def orjson_encode(value: Any) -> bytes:
    return VERSION + orjson.dumps(_oj_prepare(value))


def orjson_decode(data: bytes) -> Any:
    return _oj_restore(orjson.loads(data[1:]))


# ------------------------------------------------------------------ measuring

CODECS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "pickle": (lambda v: pickle.dumps(v, protocol=5), pickle.loads),
    "json": (lambda v: json.dumps(v, separators=(",", ":")).encode(), json.loads),
    "cbor2": (cbor_encode, cbor_decode),
    "msgpack": (msgpack_encode, msgpack_decode),
    "orjson": (orjson_encode, orjson_decode),
    "ours": (_codec.encode, _codec.decode),
}


#: The libraries alone, on the values they carry natively (JSON types): the
#: speed of their cores, whatever a codec built on them adds.
RAW: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "cbor2": (cbor2.dumps, cbor2.loads),
    "msgpack": (msgpack.packb, msgpack.unpackb),
    "orjson": (orjson.dumps, orjson.loads),
}


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (what "round-trips" means)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def rate(
    encode: Callable[[Any], bytes],
    decode: Callable[[bytes], Any],
    value: Any,
    repeats: int,
    target: float,
) -> float:
    """Round trips per CPU second, best of ``repeats`` runs of about ``target`` seconds."""
    loops = 1
    while True:  # calibrate
        start = time.process_time()
        for _ in range(loops):
            decode(encode(value))
        took = time.process_time() - start
        if took > target / 10:
            break
        loops *= 4
    loops = max(1, int(loops * target / took))
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.process_time()
        for _ in range(loops):
            decode(encode(value))
        best = min(best, time.process_time() - start)
    return loops / best


def copy_rates(repeats: int, target: float) -> dict[str, float]:
    """The RPC copy: what a call pays for its arguments in one process."""
    args_immutable = (42, "room-7", 3.5, None, ("a", 1))
    args_list = ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10],)
    out = {}
    for label, args in (("5 immutable args", args_immutable), ("a 10-int list", args_list)):
        out[label] = rate(
            lambda v: v, lambda v: _codec.copy_value(v, where="args"), args, repeats, target
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", help="also write the figures here (for python -m benchmarks)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    target = 0.05 if args.quick else 0.2
    values = make_values()
    print(
        f"python {sys.version.split()[0]}; cbor2 {_version('cbor2')}, msgpack {_version('msgpack')}, "
        f"orjson {orjson.__version__}; round trips (encode+decode) per CPU second, best of {repeats}"
    )
    header = ["value", "bytes (ours)", *CODECS]
    rows = []
    figures: dict[str, dict[str, float]] = {}
    for label, value in values.items():
        row = [label, f"{len(_codec.encode(value)):,}"]
        figures[label] = {}
        for name, (encode, decode) in CODECS.items():
            try:
                back = decode(encode(value))
            except (TypeError, ValueError):
                row.append("cannot")
                continue
            if not same(back, value):
                row.append("lossy")
                continue
            figures[label][name] = rate(encode, decode, value, repeats, target)
            row.append(f"{figures[label][name]:,.0f}")
        rows.append(row)
    print(_table(rows, header))
    print("\nThe libraries alone (no codec semantics), same measure:")
    raw_rows = []
    for label in ("small dict", "64-byte str", "10 KB nested"):
        value = values[label]
        raw_rows.append(
            [label] + [f"{rate(e, d, value, repeats, target):,.0f}" for e, d in RAW.values()]
        )
    print(_table(raw_rows, ["value", *RAW]))
    print("\nRPC copy (trio_durable._codec.copy_value), calls per CPU second:")
    copies = copy_rates(repeats, target)
    for label, value in copies.items():
        print(f"  {label}: {value:,.0f}/s ({1e9 / value:,.0f} ns per call)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"round_trips": figures, "copy": copies}, out, indent=2)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
