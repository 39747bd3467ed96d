"""Hypothesis strategies for values of every type the codec carries, nested.

Shared by the codec tests and the storage, attachment and RPC round trips.
``values`` holds what round-trips everywhere; ``rpc_values`` adds what only
RPC carries as itself (attrs instances, enum members, ``Request`` and
``Response``). Aware datetimes and times come with fixed offsets, ``ZoneInfo``
zones, named fixed zones and a user's own tzinfo class: a trip keeps only the
offset (``_same.fixed_zones`` gives the expected value).

The record and enum classes are defined at the top level of this module so
that a cluster member accepts them (it rebuilds the classes an app's own
modules define).
"""

from __future__ import annotations

import datetime
import enum
from typing import Any

import attrs
from hypothesis import strategies as st

import trio_durable as td

# Hashable values, usable as dict keys and set members (nan is left out of
# keys: two nan keys are distinct in a dict but compare unequal after a trip).
_hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.dates(),
    st.timedeltas(),
)
hashables = st.recursive(
    _hashable_leaves,
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
    max_leaves=6,
)


class UserZone(datetime.tzinfo):
    """A user's own tzinfo class: a fixed offset held in an object that can change."""

    def __init__(self, minutes: int) -> None:
        self.minutes = minutes

    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        return datetime.timedelta(minutes=self.minutes)

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta:
        return datetime.timedelta(0)

    def tzname(self, dt: datetime.datetime | None) -> str:
        return f"user{self.minutes:+}"

    def __repr__(self) -> str:
        return f"UserZone({self.minutes})"


_offsets = st.timedeltas(
    min_value=datetime.timedelta(hours=-23, minutes=-59),
    max_value=datetime.timedelta(hours=23, minutes=59),
)
_aware_zones = st.one_of(
    st.just(datetime.UTC),
    _offsets.map(datetime.timezone),
    st.tuples(_offsets, st.sampled_from(["CET", "Here", ""])).map(
        lambda t: datetime.timezone(t[0], t[1]) if t[1] else datetime.timezone(t[0])
    ),
    st.timezones(),  # zoneinfo.ZoneInfo zones from the system's database
    st.integers(-1439, 1439).map(UserZone),
)
leaves = st.one_of(
    _hashable_leaves,
    st.floats(),  # nan, inf, -0.0 included
    st.decimals(),  # NaN, sNaN, Infinity included
    st.binary(max_size=16).map(bytearray),
    st.datetimes(),
    st.datetimes(timezones=_aware_zones),
    st.times(),
    st.times(timezones=_aware_zones),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(hashables, inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=25,
)

#: What ``storage.put`` accepts: any value but ``None`` at the top (use ``delete``).
storable = values.filter(lambda value: value is not None)


# ------------------------------------------------------------------ RPC only


@attrs.define
class Note:
    """A mutable record: an RPC copies it and keeps its class."""

    text: str
    extra: Any = None


@attrs.frozen
class Tag:
    """A frozen record: shared by an RPC copy when made of immutables; may be a key."""

    name: str
    rank: int = 0


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


_enums = st.sampled_from([*Mood, *Level])
_tags = st.builds(Tag, st.text(max_size=6), st.integers(-5, 5))
_headers = st.lists(
    st.tuples(st.sampled_from(["Content-Type", "x-a", "X-A"]), st.text(max_size=6)), max_size=3
)
_requests = st.builds(
    td.Request,
    method=st.sampled_from(["GET", "POST", "delete"]),
    url=st.sampled_from(["http://h/p?x=1", "https://example.com/"]),
    headers=_headers,
    body=st.binary(max_size=8),
    client=st.none() | st.tuples(st.just("127.0.0.1"), st.integers(1, 65535)),
)
_responses = st.builds(
    td.Response,
    status=st.sampled_from([200, 201, 404, 503]),
    headers=_headers,
    body=st.binary(max_size=8),
)
rpc_hashables = st.recursive(
    st.one_of(_hashable_leaves, _enums, _tags),
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
    max_leaves=6,
)
rpc_values = st.recursive(
    st.one_of(leaves, _enums, _tags, _requests, _responses),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(rpc_hashables, inner, max_size=4),
        st.sets(rpc_hashables, max_size=4),
        st.frozensets(rpc_hashables, max_size=4),
        st.builds(Note, st.text(max_size=6), inner),
        st.builds(Tag, st.text(max_size=6)),
    ),
    max_leaves=25,
)

#: Every record and enum class ``rpc_values`` holds (``allowed`` of ``decode_call``).
RPC_CLASSES = (Note, Tag, Mood, Level)
