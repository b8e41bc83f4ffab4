"""The three scheduler policies on schedules small enough to work out by hand: quarter-second
steps, prompts chunked (or not) within the token budget, decodes first, the batch cap, and
static batches that admit only when empty. Each test states the schedule it expects."""

from __future__ import annotations

import numpy as np
import pytest

from megawatt.serving import ReplicaConfig, RunResult, Slo, simulate

from .conftest import ConstantStep, kv_for_tokens, make_requests

STEP = 0.25


def run(
    prompt: list[int],
    output: list[int],
    arrival: list[float] | None = None,
    *,
    scheduler: str = "vllm",
    budget: int = 256,
    max_seqs: int = 8,
    kv_tokens: float = 100_000,
) -> RunResult:
    cfg = ReplicaConfig(
        ConstantStep(STEP), kv_for_tokens(kv_tokens), scheduler=scheduler, max_num_seqs=max_seqs,
        max_num_batched_tokens=budget,
    )
    return simulate(cfg, make_requests(prompt, output, arrival_s=arrival))


# -- one request --------------------------------------------------------------------------------


def test_a_long_prompt_is_chunked_within_the_token_budget() -> None:
    """1,000 prompt tokens at 256 a step: chunks 256, 256, 256, 232; the last chunk's step
    delivers the first token (1.0 s), two decode steps the other two (1.5 s)."""
    res = run([1_000], [3])
    assert res.first_token_s[0] == 4 * STEP
    assert res.finish_s[0] == 6 * STEP
    assert res.tpot_s[0] == STEP
    assert res.stats.n_steps == 6
    assert res.stats.busy_s == 6 * STEP
    assert res.stats.prefill_tokens == 1_000


@pytest.mark.parametrize("scheduler", ["fcfs", "static"])
def test_without_chunking_an_over_long_prompt_runs_whole_in_one_step(scheduler: str) -> None:
    res = run([1_000], [3], scheduler=scheduler)
    assert res.first_token_s[0] == STEP
    assert res.finish_s[0] == 3 * STEP
    assert res.stats.n_steps == 3


@pytest.mark.parametrize("scheduler", ["vllm", "fcfs", "static"])
def test_a_lone_request_takes_one_step_per_output_token(scheduler: str) -> None:
    """A short prompt: one step for the prefill and first token, one per further token."""
    res = run([10], [5], [1.0], scheduler=scheduler)
    assert res.first_token_s[0] == 1.0 + STEP
    assert res.finish_s[0] == 1.0 + 5 * STEP
    assert res.ttft_s[0] == STEP
    assert res.e2e_s[0] == 5 * STEP
    assert res.output_tokens_per_s == 5 / (5 * STEP)


# -- joining a running batch --------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["vllm", "fcfs"])
def test_continuous_batching_admits_a_newcomer_at_the_next_step(scheduler: str) -> None:
    """A (8 tokens out) starts at 0; B arrives at 0.1 s, mid-step, and joins the step that
    starts at 0.25 s: its first token at 0.5 s, its only token."""
    res = run([10, 10], [8, 1], [0.0, 0.1], scheduler=scheduler)
    assert res.first_token_s[1] == 2 * STEP
    assert res.finish_s[1] == 2 * STEP
    assert res.ttft_s[1] == pytest.approx(0.4)
    assert res.finish_s[0] == 8 * STEP  # A is not slowed: every step takes 0.25 s


def test_a_static_batch_admits_only_when_the_replica_is_empty() -> None:
    """B arrives at 0.1 s while A runs to 2.0 s; B's prefill runs over [2.0, 2.25)."""
    res = run([10, 10], [8, 1], [0.0, 0.1], scheduler="static")
    assert res.finish_s[0] == 8 * STEP
    assert res.first_token_s[1] == 9 * STEP
    assert res.ttft_s[1] == pytest.approx(9 * STEP - 0.1)


