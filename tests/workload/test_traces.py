"""Traces: the built-in files load as their READMEs describe; bad files name the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError, TraceError
from megawatt.workload import (
    BUILTIN_TRACES,
    MOONCAKE_BLOCK_TOKENS,
    builtin_trace,
    builtin_trace_with_prefixes,
    load_trace,
    load_trace_with_prefixes,
    time_scaled,
)

# rows, mean input, mean output (tokens) from shared/data/traces/*/README.md
README_STATS = {
    "azure-code-2023": (8_819, 2_048, 27.9),
    "azure-conv-2023": (19_366, 1_155, 211),
    "mooncake-conversation": (12_031, 12_035, 343),
    "mooncake-synthetic": (3_993, 15_325, 149),
}


@pytest.mark.parametrize("name", sorted(README_STATS))
def test_builtin_traces_load_with_the_readme_counts_and_means(name: str) -> None:
    n_rows, mean_in, mean_out = README_STATS[name]
    requests = builtin_trace(name)
    assert len(requests) == n_rows
    assert requests.class_names == (name,)
    assert requests.arrival_s[0] == 0.0
    assert (np.diff(requests.arrival_s) >= 0).all()
    # READMEs round the means: half a unit of their last digit
    tolerance_out = 0.05 if isinstance(mean_out, float) else 0.5
    assert requests.mean_prompt_tokens == pytest.approx(mean_in, abs=0.5)
    assert requests.mean_output_tokens == pytest.approx(mean_out, abs=tolerance_out)
    assert name in BUILTIN_TRACES


def test_trace_spans_match_the_readmes() -> None:
    assert builtin_trace("azure-conv-2023").duration_s == pytest.approx(3502, abs=1)
    assert builtin_trace("azure-code-2023").duration_s == pytest.approx(3436, abs=1)
    assert builtin_trace("mooncake-conversation").duration_s == pytest.approx(3537, abs=1)


@pytest.mark.parametrize(
    ("name", "reused_blocks", "total_blocks"),
    [("mooncake-conversation", 105_710, 288_500), ("mooncake-synthetic", 77_953, 121_877)],
)
def test_mooncake_prefix_reuse_matches_the_readme(
    name: str, reused_blocks: int, total_blocks: int
) -> None:
    requests, prefixes = builtin_trace_with_prefixes(name)
    assert len(prefixes) == len(requests)
    assert sum(len(ids) for ids in prefixes) == total_blocks
    assert (requests.cached_tokens < requests.prompt_tokens).all()
    # cached tokens are whole reused blocks, capped at prompt - 1 (a partial last block)
    cached_blocks = requests.cached_tokens.sum() / MOONCAKE_BLOCK_TOKENS
    assert cached_blocks == pytest.approx(reused_blocks, rel=0.005)


def test_a_trace_without_prefix_ids_has_none_to_give() -> None:
    with pytest.raises(InputError, match="no prefix-block ids"):
        builtin_trace_with_prefixes("azure-conv-2023")
    with pytest.raises(InputError, match="azure-code-2023, azure-conv-2023"):
        builtin_trace("sharegpt")


def test_leading_blocks_seen_before_count_as_cached(tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    lines = [
        {"timestamp": 1000, "input_length": 1100, "output_length": 5, "hash_ids": [1, 2, 3]},
        {"timestamp": 1500, "input_length": 1500, "output_length": 5, "hash_ids": [1, 2, 9]},
        {"timestamp": 2000, "input_length": 600, "output_length": 5, "hash_ids": [7, 1]},
        {"timestamp": 2000, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    requests, prefixes = load_trace_with_prefixes(path)
    assert requests.arrival_s.tolist() == [0.0, 0.5, 1.0, 1.0]
    # second: two leading blocks seen; third: block 7 is new, so nothing leads; fourth: capped
    assert requests.cached_tokens.tolist() == [0, 1024, 0, 699]
    assert [ids.tolist() for ids in prefixes] == [[1, 2, 3], [1, 2, 9], [7, 1], [1, 2]]
    assert load_trace(path).class_names == ("tiny",)


def test_the_generic_csv_schema_with_classes(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "arrival_s,prompt_tokens,output_tokens,cached_tokens,class\n"
        "10.0,100,5,0,chat\n"
        "10.5,9000,50,8000,agent\n"
        "12,200,7,,\n"
    )
    requests = load_trace(path, class_name="other")
    assert requests.arrival_s.tolist() == [0.0, 0.5, 2.0]
    assert requests.cached_tokens.tolist() == [0, 8000, 0]
    assert [requests.class_names[i] for i in requests.class_id] == ["chat", "agent", "other"]


def test_the_generic_jsonl_schema(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"arrival_s": 1, "prompt_tokens": 10, "output_tokens": 2}\n'
        "\n"
        '{"arrival_s": 3, "prompt_tokens": 20, "output_tokens": 4, "class": "code"}\n'
    )
    requests = load_trace(path)
    assert requests.arrival_s.tolist() == [0.0, 2.0]
    assert requests.class_names == ("mine", "code")


def test_an_azure_style_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 23:59:59.5000000,10,2\n"
        "2023-11-17 00:00:00.2500000,20,3\n"
    )
    requests = load_trace(path)
    assert requests.arrival_s.tolist() == pytest.approx([0.0, 0.75])
    assert requests.prompt_tokens.tolist() == [10, 20]


GENERIC_HEADER = "arrival_s,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("arrival_s,prompt_tokens\n0,5\n", 1, "missing column(s) output_tokens"),
        ("arrival_s,prompt_tokens,output_tokens,extra\n", 1, "unknown column(s) extra"),
        (GENERIC_HEADER + "0,5,1\n1,-3,1\n", 3, "prompt_tokens must be >= 1; got -3. Fix the row"),
        (GENERIC_HEADER + "0,5,1\n1,5,0\n", 3, "output_tokens must be >= 1; got 0"),
        (GENERIC_HEADER + "0,5,1\n2,5,1\n\n1,5,1\n", 5, "arrival_s must not be earlier"),
        (GENERIC_HEADER + "zero,5,1\n", 2, "arrival_s must be a finite number; got 'zero'"),
        (GENERIC_HEADER + "0,five,1\n", 2, "prompt_tokens must be a whole number"),
        (GENERIC_HEADER + "0,5.5,1\n", 2, "prompt_tokens must be a whole number"),
        (GENERIC_HEADER + "0,5,1,9\n", 2, "expected 3 fields"),
        (
            "arrival_s,prompt_tokens,output_tokens,cached_tokens\n0,5,1,5\n",
            2,
            "cached_tokens must be >= 0 and < prompt_tokens (5); got 5",
        ),
    ],
)
def test_a_bad_csv_row_is_reported_with_its_line(
    tmp_path: Path, content: str, line: int, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    text = str(caught.value)
    assert text.startswith(f"{path} line {line}: ")
    assert message in text


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (['{"arrival_s": 0, "prompt_tokens": 5}'], 1, "missing key(s) output_tokens"),
        (
            ['{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 1}', "", "{oops"],
            3,
            "not valid JSON",
        ),
        (
            ['{"arrival_s": 0, "prompt_tokens": "5", "output_tokens": 1}'],
            1,
            "prompt_tokens must be a whole number of tokens; got '5'",
        ),
        (
            [
                '{"arrival_s": 5, "prompt_tokens": 5, "output_tokens": 1}',
                '{"arrival_s": 4, "prompt_tokens": 5, "output_tokens": 1}',
            ],
            2,
            "arrival_s must not be earlier than the previous row's (5 s); got 4 s",
        ),
        (["[1, 2, 3]"], 1, "must be a JSON object"),
    ],
)
def test_a_bad_jsonl_line_is_reported_with_its_line(
    tmp_path: Path, lines: list[str], line: int, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError) as caught:
        load_trace(path, "jsonl")
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert message in str(caught.value)


def test_bad_azure_and_mooncake_rows_name_their_line(tmp_path: Path) -> None:
    azure = tmp_path / "azure.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 nonsense,5,1\n")
    with pytest.raises(TraceError, match=r"azure.csv line 2: TIMESTAMP must read"):
        load_trace(azure)
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,0,1\n")
    with pytest.raises(TraceError, match=r"line 2: ContextTokens must be >= 1; got 0"):
        load_trace(azure, "azure")
    mooncake = tmp_path / "moon.jsonl"
    mooncake.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n')
    with pytest.raises(TraceError, match=r"moon.jsonl line 1: missing key\(s\) hash_ids"):
        load_trace(mooncake, "mooncake")


def test_missing_and_empty_files_are_trace_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        load_trace(tmp_path / "nowhere.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text(GENERIC_HEADER)
    with pytest.raises(TraceError, match="no requests"):
        load_trace(empty)
    with pytest.raises(InputError, match="format must be one of"):
        load_trace(empty, "parquet")  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(1, 10**6), st.integers(1, 10**4)),
        min_size=1,
        max_size=20,
    )
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_written_csv_reads_back_rebased(tmp_path: Path, rows: list[tuple[int, int, int]]) -> None:
    rows = sorted(rows)
    path = tmp_path / "roundtrip.csv"
    path.write_text(GENERIC_HEADER + "".join(f"{a / 8},{p},{o}\n" for a, p, o in rows))
    requests = load_trace(path)
    assert requests.arrival_s.tolist() == [(a - rows[0][0]) / 8 for a, _, _ in rows]
    assert requests.prompt_tokens.tolist() == [p for _, p, _ in rows]
    assert requests.output_tokens.tolist() == [o for _, _, o in rows]


def test_time_scaled_multiplies_the_rate() -> None:
    requests = builtin_trace("azure-conv-2023")
    faster = time_scaled(requests, 10)
    assert faster.duration_s == pytest.approx(requests.duration_s / 10)
    assert np.array_equal(faster.prompt_tokens, requests.prompt_tokens)
    with pytest.raises(InputError, match="speedup must be a finite number > 0; got 0"):
        time_scaled(requests, 0)
