"""The columnar request table: one numpy array per field, rows sorted by arrival time.

No Python object per request: every workload, trace and simulator speaks `Requests`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from megawatt.errors import InputError

__all__ = ["Requests"]


def _int_column(name: str, values: Any) -> np.ndarray:
    """Coerce to a read-only int64 column; floats are accepted only when they are whole."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise InputError(
            f"Requests.{name} must be a 1-D array; got shape {array.shape}. Pass one value per "
            "request."
        )
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        raise InputError(
            f"Requests.{name} must hold whole numbers of tokens; got dtype {array.dtype}. "
            "Convert it with np.asarray(..., dtype=np.int64)."
        )
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"Requests.{name} must hold whole numbers of tokens; got {array[i].item()!r} at "
                f"row {i}. Round the lengths first."
            )
    column = np.array(array, dtype=np.int64, copy=True)
    column.setflags(write=False)
    return column


def _first_bad(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True, eq=False)
class Requests:
    """Columnar request table, sorted by arrival. All arrays have length n and are read-only.

    `arrival_s` is in seconds (float64, non-decreasing). Token counts are int64:
    `prompt_tokens >= 1` is the whole prompt including any cached prefix, `output_tokens >= 1`,
    and `0 <= cached_tokens < prompt_tokens` are prefix tokens already in a prefix cache.
    `class_id` (int32) indexes `class_names`. Inputs are copied and coerced; a rule broken
    raises `InputError` naming the column, the row and the value.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray
    class_id: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        arrival = np.asarray(self.arrival_s)
        if arrival.ndim != 1 or arrival.dtype.kind not in "iuf" or arrival.dtype.kind == "b":
            raise InputError(
                f"Requests.arrival_s must be a 1-D array of seconds; got dtype {arrival.dtype}, "
                f"shape {arrival.shape}. Pass float seconds, one per request."
            )
        arrival = np.array(arrival, dtype=np.float64, copy=True)
        arrival.setflags(write=False)
        prompt = _int_column("prompt_tokens", self.prompt_tokens)
        output = _int_column("output_tokens", self.output_tokens)
        cached = _int_column("cached_tokens", self.cached_tokens)
        class_id = _int_column("class_id", self.class_id).astype(np.int32)
        class_id.setflags(write=False)
        names = tuple(self.class_names)
        if not all(isinstance(name, str) for name in names):
            raise InputError(
                f"Requests.class_names must be strings; got {names!r}. Name each class."
            )
        if len(set(names)) != len(names):
            raise InputError(
                f"Requests.class_names must be unique; got {names!r}. Merge or rename classes."
            )

        n = len(arrival)
        lengths = {
            "prompt_tokens": len(prompt),
            "output_tokens": len(output),
            "cached_tokens": len(cached),
            "class_id": len(class_id),
        }
        for name, length in lengths.items():
            if length != n:
                raise InputError(
                    f"Requests columns must have equal lengths; arrival_s has {n} rows but "
                    f"{name} has {length}. Pass one value per request in every column."
                )
        if n:
            if not np.isfinite(arrival).all():
                i = _first_bad(~np.isfinite(arrival))
                raise InputError(
                    f"Requests.arrival_s must be finite; got {arrival[i]} at row {i}. "
                    "Drop or fix that request."
                )
            if (np.diff(arrival) < 0).any():
                i = _first_bad(np.diff(arrival) < 0) + 1
                raise InputError(
                    f"Requests.arrival_s must be non-decreasing; row {i} arrives at "
                    f"{arrival[i]} s, before row {i - 1} at {arrival[i - 1]} s. Sort the "
                    "requests by arrival (Requests.concat or with_arrivals re-sort)."
                )
            if (prompt < 1).any():
                i = _first_bad(prompt < 1)
                raise InputError(
                    f"Requests.prompt_tokens must be >= 1; got {prompt[i]} at row {i}. "
                    "Drop empty prompts."
                )
            if (output < 1).any():
                i = _first_bad(output < 1)
                raise InputError(
                    f"Requests.output_tokens must be >= 1; got {output[i]} at row {i}. "
                    "Every request generates at least one token."
                )
            bad_cached = (cached < 0) | (cached >= prompt)
            if bad_cached.any():
                i = _first_bad(bad_cached)
                raise InputError(
                    f"Requests.cached_tokens must be in [0, prompt_tokens); got {cached[i]} "
                    f"with prompt_tokens {prompt[i]} at row {i}. At least one prompt token "
                    "must be computed; cap the cached prefix at prompt_tokens - 1."
                )
            bad_class = (class_id < 0) | (class_id >= len(names))
            if bad_class.any():
                i = _first_bad(bad_class)
                raise InputError(
                    f"Requests.class_id must index class_names (0..{len(names) - 1}); got "
                    f"{class_id[i]} at row {i}. Add the class name or fix the id."
                )
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)
        object.__setattr__(self, "cached_tokens", cached)
        object.__setattr__(self, "class_id", class_id)
        object.__setattr__(self, "class_names", names)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __repr__(self) -> str:
        return f"Requests(n={len(self)}, class_names={self.class_names!r})"

    @staticmethod
    def empty(class_names: Sequence[str] = ()) -> Requests:
        """A table with no requests (and the given class names)."""
        return Requests(
            arrival_s=np.zeros(0),
            prompt_tokens=np.zeros(0, dtype=np.int64),
            output_tokens=np.zeros(0, dtype=np.int64),
            cached_tokens=np.zeros(0, dtype=np.int64),
            class_id=np.zeros(0, dtype=np.int32),
            class_names=tuple(class_names),
        )

    def _take(self, index: npt.NDArray[np.intp]) -> Requests:
        arrival = self.arrival_s[index]
        if len(arrival) > 1 and (np.diff(arrival) < 0).any():
            index = index[np.argsort(arrival, kind="stable")]
        return Requests(
            arrival_s=self.arrival_s[index],
            prompt_tokens=self.prompt_tokens[index],
            output_tokens=self.output_tokens[index],
            cached_tokens=self.cached_tokens[index],
            class_id=self.class_id[index],
            class_names=self.class_names,
        )

    def subset(self, mask_or_index: npt.ArrayLike) -> Requests:
        """The rows picked by a boolean mask (length n) or an integer index array.

        Class names are kept whole; rows picked out of order are re-sorted by arrival (stable).
        """
        selector = np.asarray(mask_or_index)
        if selector.dtype == np.bool_:
            if selector.shape != (len(self),):
                raise InputError(
                    f"Requests.subset mask must have shape ({len(self)},); got "
                    f"{selector.shape}. Build the mask from this table's columns."
                )
            return self._take(np.flatnonzero(selector))
        if selector.size == 0:
            return self._take(np.zeros(0, dtype=np.intp))
        if selector.dtype.kind not in "iu" or selector.ndim != 1:
            raise InputError(
                f"Requests.subset takes a boolean mask or a 1-D integer index; got dtype "
                f"{selector.dtype}, shape {selector.shape}. Use np.flatnonzero(mask) or a mask."
            )
        if (selector < -len(self)).any() or (selector >= len(self)).any():
            raise InputError(
                f"Requests.subset index must lie in [-{len(self)}, {len(self)}); got values "
                f"from {selector.min()} to {selector.max()}. Index rows of this table only."
            )
        return self._take(selector.astype(np.intp))

    def shifted(self, dt_s: float) -> Requests:
        """The same requests with every arrival moved by `dt_s` seconds."""
        if not np.isfinite(dt_s):
            raise InputError(f"shifted: dt_s must be finite; got {dt_s}. Pass seconds.")
        return self.with_arrivals(self.arrival_s + float(dt_s))

    def with_arrivals(self, arrival_s: npt.ArrayLike) -> Requests:
        """The same rows with new arrival times (seconds), re-sorted by them (stable)."""
        arrival = np.asarray(arrival_s, dtype=np.float64)
        if arrival.shape != (len(self),):
            raise InputError(
                f"with_arrivals: arrival_s must have shape ({len(self)},); got {arrival.shape}. "
                "Pass one arrival time per request."
            )
        order = np.argsort(arrival, kind="stable")
        return Requests(
            arrival_s=arrival[order],
            prompt_tokens=self.prompt_tokens[order],
            output_tokens=self.output_tokens[order],
            cached_tokens=self.cached_tokens[order],
            class_id=self.class_id[order],
            class_names=self.class_names,
        )

    @staticmethod
    def concat(parts: Sequence[Requests]) -> Requests:
        """Merge tables into one, re-sorted by arrival (stable: ties keep part order).

        Class names are unified in order of first appearance and the ids remapped.
        """
        parts = list(parts)
        names: list[str] = []
        for part in parts:
            for name in part.class_names:
                if name not in names:
                    names.append(name)
        if not parts:
            return Requests.empty()
        position = {name: i for i, name in enumerate(names)}
        class_ids = []
        for part in parts:
            remap = np.array([position[name] for name in part.class_names], dtype=np.int32)
            class_ids.append(remap[part.class_id] if len(part) else part.class_id)
        arrival = np.concatenate([part.arrival_s for part in parts])
        order = np.argsort(arrival, kind="stable")
        return Requests(
            arrival_s=arrival[order],
            prompt_tokens=np.concatenate([part.prompt_tokens for part in parts])[order],
            output_tokens=np.concatenate([part.output_tokens for part in parts])[order],
            cached_tokens=np.concatenate([part.cached_tokens for part in parts])[order],
            class_id=np.concatenate(class_ids)[order],
            class_names=tuple(names),
        )

    @property
    def mean_prompt_tokens(self) -> float:
        """Mean whole-prompt length, tokens (0.0 for an empty table)."""
        return float(self.prompt_tokens.mean()) if len(self) else 0.0

    @property
    def mean_output_tokens(self) -> float:
        """Mean output length, tokens (0.0 for an empty table)."""
        return float(self.output_tokens.mean()) if len(self) else 0.0

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last arrival (0.0 for fewer than two requests)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0
