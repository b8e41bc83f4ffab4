"""Sessions recovered from Mooncake prefix blocks, their statistics and the fitted chat class."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import megawatt.workload.trace_sessions as trace_sessions
from megawatt.errors import InputError
from megawatt.workload.lengths import Lognormal
from megawatt.workload.requests import Requests
from megawatt.workload.sessions import MOONCAKE_CHAT_FIT, default_session_classes, sigma_of_p90
from megawatt.workload.trace_sessions import (
    ChatFit,
    SessionStatistics,
    TraceSessions,
    fit_chat,
    mooncake_chat_fit,
    mooncake_sessions,
    session_statistics,
    statistics_table,
)

# A tiny trace: id 0 is the system prompt every request starts with. Rows: (arrival s, prompt,
# output, blocks).
_TINY = [
    (0.0, 1200, 100, [0, 1, 2]),  # 0: session A's first turn (last block partial)
    (0.0, 1100, 50, [0, 5, 6]),  # 1: session B's first turn
    (60.0, 1800, 80, [0, 1, 3, 4]),  # 2: A's next turn: keeps 0, 1; its block 2 now full (3)
    (90.0, 900, 20, [0, 7]),  # 3: shares only the system prompt: session C
    (100.0, 1190, 40, [0, 5, 8]),  # 4: B's next turn, 40 new tokens
    (120.0, 2500, 30, [0, 9, 10, 11, 12]),  # 5: session D
    (150.0, 1300, 30, [0, 9, 13]),  # 6: keeps 2 of D's 5 blocks: a branch of D
    (160.0, 1800, 60, [0, 1, 3, 4]),  # 7: a retry of row 2 (same blocks)
    (200.0, 2400, 50, [0, 1, 3, 14, 15]),  # 8: continues the latest of rows 2 and 7
]


def _tiny() -> TraceSessions:
    requests = Requests(
        arrival_s=[r[0] for r in _TINY],
        prompt_tokens=[r[1] for r in _TINY],
        output_tokens=[r[2] for r in _TINY],
        cached_tokens=[0] * len(_TINY),
        class_id=[0] * len(_TINY),
        class_names=("tiny",),
    )
    ids = [np.array(r[3], np.int64) for r in _TINY]
    return mooncake_sessions(requests, ids, decode_tokens_per_s=10.0)


def test_a_turn_continues_the_earlier_request_whose_blocks_it_extends() -> None:
    s = _tiny()
    assert s.parent.tolist() == [-1, -1, 0, -1, 1, -1, 5, 2, 7]
    assert s.session.tolist() == [0, 1, 0, 2, 1, 3, 3, 0, 0]
    assert s.turn.tolist() == [0, 0, 1, 0, 1, 0, 1, 2, 3]
    assert s.n_turns.tolist() == [4, 2, 1, 2]
    assert s.start_s.tolist() == [0.0, 0.0, 90.0, 120.0]
    assert s.shared_blocks.tolist() == [0, 0, 2, 0, 2, 0, 2, 4, 3]


def test_a_turn_keeping_only_part_of_its_parent_is_a_branch() -> None:
    s = _tiny()
    assert s.extends.tolist() == [False, False, True, False, True, False, False, True, True]


def test_new_tokens_resent_tokens_and_gaps_of_a_next_turn() -> None:
    s = _tiny()
    assert s.new_tokens[2] == 1800 - 1200 - 100
    assert s.new_tokens[4] == 40
    assert s.new_tokens[0] == 1200  # a first turn: its whole prompt
    assert s.resent_tokens.tolist()[:5] == [0, 0, 1024, 0, 1024]
    assert s.gap_arrival_s[2] == 60.0
    assert s.gap_s[2] == 60.0 - 100 / 10.0  # minus the parent's 100 output tokens at 10 tok/s
    assert np.isnan(s.gap_s[0]) and np.isnan(s.gap_arrival_s[3])
    assert s.gap_s[8] == 40.0 - 60 / 10.0
    assert s.span_s == 200.0
    slow = mooncake_sessions(s.requests, [np.array(r[3], np.int64) for r in _TINY], decode_tokens_per_s=0.5)
    assert slow.gap_s[8] == 0.0  # an answer estimated to outlast the gap leaves no think time


def test_statistics_count_the_sessions_starting_in_the_window() -> None:
    stats = session_statistics(_tiny(), from_s=0.0, before_s=100.0)
    assert stats.n_sessions == 3 and stats.n_turns == 7  # sessions A, B, C
    assert stats.turns.p50 == 2.0 and stats.turns.n == 3
    assert stats.single_turn_share == pytest.approx(1 / 3)
    assert stats.branch_share == 0.0
    assert stats.first_prompt.p50 == 1100.0


def test_bad_inputs_are_refused_in_one_line() -> None:
    s = _tiny()
    requests = s.requests
    ids = [np.array(r[3], np.int64) for r in _TINY]
    with pytest.raises(InputError, match="one block list per request"):
        mooncake_sessions(requests, ids[:-1])
    with pytest.raises(InputError, match="named another prefix"):
        mooncake_sessions(requests, [*ids[:-1], np.array([0, 2, 1], np.int64)])
    with pytest.raises(InputError, match="non-empty"):
        mooncake_sessions(requests, [*ids[:-1], np.zeros(0, np.int64)])
    with pytest.raises(InputError, match="common_share"):
        mooncake_sessions(requests, ids, common_share=0.0)
    with pytest.raises(InputError, match="from_s < before_s"):
        session_statistics(s, from_s=100.0, before_s=50.0)


# -- the built-in Mooncake conversation trace ------------------------------------------------------
Measured = tuple[SessionStatistics, ChatFit]


@pytest.fixture(scope="module")
def measured() -> Measured:
    return mooncake_chat_fit()


def test_the_stored_chat_fit_is_a_recomputation(measured: Measured) -> None:
    _, fit = measured
    recomputed = dataclasses.asdict(fit)
    assert set(recomputed) == set(MOONCAKE_CHAT_FIT)
    for name, value in recomputed.items():
        assert MOONCAKE_CHAT_FIT[name] == pytest.approx(value, abs=6e-5), name


def test_the_module_docstring_tables_are_a_recomputation(measured: Measured) -> None:
    stats, _ = measured
    doc = trace_sessions.__doc__ or ""
    assert statistics_table(stats) in doc


def test_the_fitted_chat_medians_are_the_sample_medians(measured: Measured) -> None:
    stats, fit = measured
    assert fit.turns_median == stats.turns.p50
    assert fit.first_prompt_median == stats.first_prompt.p50
    assert fit.new_tokens_median == stats.new_tokens.p50
    assert fit.output_median == stats.output.p50
    assert fit.gap_median_s == stats.gap_s.p50
    assert fit.output_sigma == sigma_of_p90(stats.output.p50, stats.output.p90)
    assert fit == fit_chat(stats)


def test_the_trace_statistics_are_sane(measured: Measured) -> None:
    stats, _ = measured
    assert stats.turns.p50 >= 1 and stats.turns.p90 >= stats.turns.p50
    assert stats.turns.mean > 1  # some conversations go on
    assert 0 < stats.resent_share < 1
    for share in (stats.branch_share, stats.nonpositive_new_share, stats.single_turn_share):
        assert 0 <= share < 1
    assert stats.gap_s.p50 <= stats.gap_arrival_s.p50  # think time: arrival gap less answer time
    assert 0 < stats.from_s < stats.before_s
    assert stats.turns.n == stats.first_prompt.n == stats.n_sessions
    assert stats.output.n == stats.n_turns


def test_every_turn_of_the_trace_continues_an_earlier_one_with_its_context() -> None:
    from megawatt.workload.traces import builtin_trace_with_prefixes

    requests, ids = builtin_trace_with_prefixes("mooncake-conversation")
    s = mooncake_sessions(requests, ids)
    later = np.flatnonzero(s.parent >= 0)
    assert (s.parent[later] < later).all()
    assert (s.shared_blocks[later] >= 2).all()  # beyond the system prompt (block 0)
    for row in later[s.extends[later]]:
        parent_ids = ids[s.parent[row]]
        assert len(parent_ids) - s.shared_blocks[row] <= 1
        np.testing.assert_array_equal(ids[row][: s.shared_blocks[row]], parent_ids[: s.shared_blocks[row]])
    assert s.n_turns.sum() == len(requests.arrival_s)
    doc = " ".join((trace_sessions.__doc__ or "").split())
    n_plain = int(s.extends.sum())
    assert (
        f"{s.n_sessions:,} sessions and {len(later):,} later turns ({n_plain:,} plain next turns, "
        f"{len(later) - n_plain:,} branches)"
    ) in doc


def test_the_chat_class_uses_the_fit_and_quotes_the_sample(measured: Measured) -> None:
    stats, fit = measured
    chat = {c.name: c for c in default_session_classes()}["chat"]
    assert chat.output == Lognormal(fit.output_median, MOONCAKE_CHAT_FIT["output_sigma"], max_tokens=8192)
    assert chat.gap_median_s == MOONCAKE_CHAT_FIT["gap_median_s"]
    for figure in (
        f"{stats.n_sessions:,} conversations ({stats.n_turns:,} turns)",
        f"first prompt p50 {stats.first_prompt.p50:,.0f}, p90 {stats.first_prompt.p90:,.0f}",
        f"output p50 {stats.output.p50:,.0f}, p90 {stats.output.p90:,.0f}",
        f"think time p50 {stats.gap_s.p50:,.0f} s, p90 {stats.gap_s.p90:,.0f} s",
    ):
        assert figure in chat.source, figure
    rng = np.random.default_rng(4)
    turns = chat.turns.sample(rng, 100_000)
    assert np.median(turns) == stats.turns.p50
    assert (turns >= 1).all()
    assert "ESTIMATE" in chat.source
