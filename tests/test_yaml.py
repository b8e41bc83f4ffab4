"""The strict YAML reader behind scenarios, `--set` values and hardware files: what plain
`yaml.safe_load` accepts silently (duplicate keys, `.inf`, alias bombs, deep nesting) is one
clear error with its line, and everything a real file writes still reads the same."""

from __future__ import annotations

import pytest
import yaml

from megawatt._yaml import MAX_CHARS, MAX_DEPTH, MAX_NODES, load_yaml
from megawatt.errors import InputError, ScenarioError


def laughs(levels: int, width: int = 10) -> str:
    """A 'billion laughs' document: `levels` anchors, each a list of `width` aliases of the last."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def refused(text: str) -> str:
    with pytest.raises(InputError) as caught:
        load_yaml(text, "s.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("s.yaml")
    return message


def test_a_real_file_reads_as_safe_load_reads_it() -> None:
    text = "name: x\nbudget: {facility_mw: 2, pue: 1.25}\nmodels: [a, b]\nbase: &b {k: 1}\nuse: *b\n"
    assert load_yaml(text, "s.yaml") == yaml.safe_load(text)


def test_exponents_without_a_dot_are_floats_as_in_yaml_1_2() -> None:
    assert load_yaml("a: 1e9\nb: 2.5e-3\nc: 1_000\n", "s.yaml") == {"a": 1e9, "b": 2.5e-3, "c": 1000}


def test_a_duplicate_key_is_refused_with_its_line() -> None:
    message = refused("budget:\n  facility_mw: 2\n  facility_mw: 1000\n")
    assert "line 3, column 3" in message and "duplicate key 'facility_mw'" in message


@pytest.mark.parametrize("value", [".inf", "-.Inf", ".nan", ".NaN", "1e999", "-1e999"])
def test_a_non_finite_number_is_refused(value: str) -> None:
    assert "is not a finite number" in refused(f"traffic:\n  demand: {value}\n")


def test_a_billion_laughs_is_refused_quickly_without_expanding_it() -> None:
    message = refused(laughs(9))  # 10**9 values once expanded
    assert f"more than {MAX_NODES:,} values" in message and "billion laughs" in message


def test_a_few_aliases_below_the_bound_still_expand() -> None:
    data = load_yaml(laughs(3), "s.yaml")
    assert data["l2"][0] == data["l1"] and data["l1"][0] == ["lol"] * 10


@pytest.mark.parametrize("text", ["a: &x [*x]\n", "&x {a: *x}\n"])
def test_an_alias_inside_its_own_anchor_is_refused(text: str) -> None:
    assert "an alias refers to a value that contains it" in refused(text)


def test_deep_nesting_is_refused_before_python_runs_out_of_stack() -> None:
    assert f"nesting deeper than {MAX_DEPTH} levels" in refused("[" * 5000 + "]" * 5000)
    assert f"nesting deeper than {MAX_DEPTH} levels" in refused("a:\n" + "".join(
        "  " * i + f"k{i}:\n" for i in range(1, 40)
    ) + "  " * 40 + "x: 1\n")


def test_aliases_cannot_smuggle_depth_past_the_bound() -> None:
    deep = "[" * 20 + "1" + "]" * 20
    text = f"a: &a {deep}\nb: &b {'[' * 20}*a{']' * 20}\n"
    assert f"aliases expand to nesting deeper than {MAX_DEPTH}" in refused(text)


def test_an_unhashable_key_and_syntax_errors_are_one_line() -> None:
    assert "a mapping key must be a plain value" in refused("? [1]\n: 2\n")
    assert "line 1, column 5: not valid YAML: mapping values are not allowed" in refused("a: b: c")
    assert "special characters are not allowed" in refused("\x00\x01binary")


def test_an_oversized_text_is_refused_and_the_error_class_is_chosen() -> None:
    with pytest.raises(ScenarioError, match=f"more than the {MAX_CHARS:,}"):
        load_yaml("#" * (MAX_CHARS + 1), "s.yaml", ScenarioError)
