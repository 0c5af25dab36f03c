"""Plain data across the sandbox boundary: encode_plain / decode_plain (pure, with
property-based round trips) and the strict reading of a worker's report."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalsuite.execution.sandbox import (
    Opaque,
    Returned,
    decode_plain,
    decode_returns,
    encode_plain,
    plain_key,
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(),
                    st.binary(), st.complex_numbers(allow_nan=False))
hashables = st.recursive(scalars, lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=4)),
                         max_leaves=10)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(hashables, inner, max_size=4),
                            st.sets(hashables, max_size=4), st.frozensets(hashables, max_size=4)),
    max_leaves=20,
)


def same(a, b) -> bool:
    """Equal with the same types all the way down (so 1 and True and 1.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a == 0.0:
        return math.copysign(1, a) == math.copysign(1, b)
    return a == b


@given(values)
def test_every_plain_value_survives_json_with_its_exact_types(value):
    assert same(decode_plain(json.loads(json.dumps(encode_plain(value)))), value)


def test_nan_and_infinities_survive():
    back = decode_plain(json.loads(json.dumps(encode_plain([math.nan, math.inf, -math.inf]))))
    assert math.isnan(back[0]) and back[1:] == [math.inf, -math.inf]


def test_bool_int_and_float_stay_apart():
    assert [encode_plain(True), encode_plain(1), encode_plain(1.0)] == [["bool", True], ["int", "1"], ["float", "1.0"]]
    assert encode_plain(-255) == ["int", "-ff"] and decode_plain(["int", "-ff"]) == -255


def test_set_encoding_does_not_depend_on_insertion_order():
    assert plain_key(({"b", "a", "c"},), {}) == plain_key(({"c", "a", "b"},), {})
    assert plain_key((1,), {}) != plain_key((True,), {}) != plain_key((1.0,), {})


def test_objects_that_are_not_plain_data_are_named_not_carried():
    class Thing:
        pass

    assert encode_plain(Thing()) == ["opaque", f"{__name__}.test_objects_that_are_not_plain_data_are_named_not_carried.<locals>.Thing"]
    nested = [[]]
    for _ in range(150):
        nested = [nested]
    assert "opaque" in json.dumps(encode_plain(nested))
    opaque = decode_plain(["opaque", "numpy.ndarray"])
    assert isinstance(opaque, Opaque) and opaque != opaque.__class__("numpy.ndarray") and opaque.type_name == "numpy.ndarray"


@pytest.mark.parametrize("node", [
    "x", [], ["int"], ["int", 5], ["float", 1.5], ["str", 3], ["bool", 1], ["list", "ab"], ["dict", [[["int", "1"]]]],
    ["set", [["list", []]]], ["tuple", [["nope", 1]]], ["none", None], ["float", "1" * 50], ["int", "0x"],
])
def test_anything_else_is_refused(node):
    with pytest.raises((ValueError, TypeError)):
        decode_plain(node)


def test_too_deep_is_refused():
    node = ["none"]
    for _ in range(150):
        node = ["list", [node]]
    with pytest.raises(ValueError, match="deeper"):
        decode_plain(node)


def test_a_report_is_read_strictly():
    assert decode_returns('[["ok", ["int", "a"]], ["raised", "ValueError", "bad"]]', 2) == (
        Returned(10), Returned(None, "ValueError", "bad"))
    for report, count in [('[["ok", ["int", "a"]]]', 2), ('{"ok": 1}', 1), ('[["ok", NaN]]', 1),
                          ('[["passed"]]', 1), ('[["raised", "E"]]', 1), ('[["ok", ["int", "1"]]] trailing', 1)]:
        with pytest.raises(ValueError):
            decode_returns(report, count)
