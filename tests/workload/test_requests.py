"""The columnar request table: validation, subsets, merges and time shifts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.workload import Requests


def table(
    arrival_s: list[float],
    prompt: list[float] | None = None,
    output: list[float] | None = None,
    cached: list[float] | None = None,
    class_id: list[float] | None = None,
    class_names: tuple[str, ...] = ("chat",),
) -> Requests:
    n = len(arrival_s)
    return Requests(
        arrival_s=np.array(arrival_s, dtype=np.float64),
        prompt_tokens=np.array(prompt if prompt is not None else [100] * n),
        output_tokens=np.array(output if output is not None else [10] * n),
        cached_tokens=np.array(cached if cached is not None else [0] * n),
        class_id=np.array(class_id if class_id is not None else [0] * n),
        class_names=class_names,
    )


def test_a_table_coerces_dtypes_and_is_read_only() -> None:
    requests = table([0, 1, 1], prompt=[5.0, 6.0, 7.0], class_id=[0, 0, 0])
    assert len(requests) == 3
    assert requests.arrival_s.dtype == np.float64
    assert requests.prompt_tokens.dtype == np.int64
    assert requests.class_id.dtype == np.int32
    assert requests.mean_prompt_tokens == 6.0
    assert requests.mean_output_tokens == 10.0
    with pytest.raises(ValueError, match="read-only"):
        requests.prompt_tokens[0] = 1


def test_the_table_copies_its_inputs() -> None:
    prompt = np.array([5, 6], dtype=np.int64)
    requests = table([0, 1], prompt=list(prompt))
    prompt[0] = 99
    assert requests.prompt_tokens[0] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arrival_s": [0, 1], "prompt": [1]}, "equal lengths"),
        ({"arrival_s": [0, 1], "prompt": [1, 0]}, r"prompt_tokens must be >= 1; got 0 at row 1"),
        ({"arrival_s": [0], "output": [0]}, r"output_tokens must be >= 1"),
        ({"arrival_s": [0], "prompt": [5], "cached": [5]}, r"cached_tokens must be in \[0, "),
        ({"arrival_s": [0], "cached": [-1]}, r"cached_tokens must be in"),
        ({"arrival_s": [2.0, 1.0]}, r"non-decreasing; row 1 arrives at 1.0 s"),
        ({"arrival_s": [float("nan")]}, "finite"),
        ({"arrival_s": [0], "class_id": [1]}, r"class_id must index class_names"),
        ({"arrival_s": [0], "prompt": [1.5]}, "whole numbers"),
    ],
)
def test_a_broken_rule_names_the_column_and_the_value(
    kwargs: dict[str, list[float]], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        table(
            kwargs["arrival_s"],
            prompt=kwargs.get("prompt"),
            output=kwargs.get("output"),
            cached=kwargs.get("cached"),
            class_id=kwargs.get("class_id"),
        )


def test_duplicate_class_names_are_refused() -> None:
    with pytest.raises(InputError, match="unique"):
        table([0], class_names=("chat", "chat"))


def test_an_empty_table_is_allowed_and_has_zero_means() -> None:
    empty = Requests.empty(("chat",))
    assert len(empty) == 0
    assert empty.mean_prompt_tokens == 0.0
    assert empty.duration_s == 0.0


def test_subset_by_mask_and_by_index_keeps_every_column() -> None:
    requests = table(
        [0.0, 1.0, 2.0, 3.0],
        prompt=[10, 20, 30, 40],
        output=[1, 2, 3, 4],
        cached=[0, 5, 0, 9],
        class_id=[0, 1, 0, 1],
        class_names=("chat", "agent"),
    )
    by_mask = requests.subset(requests.class_id == 1)
    by_index = requests.subset(np.array([1, 3]))
    for picked in (by_mask, by_index):
        assert picked.arrival_s.tolist() == [1.0, 3.0]
        assert picked.prompt_tokens.tolist() == [20, 40]
        assert picked.output_tokens.tolist() == [2, 4]
        assert picked.cached_tokens.tolist() == [5, 9]
        assert picked.class_names == ("chat", "agent")
    reordered = requests.subset(np.array([3, 0]))
    assert reordered.arrival_s.tolist() == [0.0, 3.0]
    with pytest.raises(InputError, match="shape"):
        requests.subset(np.array([True, False]))
    with pytest.raises(InputError, match="index"):
        requests.subset(np.array([7]))


def test_concat_merges_by_arrival_and_unifies_class_names() -> None:
    chat = table([0.0, 2.0], prompt=[1, 2], class_names=("chat",))
    agent = table([1.0, 2.0], prompt=[3, 4], class_names=("agent",))
    merged = Requests.concat([chat, agent])
    assert merged.class_names == ("chat", "agent")
    assert merged.arrival_s.tolist() == [0.0, 1.0, 2.0, 2.0]
    assert merged.prompt_tokens.tolist() == [1, 3, 2, 4]  # tie at 2 s keeps part order
    names = [merged.class_names[i] for i in merged.class_id]
    assert names == ["chat", "agent", "chat", "agent"]
    assert len(Requests.concat([])) == 0


def test_shifted_and_with_arrivals_move_time_and_keep_rows_together() -> None:
    requests = table([0.0, 1.0], prompt=[10, 20])
    assert requests.shifted(5.0).arrival_s.tolist() == [5.0, 6.0]
    swapped = requests.with_arrivals(np.array([3.0, 2.0]))
    assert swapped.arrival_s.tolist() == [2.0, 3.0]
    assert swapped.prompt_tokens.tolist() == [20, 10]
    with pytest.raises(InputError, match="shape"):
        requests.with_arrivals(np.array([1.0]))


rows = st.lists(
    st.tuples(
        st.floats(0, 1e6, allow_nan=False),
        st.integers(1, 10**6),
        st.integers(1, 10**5),
        st.sampled_from(["chat", "agent", "code"]),
    ),
    max_size=30,
)


def from_rows(data: list[tuple[float, int, int, str]]) -> Requests:
    names = tuple(sorted({name for *_, name in data}))
    data = sorted(data, key=lambda row: row[0])
    return Requests(
        arrival_s=np.array([row[0] for row in data], dtype=np.float64),
        prompt_tokens=np.array([row[1] for row in data], dtype=np.int64),
        output_tokens=np.array([row[2] for row in data], dtype=np.int64),
        cached_tokens=np.zeros(len(data), dtype=np.int64),
        class_id=np.array([names.index(row[3]) for row in data], dtype=np.int32),
        class_names=names,
    )


def as_multiset(requests: Requests) -> list[tuple[float, int, int, str]]:
    return sorted(
        (float(a), int(p), int(o), requests.class_names[c])
        for a, p, o, c in zip(
            requests.arrival_s,
            requests.prompt_tokens,
            requests.output_tokens,
            requests.class_id,
            strict=True,
        )
    )


@given(rows, rows)
def test_concat_loses_no_request_and_stays_sorted(
    left: list[tuple[float, int, int, str]], right: list[tuple[float, int, int, str]]
) -> None:
    a, b = from_rows(left), from_rows(right)
    merged = Requests.concat([a, b])
    assert len(merged) == len(a) + len(b)
    assert (np.diff(merged.arrival_s) >= 0).all()
    assert as_multiset(merged) == sorted(as_multiset(a) + as_multiset(b))
