"""`--set key=value` as rules, on any nested mapping: setting an existing path puts the value
there and changes nothing else; a path through missing mapping keys creates them; list items are
reached by index and only by an index in range; a path through a plain value is refused naming
the part it cannot follow; the value is read as strict YAML and stays text when it is not YAML."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import ScenarioError
from megawatt.scenario import apply_override

keys = st.text("abcdefgh_", min_size=1, max_size=6)
leaves = st.one_of(st.integers(-1000, 1000), st.booleans(), keys)
trees = st.recursive(
    st.dictionaries(keys, leaves, min_size=1, max_size=3),
    lambda inner: st.dictionaries(keys, st.one_of(leaves, inner, st.lists(inner, min_size=1, max_size=3)),
                                  min_size=1, max_size=3),
    max_leaves=12,
)


def paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every path to a value in a tree of mappings and lists (list items by index)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        here = (*prefix, str(key))
        out.append(here)
        out += paths(child, here)
    return out


def at(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@settings(max_examples=80, deadline=None, derandomize=True)
@given(tree=trees, choice=st.integers(0, 10_000), value=st.integers(-10**6, 10**6))
def test_setting_a_path_changes_that_value_and_nothing_else(tree: dict, choice: int, value: int) -> None:  # type: ignore[type-arg]
    path = paths(tree)[choice % len(paths(tree))]
    data = copy.deepcopy(tree)
    apply_override(data, f"{'.'.join(path)}={value}")
    assert at(data, path) == value
    # Put the old value back: the rest of the tree is as it was.
    parent = at(data, path[:-1])
    old = at(tree, path)
    if isinstance(parent, list):
        parent[int(path[-1])] = old
    else:
        parent[path[-1]] = old
    assert data == tree


@settings(max_examples=40, deadline=None, derandomize=True)
@given(tree=trees, new=st.lists(st.sampled_from(["x1", "x2", "x3"]), min_size=1, max_size=3, unique=True))
def test_missing_mapping_keys_are_created_along_the_path(tree: dict, new: list[str]) -> None:  # type: ignore[type-arg]
    data = copy.deepcopy(tree)
    apply_override(data, ".".join(["zz", *new]) + "=7")
    assert at(data, ("zz", *new)) == 7
    del data["zz"]
    assert data == tree


@pytest.mark.parametrize(
    ("override", "value"),
    [("a=[1, 2]", [1, 2]), ("a={b: 1}", {"b": 1}), ("a=1e3", 1000.0), ("a=", ""), ("a=null", None),
     ("a=yes", True), ("a= text with spaces ", "text with spaces"), ("a=x: y: z", "x: y: z"),
     ("a=k=v", "k=v")],
)
def test_the_value_is_strict_yaml_or_else_text(override: str, value: object) -> None:
    data: dict[str, Any] = {}
    apply_override(data, override)
    assert data == {"a": value}


def test_list_items_are_reached_by_an_index_in_range() -> None:
    data: dict[str, Any] = {"options": [{"pools": [{"tp": 1}, {"tp": 2}]}]}
    apply_override(data, "options.0.pools.1.tp=8")
    assert data["options"][0]["pools"] == [{"tp": 1}, {"tp": 8}]
    apply_override(data, "options.0.pools.0={tp: 4}")
    assert data["options"][0]["pools"][0] == {"tp": 4}
    with pytest.raises(ScenarioError, match=r"'options\.0\.pools\.2' must index the list \(0 to 1\)"):
        apply_override(data, "options.0.pools.2.tp=1")
    with pytest.raises(ScenarioError, match=r"'options\.first' must index the list \(0 to 0\); got 'first'"):
        apply_override(data, "options.first.name=x")
    with pytest.raises(ScenarioError, match=r"'empty\.0' must index the list \(it is empty\)"):
        apply_override({"empty": []}, "empty.0=1")


def test_a_path_through_a_plain_value_names_the_part_it_cannot_follow() -> None:
    data = {"budget": {"facility_mw": 750}}
    with pytest.raises(ScenarioError) as caught:
        apply_override(data, "budget.facility_mw.value=5")
    message = str(caught.value)
    assert "'budget.facility_mw' is int 750, not a mapping or list, so it has no field 'value'" in message
    assert data == {"budget": {"facility_mw": 750}}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("budget", "expected key=value, e.g. budget.facility_mw=500"),
        ("=5", "expected key=value"),
        ("budget..pue=1.2", "this one has an empty part"),
        ("a=[1, 1e999]", "is not a finite number"),
        ("a={x: 1, x: 2}", "duplicate key 'x'"),
    ],
)
def test_a_bad_override_is_one_line_naming_it(override: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        apply_override({}, override)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_an_undecodable_byte_is_named_as_such() -> None:
    with pytest.raises(ScenarioError, match="is not UTF-8 text"):
        apply_override({}, "name=\udcff")
