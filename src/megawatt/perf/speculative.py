"""Speculative decoding (draft model, EAGLE, MTP) as a `StepModel` wrapper: the simulator keeps
counting one token per sequence per step, and each step costs a verify pass plus the drafts,
divided by the tokens a verify step yields on average.

A draft of `k` tokens whose tokens are each accepted with probability `a` (independently, a
rejection ending the run) yields `(1 - a^(k+1)) / (1 - a)` tokens per verify step, counting the
target model's own token. The verify step runs the target over `k + 1` tokens per sequence: the
`k` extra tokens are priced like a prefill chunk over the sequence's cached context. Each drafted
token costs `draft_cost` of a plain decode step of the same batch (a one-layer MTP or EAGLE head
plus the LM head and its launches). Steps without decodes (pure prefill) are unchanged; a step
mixing decodes and prefill chunks is scaled as a whole, so exact for batch 1 and pure decode.

On wafers the draft is a real model kept on the same wafers (`Deployment.draft_model`):
`wafer_speculation` times a draft pass on its own core regions and states `draft_cost` as its
ratio to a target pass. There a verify pass is far from free: each core does k+1 tokens' MACs on
its weight tile, so speculation pays only where per-layer latency dominates.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from megawatt.errors import InputError
from megawatt.perf.deployment import Deployment, Speculation, tokens_per_verify
from megawatt.perf.memory import plan_memory
from megawatt.perf.roofline import (
    PREFILL_UNIT_TOKENS,
    BatchShape,
    FloatArray,
    RooflineStepModel,
    StepCoefficients,
    StepModel,
)

# `Speculation` and `tokens_per_verify` live in perf/deployment.py, beside the deployment that
# carries the settings (`Deployment.speculation`), and are re-exported here.
__all__ = [
    "DRAFT_CONTEXT_TOKENS",
    "Speculation",
    "SpeculativeStepModel",
    "tokens_per_verify",
    "wafer_speculation",
]

def verify_chunk(
    k: int,
    n_decode: int,
    decode_context: float,
    decode_window: float,
    prefill_tokens: int,
    prefill_attention: float,
    prefill_window: float,
    n_logits: int,
    windowed: bool,
) -> tuple[int, float, float, int]:
    """A verify pass over k + 1 tokens per decoding sequence prices the k extra ones as a prompt
    chunk after each sequence's context: the batch's prefill tokens, attention and windowed
    attention, and logits with them. Written once for both engines: `SpeculativeStepModel`
    calls it, the compiled replica compiles it."""
    extra = n_decode * k
    span = (k + 1) / 2.0
    return (
        prefill_tokens + extra,
        prefill_attention + k * (decode_context + n_decode * span),
        prefill_window + (k * (decode_window + n_decode * span) if windowed else 0.0),
        n_logits + extra,
    )


def pipelined_decodes(
    k: int,
    n_decode: int,
    decode_context: float,
    decode_window: float,
    decode_context_max: float,
    n_logits: int,
    windowed: bool,
) -> tuple[int, float, float, float, int]:
    """A pipelined verify pass runs each sequence's k + 1 tokens as decodes at contexts c, c +
    1, ..., c + k: the batch's decodes, decode context, windowed and longest context, and
    logits (`verify_chunk`'s twin, shared the same way)."""
    span = n_decode * k * (k + 1) / 2.0
    return (
        n_decode * (k + 1),
        (k + 1) * decode_context + span,
        (k + 1) * decode_window + (span if windowed else 0.0),
        decode_context_max + k,
        n_logits + n_decode * k,
    )


_SAMPLES = 17  # decode stretches of other inner models: exact at this many points, linear between


class SpeculativeStepModel:
    """A `StepModel` whose decode steps are speculative: see the module docstring.

    `pipelined_verify` (layer pipelines, e.g. wafers): the engine may also send each sequence's
    k extra tokens through the pipeline as micro-batches of their own, right behind its first
    token (causal attention lets token j+1 enter a layer once token j has left it), and takes
    whichever verify is faster - one micro-batch of k+1 tokens per sequence, or k+1 micro-batches.
    """

    def __init__(
        self, inner: StepModel, speculation: Speculation, *, pipelined_verify: bool = False
    ) -> None:
        self.inner = inner
        self.speculation = speculation
        self.pipelined_verify = pipelined_verify

    @property
    def window_tokens(self) -> int | None:
        """Attention window of the model's windowed layers (None when it has none)."""
        return self.inner.window_tokens

    def _verify_shape(self, batch: BatchShape) -> BatchShape:
        """The target pass over k+1 tokens per decoding sequence (extra tokens as a chunk)."""
        tokens, attention, window, logits = verify_chunk(
            self.speculation.draft_tokens, batch.n_decode, batch.decode_context,
            batch.decode_window, batch.prefill_tokens, batch.prefill_attention,
            batch.prefill_window, batch.n_logits, bool(self.window_tokens),
        )
        return BatchShape(
            n_decode=batch.n_decode,
            decode_context=batch.decode_context,
            decode_window=batch.decode_window,
            decode_context_max=batch.decode_context_max,
            n_prefill=batch.n_prefill,
            prefill_tokens=tokens,
            prefill_attention=attention,
            prefill_window=window,
            n_logits=logits,
            prefill_max_tokens=batch.prefill_max_tokens,
            prefill_max_attention=batch.prefill_max_attention,
            prefill_max_window=batch.prefill_max_window,
        )

    def _pipelined_shape(self, batch: BatchShape) -> BatchShape:
        """The verify pass with each sequence's k+1 tokens as separate pipeline units (decode
        tokens at contexts c, c+1, ..., c+k)."""
        n_decode, context, window, longest, logits = pipelined_decodes(
            self.speculation.draft_tokens, batch.n_decode, batch.decode_context,
            batch.decode_window, batch.decode_context_max, batch.n_logits, bool(self.window_tokens),
        )
        return BatchShape(
            n_decode=n_decode,
            decode_context=context,
            decode_window=window,
            decode_context_max=longest,
            n_prefill=batch.n_prefill,
            prefill_tokens=batch.prefill_tokens,
            prefill_attention=batch.prefill_attention,
            prefill_window=batch.prefill_window,
            n_logits=logits,
            prefill_max_tokens=batch.prefill_max_tokens,
            prefill_max_attention=batch.prefill_max_attention,
            prefill_max_window=batch.prefill_max_window,
        )

    def _decode_only(self, batch: BatchShape) -> BatchShape:
        return BatchShape(
            n_decode=batch.n_decode,
            decode_context=batch.decode_context,
            decode_window=batch.decode_window,
            decode_context_max=batch.decode_context_max,
            n_logits=batch.n_decode,
        )

    def step_time(self, batch: BatchShape) -> float:
        """Seconds per token-step: (verify + drafts) / expected tokens per verify."""
        if batch.n_decode == 0:
            return self.inner.step_time(batch)
        spec = self.speculation
        verify = self.inner.step_time(self._verify_shape(batch))
        if self.pipelined_verify:
            verify = min(verify, self.inner.step_time(self._pipelined_shape(batch)))
        draft = spec.draft_cost * spec.draft_tokens * self.inner.step_time(self._decode_only(batch))
        return (verify + draft) / spec.tokens_per_step

    def coefficients(self) -> StepCoefficients:
        """The inner roofline's arrays with the speculation settings, for the compiled serving
        simulator (raises `InputError` when the inner model is not a `RooflineStepModel`)."""
        if not isinstance(self.inner, RooflineStepModel):
            raise InputError(
                f"coefficients() needs a RooflineStepModel inside; got {type(self.inner).__name__}."
            )
        spec = self.speculation
        return replace(
            self.inner.coefficients(),
            spec_draft_tokens=spec.draft_tokens,
            spec_tokens_per_step=spec.tokens_per_step,
            spec_draft_cost=spec.draft_cost,
            spec_pipelined=self.pipelined_verify,
        )

    def decode_times(self, contexts: FloatArray, n_steps: int) -> FloatArray:
        """Pure-decode steps, each as `step_time` would time it (vectorised over the steps for a
        roofline inside; otherwise exact at a few evenly spaced steps, linear in between: the
        step time is piecewise linear in the context, which grows by one token per step)."""
        contexts = np.asarray(contexts, dtype=np.float64)
        if n_steps <= 0:
            return np.zeros(0)
        if isinstance(self.inner, RooflineStepModel) and contexts.shape[0]:
            return self._roofline_decode_times(self.inner, contexts, n_steps)
        window = self.window_tokens
        points = np.unique(np.linspace(0, max(n_steps - 1, 0), min(n_steps, _SAMPLES)).round())
        values = []
        for j in points:
            ctx = contexts + j
            values.append(self.step_time(BatchShape.of(ctx, [], window)))
        out: FloatArray = np.interp(np.arange(n_steps, dtype=np.float64), points, values)
        return out

    def _roofline_decode_times(
        self, inner: RooflineStepModel, contexts: FloatArray, n_steps: int
    ) -> FloatArray:
        spec = self.speculation
        k = float(spec.draft_tokens)
        b = float(contexts.shape[0])
        window = self.window_tokens
        dctx, dwin, dmax = inner.decode_aggregates(contexts, n_steps)
        full = np.full(n_steps, b)
        zeros = np.zeros(n_steps)
        # _verify_shape: the k extra tokens of every sequence as a chunk over its context.
        extra = b * k
        span = (k + 1) / 2.0
        ptok = np.full(n_steps, extra)
        verify = inner.times(
            full, full + extra, full + extra, dctx, dwin, zeros + k * (dctx + b * span),
            zeros + (k * (dwin + b * span) if window else 0.0), ptok,
            full + np.maximum(0.0, ptok / PREFILL_UNIT_TOKENS), full, dmax,
        )
        if self.pipelined_verify:
            # _pipelined_shape: each sequence's k + 1 tokens as pipeline units of their own.
            pd = b * (k + 1)
            pspan = b * k * (k + 1) / 2.0
            units = np.full(n_steps, pd)
            piped = inner.times(
                units, units, full + extra, (k + 1) * dctx + pspan,
                (k + 1) * dwin + (pspan if window else 0.0), zeros, zeros, zeros, units, units,
                dmax + k,
            )
            verify = np.minimum(verify, piped)
        draft = inner.times(full, full, full, dctx, dwin, zeros, zeros, zeros, full, full, dmax)
        out: FloatArray = (verify + spec.draft_cost * spec.draft_tokens * draft) / spec.tokens_per_step
        return out


DRAFT_CONTEXT_TOKENS = 1024
"""Context at which a wafer draft pass is compared with a target pass (both grow alike)."""


def wafer_speculation(dep: Deployment, draft_tokens: int, acceptance: float) -> Speculation:
    """Speculation for a wafer deployment with a `draft_model` on the same wafers: `draft_cost`
    is the time of one draft pass (its layers on their own regions, sized by weights like the
    target's; on the last wafer, or spread with hand-offs when it is too big) over one target
    pass, both for one sequence."""
    if dep.draft_model is None:
        raise InputError(
            "wafer_speculation needs deployment.draft_model (the draft kept on the wafers)."
        )
    plan = plan_memory(dep)
    target = RooflineStepModel(dep, plan)
    draft_dep = replace(dep, model=dep.draft_model, draft_model=None, speculation=None)
    if plan.draft_on_last_device:
        # The draft sits on the last wafer, beside the LM head: no hand-offs of its own.
        last = plan.weight_bytes_by_device[-1]
        draft_plan = replace(
            plan,
            weight_bytes_per_device=last,
            layers_by_device=(dep.draft_model.n_layers,),
            weight_bytes_by_device=(last,),
        )
    else:
        draft_plan = plan
    draft = RooflineStepModel(draft_dep, draft_plan)
    window = target.window_tokens
    t = target.step_time(BatchShape.of([DRAFT_CONTEXT_TOKENS], [], window))
    d = draft.step_time(BatchShape.of([DRAFT_CONTEXT_TOKENS], [], draft.window_tokens))
    return Speculation(draft_tokens, acceptance, min(1.0, d / t))
