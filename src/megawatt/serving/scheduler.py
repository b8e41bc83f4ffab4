"""Scheduler policies of a replica, in a registry: how each engine step's batch is formed.

Every policy runs decodes of admitted sequences each step; they differ in how prompts enter:

- `vllm`:   vLLM-v1-like continuous batching with chunked prefill: running decodes first, then
            prefill chunks (partial prompts first, then new ones in arrival order) within the
            per-step token budget, the batch cap and the free KV cache.
- `fcfs`:   continuous batching without chunking (Orca-style): a prompt is prefilled whole in
            one step; new prompts join while the token budget allows (one over-long prompt may
            run alone).
- `static`: static batching, for contrast: a batch is admitted only when the replica is empty
            and runs until every sequence in it has finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from megawatt.errors import InputError


@dataclass(frozen=True)
class SchedulerPolicy:
    """How a replica admits and chunks prompts (see the module docstring for the policies)."""

    name: str
    chunked_prefill: bool
    admit_while_running: bool
    description: str


SCHEDULERS: dict[str, SchedulerPolicy] = {
    "vllm": SchedulerPolicy(
        "vllm", True, True, "continuous batching, chunked prefill, decode first (vLLM v1)"
    ),
    "fcfs": SchedulerPolicy(
        "fcfs", False, True, "continuous batching, whole-prompt prefill (Orca-style)"
    ),
    "static": SchedulerPolicy(
        "static", False, False, "static batching: admit only when empty, run to completion"
    ),
}


def scheduler(name: str) -> SchedulerPolicy:
    """The policy registered under `name`; an unknown name lists the known ones."""
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise InputError(
            f"scheduler must be one of {', '.join(sorted(SCHEDULERS))}; got {name!r}."
        ) from None