def test_a_static_batch_runs_until_its_longest_member_finishes() -> None:
    """A and B start together; C arrives at 0.3 s. A finishes after 2 tokens, B after 6: C
    waits for B (1.5 s), not for A."""
    res = run([10, 10, 10], [2, 6, 1], [0.0, 0.0, 0.3], scheduler="static")
    np.testing.assert_array_equal(res.finish_s, [2 * STEP, 6 * STEP, 7 * STEP])


def test_the_batch_cap_holds_a_request_until_a_slot_frees() -> None:
    """One sequence at a time: B waits for A's four steps, then takes four of its own."""
    res = run([10, 10], [4, 4], max_seqs=1)
    np.testing.assert_array_equal(res.first_token_s, [STEP, 5 * STEP])
    np.testing.assert_array_equal(res.finish_s, [4 * STEP, 8 * STEP])


# -- the token budget -------------------------------------------------------------------------


def test_decodes_come_first_and_the_prompt_gets_the_rest_of_the_budget() -> None:
    """A decodes from 0.25 s on; B's 256-token prompt arrives at 0.3 s. From 0.5 s each step
    gives A's decode 1 token of the 256 and B 255: B's last prompt token runs in the step
    from 0.75 s, which delivers its first token at 1.0 s."""
    res = run([10, 256], [10, 1], [0.0, 0.3])
    assert res.first_token_s[1] == 4 * STEP
    assert res.finish_s[0] == 10 * STEP


def test_two_prompts_share_a_step_when_both_fit_the_budget() -> None:
    """200 + 50 <= 256: both prefill in the first step, with or without chunking."""
    for scheduler in ("vllm", "fcfs"):
        res = run([200, 50], [1, 1], scheduler=scheduler)
        np.testing.assert_array_equal(res.first_token_s, [STEP, STEP])
        assert res.stats.n_steps == 1


def test_chunking_fills_the_budget_with_part_of_the_next_prompt() -> None:
    """200 then 100 tokens: with chunking the first step takes A's 200 and 56 of B; the second
    B's remaining 44. Without, B's 100 do not fit beside A and wait a step whole."""
    chunked = run([200, 100], [2, 1])
    whole = run([200, 100], [2, 1], scheduler="fcfs")
    np.testing.assert_array_equal(chunked.first_token_s, [STEP, 2 * STEP])
    np.testing.assert_array_equal(whole.first_token_s, [STEP, 2 * STEP])
    assert chunked.stats.prefill_tokens == whole.stats.prefill_tokens == 300


# -- bookkeeping --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["vllm", "fcfs", "static"])
def test_busy_time_is_steps_times_their_length_and_never_exceeds_the_run(scheduler: str) -> None:
    res = run([30, 500, 90, 10], [7, 2, 5, 9], [0.0, 0.2, 0.9, 3.0], scheduler=scheduler)
    assert res.completed.all()
    assert res.stats.busy_s == pytest.approx(res.stats.n_steps * STEP)
    assert res.stats.busy_s <= res.duration_s + 1e-12
    assert res.stats.prefill_tokens == 30 + 500 + 90 + 10
    # At least one step per token of the longest output; at most the steps of serving the
    # requests one after another (prompt chunks of the budget, then one step a further token).
    assert res.stats.n_steps >= 9
    assert res.stats.n_steps <= sum(-(-p // 256) + o - 1 for p, o in ((30, 7), (500, 2), (90, 5), (10, 9)))


@pytest.mark.parametrize("scheduler", ["vllm", "fcfs", "static"])
def test_a_request_bigger_than_the_cache_is_rejected_and_the_rest_served(scheduler: str) -> None:
    """A 5,000-token prompt in a 1,000-token cache can never run."""
    res = run([5_000, 20], [1, 3], kv_tokens=1_000, scheduler=scheduler, budget=8_192)
    np.testing.assert_array_equal(res.rejected, [True, False])
    assert res.finish_s[1] == 3 * STEP
    assert res.violations(Slo()) == ("rejected",)
