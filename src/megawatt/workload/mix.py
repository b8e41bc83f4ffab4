"""Request classes and a traffic mix: which kinds of requests arrive, how often, how long.

`chatgpt_mix()` is the default ChatGPT-like mix of FACTS.md B.7; `mix_from_spec` reads your own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from megawatt.errors import InputError
from megawatt.workload.arrivals import ArrivalProcess
from megawatt.workload.lengths import LengthDistribution, Lognormal, length_distribution
from megawatt.workload.requests import Requests

__all__ = ["Mix", "RequestClass", "chatgpt_mix", "mix_from_spec"]

_SHARE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RequestClass:
    """One kind of request: its share of requests and its token-length distributions.

    `prompt` draws the new (uncached) prompt tokens; `cached_prefix`, when given, draws tokens
    already in a prefix cache (agents re-sending their context), added to the prompt, so a
    request's `prompt_tokens` = new + cached and `cached_tokens` = cached. `source` says where
    the numbers come from.
    """

    name: str
    share: float
    prompt: LengthDistribution
    output: LengthDistribution
    cached_prefix: LengthDistribution | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(
                f"RequestClass.name must be a non-empty string; got {self.name!r}. Name the "
                "class, e.g. 'chat'."
            )
        share = self.share
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float | np.integer | np.floating)
            or not math.isfinite(share)
            or not 0.0 <= share <= 1.0
        ):
            raise InputError(
                f"RequestClass {self.name!r}: share must be a fraction in [0, 1]; got {share!r}. "
                "Give the fraction of requests, e.g. 0.55."
            )
        object.__setattr__(self, "share", float(share))
        fields = [("prompt", self.prompt), ("output", self.output)]
        if self.cached_prefix is not None:
            fields.append(("cached_prefix", self.cached_prefix))
        for field_name, value in fields:
            if not isinstance(value, LengthDistribution):
                raise InputError(
                    f"RequestClass {self.name!r}: {field_name} must be a length distribution "
                    f"(sample(rng, n) and mean); got {value!r}. Use e.g. Lognormal(1000, 1.0)."
                )

    @property
    def mean_prompt_tokens(self) -> float:
        """Mean whole prompt (new + cached prefix), tokens."""
        return self.prompt.mean + self.mean_cached_tokens

    @property
    def mean_cached_tokens(self) -> float:
        """Mean cached prefix, tokens (0 without one)."""
        return self.cached_prefix.mean if self.cached_prefix is not None else 0.0

    @property
    def mean_output_tokens(self) -> float:
        """Mean output, tokens."""
        return self.output.mean


@dataclass(frozen=True)
class Mix:
    """A traffic mix: request classes whose shares sum to 1 (within 1e-6)."""

    classes: tuple[RequestClass, ...]

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        if not classes:
            raise InputError("Mix.classes must hold at least one RequestClass; got none. Add one.")
        for item in classes:
            if not isinstance(item, RequestClass):
                raise InputError(
                    f"Mix.classes must hold RequestClass objects; got {item!r}. Wrap it in "
                    "RequestClass(...)."
                )
        names = [item.name for item in classes]
        if len(set(names)) != len(names):
            raise InputError(f"Mix class names must be unique; got {names}. Rename the duplicates.")
        total = sum(item.share for item in classes)
        if abs(total - 1.0) > _SHARE_TOLERANCE:
            shares = ", ".join(f"{item.name}={item.share:g}" for item in classes)
            raise InputError(
                f"Mix shares must sum to 1 (within {_SHARE_TOLERANCE:g}); got {total:.6g} from "
                f"{shares}. Rescale the shares."
            )
        object.__setattr__(self, "classes", classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names, in order (the `class_names` of sampled `Requests`)."""
        return tuple(item.name for item in self.classes)

    @property
    def shares(self) -> np.ndarray:
        """Share of requests per class, in order (sums to 1)."""
        shares = np.array([item.share for item in self.classes], dtype=np.float64)
        return shares / float(shares.sum())

    @property
    def mean_prompt_tokens(self) -> float:
        """Share-weighted mean whole prompt (new + cached), tokens, from the distributions."""
        return float(sum(item.share * item.mean_prompt_tokens for item in self.classes))

    @property
    def mean_cached_tokens(self) -> float:
        """Share-weighted mean cached prefix, tokens."""
        return float(sum(item.share * item.mean_cached_tokens for item in self.classes))

    @property
    def mean_output_tokens(self) -> float:
        """Share-weighted mean output, tokens, from the distributions."""
        return float(sum(item.share * item.mean_output_tokens for item in self.classes))

    def sample(
        self,
        rng: np.random.Generator,
        n: int,
        arrivals: ArrivalProcess,
        start_s: float = 0.0,
    ) -> Requests:
        """`n` requests: arrival times from `arrivals`, each request's class drawn by share,
        then lengths per class. Deterministic for a given generator state.

        Draw order: arrivals, classes, then per class in order: prompt, output, cached prefix.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InputError(f"Mix.sample: n must be a whole number >= 0; got {n!r}. Pass a count.")
        n = int(n)
        arrival_s = np.asarray(arrivals.sample(rng, n, start_s), dtype=np.float64)
        class_id = rng.choice(len(self.classes), size=n, p=self.shares).astype(np.int32)
        prompt = np.empty(n, dtype=np.int64)
        output = np.empty(n, dtype=np.int64)
        cached = np.zeros(n, dtype=np.int64)
        for index, item in enumerate(self.classes):
            rows = np.flatnonzero(class_id == index)
            count = len(rows)
            prompt[rows] = item.prompt.sample(rng, count)
            output[rows] = item.output.sample(rng, count)
            if item.cached_prefix is not None:
                cached[rows] = item.cached_prefix.sample(rng, count)
        return Requests(
            arrival_s=arrival_s,
            prompt_tokens=prompt + cached,
            output_tokens=output,
            cached_tokens=cached,
            class_id=class_id,
            class_names=self.class_names,
        )


# (name, share %, prompt (median, sigma), output (median, sigma), output cap, source)
_ClassRow = tuple[str, float, tuple[float, float], tuple[float, float], int, str]
_CHATGPT_CLASSES: tuple[_ClassRow, ...] = (
    (
        "chat",
        55.0,
        (1000.0, 1.0),
        (130.0, 0.9),
        8192,
        "FACTS.md B.7 consumer chat (guidance, information, writing); lengths near the Azure "
        "conv 2023 fit, in (1,020, 0.99) out (129, 0.86), A.1",
    ),
    (
        "long-context",
        10.0,
        (7000.0, 1.2),
        (350.0, 1.4),
        16384,
        "FACTS.md B.7 long-context chat / documents; Mooncake conversation fit, in (6,909, "
        "1.20) out (350, 1.36), A.1",
    ),
    (
        "reasoning",
        15.0,
        (210.0, 1.8),
        (800.0, 1.1),
        32768,
        "FACTS.md B.7 reasoning; ServeGen DeepSeek-R1, input p50 208, output p50 792, p99 "
        "12,607, p99.9 20,833, B.3",
    ),
    (
        "coding",
        8.0,
        (1500.0, 1.4),
        (13.0, 0.9),
        4096,
        "FACTS.md B.7 coding assistant; Azure code 2023, input median 1,469, output median 13, B.4",
    ),
    (
        "multimodal",
        3.0,
        (640.0, 0.8),
        (100.0, 0.8),
        4096,
        "FACTS.md B.7 multimodal understanding; ServeGen mm-image, text 106 + image 540 tokens, "
        "output median 100, B.6",
    ),
)
_AGENTIC_SHARE = 7.0
_AGENTIC_SOURCE = (
    "FACTS.md B.7 agentic; TraceLab per LLM step: cached prefix median 118,656, new input median "
    "875, output median 214, B.5. Sigmas (0.5 prefix, 1.0 new input and output) are estimates"
)
_IMAGE_GENERATION_SHARE = 2.0
_AGENTIC_NEW_CAP_TOKENS = 8192
_AGENTIC_OUTPUT_CAP_TOKENS = 4096
_MIN_CONTEXT_TOKENS = 4096


def chatgpt_mix(max_context_tokens: int = 131072) -> Mix:
    """The ChatGPT-like default mix of FACTS.md B.7 (a proposal to calibrate, not a measurement).

    Classes (share of text requests, lengths as lognormal median and sigma of ln tokens):
    chat 55 % (prompt 1,000, 1.0; output 130, 0.9), long-context 10 % (7,000, 1.2; 350, 1.4),
    reasoning 15 % (210, 1.8; 800, 1.1), coding 8 % (1,500, 1.4; 13, 0.9), agentic 7 % (a
    cached prefix of median 118,656, sigma 0.5 (the sigma is our estimate), plus new input
    875, 1.0; output 214, 1.0), multimodal 3 % (text 100 + image 540 = prompt 640, 0.8; output
    100, 0.8). Image generation (2 % in B.7) is not token-comparable, so it is left out and the
    other shares are divided by 0.98.

    Caps (draws beyond them are clipped, see `Lognormal`): output at most 8,192 (chat),
    16,384 (long-context), 32,768 (reasoning: above ServeGen R1's p99 12.6k and p99.9 20.8k) or
    4,096 (coding, agentic, multimodal) and never more than a quarter of the context; prompt at
    most `max_context_tokens` - output cap; agentic new input at most min(8,192, context / 8)
    and cached prefix at most the rest. So prompt + output <= `max_context_tokens` always.
    With a 128k context about half of the agentic prefixes hit their cap, as a real 128k
    window would force compaction.
    """
    if (
        isinstance(max_context_tokens, bool)
        or not isinstance(max_context_tokens, int | np.integer)
        or max_context_tokens < _MIN_CONTEXT_TOKENS
    ):
        raise InputError(
            f"chatgpt_mix: max_context_tokens must be a whole number >= {_MIN_CONTEXT_TOKENS}; "
            f"got {max_context_tokens!r}. Pass the model's context window, e.g. 131072."
        )
    context = int(max_context_tokens)
    text_share = 100.0 - _IMAGE_GENERATION_SHARE
    classes = []
    for name, share, (p_median, p_sigma), (o_median, o_sigma), out_cap, source in _CHATGPT_CLASSES:
        output_cap = min(out_cap, context // 4)
        classes.append(
            RequestClass(
                name=name,
                share=share / text_share,
                prompt=Lognormal(p_median, p_sigma, max_tokens=context - output_cap),
                output=Lognormal(o_median, o_sigma, max_tokens=output_cap),
                source=source,
            )
        )
    output_cap = min(_AGENTIC_OUTPUT_CAP_TOKENS, context // 4)
    new_cap = min(_AGENTIC_NEW_CAP_TOKENS, context // 8)
    agentic = RequestClass(
        name="agentic",
        share=_AGENTIC_SHARE / text_share,
        prompt=Lognormal(875.0, 1.0, max_tokens=new_cap),
        output=Lognormal(214.0, 1.0, max_tokens=output_cap),
        cached_prefix=Lognormal(118_656.0, 0.5, max_tokens=context - output_cap - new_cap),
        source=_AGENTIC_SOURCE,
    )
    classes.insert(4, agentic)
    return Mix(tuple(classes))


_CLASS_KEYS = ("name", "share", "prompt", "output", "cached_prefix", "source")


def _class_length(name: str, key: str, spec: Any) -> LengthDistribution:
    try:
        return length_distribution(spec)
    except InputError as error:
        raise InputError(f"mix class {name!r} {key}: {error}") from None


def mix_from_spec(spec: Sequence[Mapping[str, Any]]) -> Mix:
    """A mix from a list of classes as a scenario file writes them:
    `[{"name": "chat", "share": 0.7, "prompt": {...}, "output": {...}, "cached_prefix": None,
    "source": "..."}, ...]`, each length a `length_distribution` spec. `cached_prefix` and
    `source` are optional; unknown keys are errors; shares must sum to 1.
    """
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence) or not spec:
        raise InputError(
            f"a mix spec must be a non-empty list of classes; got {spec!r}. Write a list of "
            "{name, share, prompt, output} mappings."
        )
    classes = []
    for position, item in enumerate(spec):
        if not isinstance(item, Mapping):
            raise InputError(
                f"mix class #{position + 1} must be a mapping; got {item!r}. Write {{name, "
                "share, prompt, output}."
            )
        name = item.get("name", f"#{position + 1}")
        unknown = sorted(set(item) - set(_CLASS_KEYS))
        if unknown:
            raise InputError(
                f"mix class {name!r}: unknown key(s) {unknown}; a class takes "
                f"{', '.join(_CLASS_KEYS)}. Remove or rename them."
            )
        missing = [key for key in ("name", "share", "prompt", "output") if key not in item]
        if missing:
            raise InputError(f"mix class {name!r}: missing key(s) {', '.join(missing)}. Add them.")
        cached_spec = item.get("cached_prefix")
        source = item.get("source", "")
        if not isinstance(source, str):
            raise InputError(f"mix class {name!r}: source must be a string; got {source!r}.")
        classes.append(
            RequestClass(
                name=item["name"],
                share=item["share"],
                prompt=_class_length(str(name), "prompt", item["prompt"]),
                output=_class_length(str(name), "output", item["output"]),
                cached_prefix=(
                    None
                    if cached_spec is None
                    else _class_length(str(name), "cached_prefix", cached_spec)
                ),
                source=source,
            )
        )
    return Mix(tuple(classes))
