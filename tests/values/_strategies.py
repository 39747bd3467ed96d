"""Hypothesis strategies for values of every type SPEC section 8 lists, nested.

Shared by the codec tests and the storage, attachment and RPC round trips.
"""

from __future__ import annotations

import datetime

from hypothesis import strategies as st

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

_aware_zones = st.one_of(
    st.just(datetime.UTC),
    st.timedeltas(
        min_value=datetime.timedelta(hours=-23, minutes=-59),
        max_value=datetime.timedelta(hours=23, minutes=59),
    ).map(datetime.timezone),
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
