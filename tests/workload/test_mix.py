"""Traffic mixes: the ChatGPT-like default and mixes written in scenario files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megawatt.errors import InputError
from megawatt.workload import (
    AllAtOnce,
    Fixed,
    Lognormal,
    Mix,
    Poisson,
    RequestClass,
    chatgpt_mix,
    mix_from_spec,
)


def test_the_chatgpt_mix_has_the_six_text_classes_of_facts_b7() -> None:
    mix = chatgpt_mix()
    assert mix.class_names == (
        "chat",
        "long-context",
        "reasoning",
        "coding",
        "agentic",
        "multimodal",
    )
    assert sum(item.share for item in mix.classes) == pytest.approx(1.0, abs=1e-12)
    # image generation (2 %) is left out, the rest renormalised by 0.98
    assert mix.classes[0].share == pytest.approx(0.55 / 0.98)
    assert all("FACTS.md B." in item.source for item in mix.classes)


def test_the_chatgpt_mix_means_are_plausible() -> None:
    mix = chatgpt_mix()
    chat = mix.classes[0]
    # lognormal mean = median * exp(sigma^2 / 2): 1,000 * e^0.5 = 1,649 tokens
    assert chat.mean_prompt_tokens == pytest.approx(1649, rel=0.01)
    reasoning = mix.classes[2]
    assert 1_000 < reasoning.mean_output_tokens < 2_000  # ServeGen R1 mean output 1,527
    agentic = mix.classes[4]
    assert agentic.cached_prefix is not None
    assert 90_000 < agentic.mean_cached_tokens < 118_656  # clipped by the 128k window
    # agents are 7 % of requests but more than half of the input tokens (FACTS.md B.7)
    assert agentic.share * agentic.mean_prompt_tokens > 0.5 * mix.mean_prompt_tokens
    assert 100 < mix.mean_output_tokens < 1_000


@given(context=st.integers(4096, 2_000_000))
@settings(max_examples=25, deadline=None)
def test_no_sampled_request_overflows_the_context(context: int) -> None:
    requests = chatgpt_mix(context).sample(np.random.default_rng(context), 3000, AllAtOnce())
    assert (requests.prompt_tokens + requests.output_tokens <= context).all()
    assert (requests.cached_tokens < requests.prompt_tokens).all()


def test_a_large_sample_matches_the_stated_means() -> None:
    mix = chatgpt_mix()
    requests = mix.sample(np.random.default_rng(0), 300_000, Poisson(100.0))
    # heavy tails (sigma up to 1.8, capped): 3 % is over 4 standard errors at this size
    assert requests.mean_prompt_tokens == pytest.approx(mix.mean_prompt_tokens, rel=0.03)
    assert requests.mean_output_tokens == pytest.approx(mix.mean_output_tokens, rel=0.03)
    counts = np.bincount(requests.class_id, minlength=len(mix.classes)) / len(requests)
    assert counts == pytest.approx(mix.shares, abs=0.005)
    assert requests.class_names == mix.class_names


def test_same_seed_same_requests_different_seed_different_requests() -> None:
    mix = chatgpt_mix()
    first = mix.sample(np.random.default_rng(7), 500, Poisson(5.0), start_s=10.0)
    again = mix.sample(np.random.default_rng(7), 500, Poisson(5.0), start_s=10.0)
    other = mix.sample(np.random.default_rng(8), 500, Poisson(5.0), start_s=10.0)
    for column in ("arrival_s", "prompt_tokens", "output_tokens", "cached_tokens", "class_id"):
        assert np.array_equal(getattr(first, column), getattr(again, column))
    assert not np.array_equal(first.prompt_tokens, other.prompt_tokens)
    assert first.arrival_s[0] >= 10.0


def test_shares_that_do_not_sum_to_one_are_named() -> None:
    classes = (
        RequestClass("chat", 0.6, Fixed(10), Fixed(2)),
        RequestClass("code", 0.3, Fixed(10), Fixed(2)),
    )
    with pytest.raises(InputError, match=r"sum to 1 .* got 0.9 from chat=0.6, code=0.3"):
        Mix(classes)
    with pytest.raises(InputError, match="unique"):
        Mix((RequestClass("a", 0.5, Fixed(1), Fixed(1)),) * 2)
    with pytest.raises(InputError, match="share must be a fraction"):
        RequestClass("a", 1.5, Fixed(1), Fixed(1))
    with pytest.raises(InputError, match="prompt must be a length distribution"):
        RequestClass("a", 1.0, 100, Fixed(1))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="max_context_tokens must be a whole number >= 4096"):
        chatgpt_mix(1000)


def test_a_cached_prefix_is_added_to_the_prompt() -> None:
    mix = Mix((RequestClass("agent", 1.0, Fixed(100), Fixed(5), cached_prefix=Fixed(900)),))
    requests = mix.sample(np.random.default_rng(0), 3, AllAtOnce())
    assert requests.prompt_tokens.tolist() == [1000] * 3
    assert requests.cached_tokens.tolist() == [900] * 3
    assert mix.mean_prompt_tokens == 1000.0


def test_a_scenario_file_can_write_its_own_mix() -> None:
    spec = [
        {
            "name": "chat",
            "share": 0.75,
            "prompt": {"kind": "lognormal", "median": 1000, "sigma": 1.0, "max_tokens": 32768},
            "output": {"kind": "fixed", "n_tokens": 100},
        },
        {
            "name": "agent",
            "share": 0.25,
            "prompt": {"kind": "fixed", "n_tokens": 800},
            "output": {"kind": "fixed", "n_tokens": 200},
            "cached_prefix": {"kind": "fixed", "n_tokens": 50_000},
            "source": "made up for a test",
        },
    ]
    mix = mix_from_spec(spec)
    assert mix.class_names == ("chat", "agent")
    assert mix.classes[0].prompt == Lognormal(1000, 1.0, max_tokens=32768)
    assert mix.mean_output_tokens == pytest.approx(0.75 * 100 + 0.25 * 200)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "non-empty list"),
        ([{"name": "a", "share": 1.0, "prompt": {"kind": "fixed", "n_tokens": 1}}], "output"),
        (
            [
                {
                    "name": "a",
                    "share": 1.0,
                    "prompt": {"kind": "fixed", "n_tokens": 1},
                    "output": {"kind": "fixed", "n_tokens": 1},
                    "weight": 2,
                }
            ],
            r"unknown key\(s\) \['weight'\]",
        ),
        (
            [
                {
                    "name": "a",
                    "share": 1.0,
                    "prompt": {"kind": "normal"},
                    "output": {"kind": "fixed", "n_tokens": 1},
                }
            ],
            "mix class 'a' prompt: length spec kind must be one of",
        ),
    ],
)
def test_a_bad_mix_spec_says_which_class_and_key(
    spec: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        mix_from_spec(spec)
