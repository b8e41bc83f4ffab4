"""The strict YAML reader as rules: any document a YAML writer makes of plain data (finite numbers,
text, booleans, nulls, lists and mappings, nested within the bound) reads back as that data; the
bounds are exact (MAX_DEPTH levels read, one more is refused; MAX_NODES values expand, a few more
are refused); text that is no character is refused; and each error names where it is."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt._yaml import MAX_DEPTH, MAX_NODES, describe, load_yaml, surrogate
from megawatt.errors import InputError, PlanError

# Text YAML writers can round trip: no lone surrogates, no control characters but \n and \t.
text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff"),
               max_size=20)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False), text,
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(data=documents)
def test_plain_data_written_by_a_yaml_writer_reads_back_unchanged(data: object) -> None:
    for dumped in (yaml.safe_dump(data), yaml.safe_dump(data, default_flow_style=True)):
        got = load_yaml(dumped, "d.yaml")
        assert got == data or (isinstance(data, float) and math.isclose(got, data))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(key=st.text(st.characters(whitelist_categories=("Ll",)), min_size=1, max_size=8),
       first=st.integers(), second=st.integers())
def test_any_repeated_key_is_refused_naming_it_and_its_line(key: str, first: int, second: int) -> None:
    with pytest.raises(InputError) as caught:
        load_yaml(f"{key}: {first}\nother: 0\n{key}: {second}\n", "d.yaml")
    message = str(caught.value)
    assert f"duplicate key {key!r}" in message and "line 3, column 1" in message


def nested(levels: int) -> str:
    return "[" * (levels - 1) + "1" + "]" * (levels - 1)


def test_the_depth_bound_is_exact() -> None:
    """A document of MAX_DEPTH levels (the scalar counts as one) reads; one more is refused."""
    value = load_yaml(nested(MAX_DEPTH), "d.yaml")
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == 1
    with pytest.raises(InputError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        load_yaml(nested(MAX_DEPTH + 1), "d.yaml")


def test_the_expansion_bound_counts_every_value_an_alias_stands_for() -> None:
    """A list of n scalars is n + 1 values; an alias to it, used k times, stands for k (n + 1)."""
    n = 999
    base = "a: &a [" + ", ".join(["1"] * n) + "]\n"
    uses = (MAX_NODES - 3 - (n + 1)) // (n + 1)  # root mapping, key 'a', key 'b', the list
    fits = base + "b: [" + ", ".join(["*a"] * uses) + "]\n"
    doc = load_yaml(fits, "d.yaml")
    assert len(doc["b"]) == uses and doc["b"][0] == [1] * n
    too_many = base + "b: [" + ", ".join(["*a"] * (uses + 2)) + "]\n"
    with pytest.raises(InputError, match=f"aliases expand to more than {MAX_NODES:,} values"):
        load_yaml(too_many, "d.yaml")


def test_merge_keys_still_merge_and_a_merged_duplicate_is_refused() -> None:
    doc = load_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  z: 3\n", "d.yaml")
    assert doc["other"] == {"x": 1, "y": 2, "z": 3}
    with pytest.raises(InputError, match="duplicate key 'x'"):
        load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n", "d.yaml")


@pytest.mark.parametrize(
    ("value", "kind"),
    [("1e9", float), ("-2.5E-3", float), ("1_000", int), ("0x10", int), ("10", int), ("'1e9'", str),
     ("1e", str)],
)
def test_numbers_read_as_yaml_1_2_reads_them(value: str, kind: type) -> None:
    assert type(load_yaml(f"v: {value}", "d.yaml")["v"]) is kind


@pytest.mark.parametrize("value", [".inf", "-.Inf", ".NAN", "1e999"])
def test_no_number_but_a_finite_one_is_read(value: str) -> None:
    with pytest.raises(InputError, match="is not a finite number; give a finite value"):
        load_yaml(f"v: {value}", "d.yaml")


def test_an_escaped_lone_surrogate_is_refused_and_found() -> None:
    with pytest.raises(InputError, match=r"'\\ud800' is a lone surrogate, not a character"):
        load_yaml('v: "\\ud800"', "d.yaml")
    assert surrogate("ok \udcff here") == "\udcff"
    assert surrogate("plain text é €") is None


def test_errors_name_the_file_given_and_use_the_error_class_asked_for() -> None:
    with pytest.raises(PlanError) as caught:
        load_yaml("a: [1\n", "plans/p.yaml", PlanError)
    message = str(caught.value)
    assert message.startswith("plans/p.yaml line ") and "not valid YAML" in message
    assert message.endswith(".") and "\n" not in message


def test_describe_says_where_for_marked_errors_and_what_for_others() -> None:
    try:
        yaml.safe_load("a: b: c")
    except yaml.YAMLError as exc:
        assert describe(exc).startswith(" line 1, column 5: not valid YAML: mapping values")
    assert describe(yaml.YAMLError("a  plain\n problem")) == ": not valid YAML: a plain problem"


def test_an_empty_document_is_none_and_only_one_document_is_read() -> None:
    assert load_yaml("", "d.yaml") is None
    assert load_yaml("# only a comment\n", "d.yaml") is None
    with pytest.raises(InputError, match="but found another document"):
        load_yaml("a: 1\n---\nb: 2\n", "d.yaml")
