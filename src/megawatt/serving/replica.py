"""One serving replica on the event kernel: iteration-level continuous batching over a paged KV
cache, with chunked prefill, preemption by recompute and prefix-cache hits.

Speed: there is no Python object per token. While the batch is pure decode and nothing can join
it, many decode steps are timed at once (vectorised) and applied in one event; an arrival that
could join the batch cuts such a stretch at the end of the step then in progress.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from megawatt.errors import InputError
from megawatt.perf import BatchShape, MemoryPlan, StepModel
from megawatt.serving.scheduler import SchedulerPolicy, scheduler
from megawatt.sim import Environment
from megawatt.workload import Requests

_WAITING, _RUNNING, _DONE, _REJECTED = 0, 1, 2, 3
_MAX_STRETCH = 4096


@dataclass(frozen=True)
class KvBudget:
    """The KV cache of a replica: capacity and what a sequence costs (bytes).

    A sequence with `ctx` cached tokens holds `bytes_per_token * (ctx + block_tokens / 2)`
    (half a block of fragmentation on average in a paged cache) plus `bytes_per_token_windowed
    * min(ctx, window_tokens)` for windowed layers.
    """

    capacity_bytes: float
    bytes_per_token: float
    bytes_per_token_windowed: float = 0.0
    window_tokens: int | None = None
    block_tokens: int = 16

    def __post_init__(self) -> None:
        if not self.capacity_bytes > 0:
            raise InputError(f"KV capacity must be > 0 bytes; got {self.capacity_bytes}.")
        if self.bytes_per_token < 0 or self.bytes_per_token_windowed < 0:
            raise InputError("KV bytes per token must be >= 0.")

    @staticmethod
    def of(plan: MemoryPlan, block_tokens: int = 16) -> KvBudget:
        """The KV budget a memory plan leaves."""
        return KvBudget(
            plan.kv_bytes,
            plan.kv_bytes_per_token,
            plan.kv_bytes_per_token_windowed,
            plan.window_tokens,
            block_tokens,
        )

    def sequence_bytes(self, ctx: float) -> float:
        """Bytes a sequence with `ctx` cached tokens holds."""
        if ctx <= 0:
            return 0.0
        out = self.bytes_per_token * (ctx + self.block_tokens / 2.0)
        if self.window_tokens:
            out += self.bytes_per_token_windowed * min(ctx, self.window_tokens)
        return out


@dataclass
class ReplicaStats:
    """Time-integrated counters of one replica (seconds, tokens, bytes x seconds)."""

    busy_s: float = 0.0
    n_steps: int = 0
    n_stretches: int = 0
    seq_seconds: float = 0.0  # sum of batch size x step time
    kv_byte_seconds: float = 0.0  # sum of KV bytes in use x step time
    prefill_tokens: int = 0
    decode_tokens: int = 0
    peak_kv_bytes: float = 0.0


class Replica:
    """A replica that serves `requests` (indices submitted at their arrival) on `env`.

    `on_finish(i)` is called when request i completes or is rejected (closed-loop drivers and
    routers use it).
    """

    def __init__(
        self,
        env: Environment,
        step_model: StepModel,
        kv: KvBudget,
        requests: Requests,
        *,
        policy: str | SchedulerPolicy = "vllm",
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        on_finish: Callable[[int], None] | None = None,
    ) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise InputError(
                "max_num_seqs and max_num_batched_tokens must be >= 1; got "
                f"{max_num_seqs} and {max_num_batched_tokens}."
            )
        self.env = env
        self.model = step_model
        self.kv = kv
        self.policy = scheduler(policy) if isinstance(policy, str) else policy
        self.max_num_seqs = max_num_seqs
        self.max_tokens = max_num_batched_tokens
        self.on_finish = on_finish
        n = len(requests)
        self.requests = requests
        self.prompt: list[int] = requests.prompt_tokens.tolist()
        self.output: list[int] = requests.output_tokens.tolist()
        self.cached: list[int] = requests.cached_tokens.tolist()
        self.state = [_WAITING] * n
        self.target = list(self.prompt)  # tokens the prefill must cover (grows on recompute)
        self.done = [0] * n  # prompt tokens in cache (cached prefix included)
        self.ctx = [0] * n  # tokens in the KV cache
        self.generated = [0] * n
        self.kv_bytes = [0.0] * n
        self.first_token_s = [math.nan] * n
        self.finish_s = [math.nan] * n
        self.preemptions = [0] * n
        self.cache_hits = [0] * n
        self.waiting: deque[int] = deque()
        self.running: list[int] = []
        self.kv_used = 0.0
        self.busy = False
        self.stats = ReplicaStats()
        self.itl_s: list[np.ndarray] = []  # step times of decode steps ...
        self.itl_n: list[np.ndarray] = []  # ... and how many tokens each delivered
        self._token = 0
        self._stretch: tuple[np.ndarray, np.ndarray, list[int]] | None = None
        self._window = kv.window_tokens

    # -- arrivals -----------------------------------------------------------------------------
    def submit(self, i: int) -> None:
        """Request `i` arrives now."""
        need = self.kv.sequence_bytes(self.prompt[i] + self.output[i] - 1)
        if need > self.kv.capacity_bytes:
            self.state[i] = _REJECTED
            self.finish_s[i] = self.env.now
            if self.on_finish:
                self.on_finish(i)
            return
        self.waiting.append(i)
        if not self.busy:
            # An idle replica starts its step once every arrival of this instant is queued
            # (priority 1 runs after them), so requests that arrive together batch together.
            self.busy = True
            self.env.schedule(0.0, self._start_step, priority=1)
        elif (
            self._stretch is not None
            and self.policy.admit_while_running
            and len(self.running) < self.max_num_seqs
        ):
            self._cut_stretch()

    @property
    def outstanding(self) -> int:
        """Requests waiting or running (a router's measure of load)."""
        return len(self.waiting) + len(self.running)

    # -- KV helpers ---------------------------------------------------------------------------
    def _set_ctx(self, i: int, ctx: int) -> None:
        new = self.kv.sequence_bytes(ctx)
        self.kv_used += new - self.kv_bytes[i]
        self.kv_bytes[i] = new
        self.ctx[i] = ctx

    def _grow_bytes(self, i: int, tokens: int) -> float:
        return self.kv.sequence_bytes(self.ctx[i] + tokens) - self.kv_bytes[i]

    def _free(self) -> float:
        return self.kv.capacity_bytes - self.kv_used

    def _release(self, i: int) -> None:
        self.kv_used -= self.kv_bytes[i]
        self.kv_bytes[i] = 0.0
        self.ctx[i] = 0

    def _preempt(self, i: int) -> None:
        """Evict `i` (recompute): free its cache, put it at the head of the queue."""
        self.running.remove(i)
        self._release(i)
        self.target[i] = self.prompt[i] + self.generated[i]
        self.done[i] = 0
        self.state[i] = _WAITING
        self.preemptions[i] += 1
        self.waiting.appendleft(i)

    # -- one step -----------------------------------------------------------------------------
    def _start_step(self) -> None:
        if not self.running and not self.waiting:
            self.busy = False
            return
        self.busy = True
        pol = self.policy
        decodes: list[int] = []
        partial: list[int] = []
        for i in self.running:
            (decodes if self.done[i] >= self.target[i] else partial).append(i)
        # Decodes first; evict the latest admitted sequence while the cache cannot grow.
        need = sum(self._grow_bytes(i, 1) for i in decodes)
        while need > self._free() + 1e-6 and self.running:
            victim = self.running[-1]
            if victim in decodes:
                need -= self._grow_bytes(victim, 1)
                decodes.remove(victim)
            else:
                partial.remove(victim)
            self._preempt(victim)
        budget = self.max_tokens - len(decodes)
        free = self._free() - need
        chunks: list[tuple[int, int]] = []
        for i in partial:
            left = self.target[i] - self.done[i]
            c = min(left, budget) if pol.chunked_prefill else left
            if c <= 0 or (not pol.chunked_prefill and c > budget and (chunks or decodes)):
                break
            grow = self.kv.sequence_bytes(self.done[i] + c) - self.kv_bytes[i]
            if grow > free:
                break
            free -= grow
            budget -= c
            chunks.append((i, c))
        if pol.admit_while_running or not self.running:
            while self.waiting and len(self.running) < self.max_num_seqs:
                i = self.waiting[0]
                start = min(self.cached[i], self.target[i] - 1)
                left = self.target[i] - start
                if pol.chunked_prefill:
                    c = min(left, budget)
                    if c <= 0:
                        break
                elif not pol.admit_while_running:
                    c = left  # static batching: whole prompts, whole batch at once
                else:
                    c = left
                    if c > budget and (chunks or decodes):
                        break
                reserve = (
                    self.prompt[i] + self.output[i] - 1
                    if not pol.admit_while_running
                    else start + c
                )
                grow = self.kv.sequence_bytes(reserve)
                if grow > free:
                    break
                self.waiting.popleft()
                self.running.append(i)
                self.state[i] = _RUNNING
                self.done[i] = start
                self.cache_hits[i] = start
                self._set_ctx(i, start)
                free -= grow
                budget -= c
                chunks.append((i, c))
        if not decodes and not chunks:
            if self.running or self.waiting:
                # Nothing fits (the cache is held by partial prefills): preempt the newest.
                if self.running:
                    self._preempt(self.running[-1])
                    self._start_step()
                    return
            self.busy = False
            return
        if not chunks and len(decodes) == len(self.running) and self._can_stretch():
            self._start_stretch(decodes)
            return
        self._run_step(decodes, chunks)

    def _can_stretch(self) -> bool:
        """True when no waiting request can join the batch until something changes."""
        if not self.waiting:
            return True
        if not self.policy.admit_while_running or len(self.running) >= self.max_num_seqs:
            return True
        i = self.waiting[0]
        first = min(self.cached[i], self.target[i] - 1) + 1
        return self.kv.sequence_bytes(first) > self._free()

    def _run_step(self, decodes: list[int], chunks: list[tuple[int, int]]) -> None:
        window = self._window
        ctxs = [self.ctx[i] + 1 for i in decodes]
        n_logits = len(decodes) + sum(1 for i, c in chunks if self.done[i] + c >= self.target[i])
        batch = BatchShape.of(ctxs, [(c, self.done[i]) for i, c in chunks], window, n_logits)
        dt = self.model.step_time(batch)
        # Reserve the KV the step writes now, so arrivals during the step see it taken.
        for i in decodes:
            self._set_ctx(i, self.ctx[i] + 1)
        for i, c in chunks:
            self._set_ctx(i, self.done[i] + c)
        st = self.stats
        st.n_steps += 1
        st.busy_s += dt
        st.seq_seconds += len(self.running) * dt
        st.kv_byte_seconds += self.kv_used * dt
        st.peak_kv_bytes = max(st.peak_kv_bytes, self.kv_used)
        st.prefill_tokens += batch.prefill_tokens
        st.decode_tokens += len(decodes)
        if decodes:
            self.itl_s.append(np.array([dt]))
            self.itl_n.append(np.array([len(decodes)]))
        self._token += 1
        self.env.schedule(dt, self._end_step, self._token, decodes, chunks)

    def _end_step(self, token: int, decodes: list[int], chunks: list[tuple[int, int]]) -> None:
        if token != self._token:
            return
        now = self.env.now
        finished: list[int] = []
        for i in decodes:
            self.generated[i] += 1
            if self.generated[i] >= self.output[i]:
                finished.append(i)
        for i, c in chunks:
            self.done[i] += c
            if self.done[i] >= self.target[i]:
                self.generated[i] += 1
                if math.isnan(self.first_token_s[i]):
                    self.first_token_s[i] = now
                if self.generated[i] >= self.output[i]:
                    finished.append(i)
        self._finish(finished, now)
        self._start_step()

    def _finish(self, finished: list[int], now: float) -> None:
        if not finished:
            return
        gone = set(finished)
        self.running = [i for i in self.running if i not in gone]
        for i in finished:
            self._release(i)
            self.state[i] = _DONE
            self.finish_s[i] = now
        if self.on_finish:
            for i in finished:
                self.on_finish(i)

    # -- many decode steps at once ------------------------------------------------------------
    def _start_stretch(self, decodes: list[int]) -> None:
        ctx = np.array([self.ctx[i] for i in decodes], dtype=np.float64)
        left = min(self.output[i] - self.generated[i] for i in decodes)
        b = len(decodes)
        per_step = self.kv.bytes_per_token * b
        if self._window and self.kv.bytes_per_token_windowed and ctx.min() < self._window:
            per_step += self.kv.bytes_per_token_windowed * b
        k_kv = int(self._free() // per_step) if per_step > 0 else _MAX_STRETCH
        k = min(left, k_kv, _MAX_STRETCH)
        if k < 2:
            self._run_step(decodes, [])
            return
        dts = self.model.decode_times(ctx + 1.0, k)
        # The clock at the end of each step, summed one step at a time as step-by-step runs
        # sum it, so an arrival that ties with a step's end ties here too (cumsum is sequential).
        ends = np.cumsum(np.concatenate(([self.env.now], dts)))[1:]
        self._stretch = (ends, dts, decodes)
        self._token += 1
        self.env.schedule_at(float(ends[-1]), self._end_stretch, self._token, k)

    def _cut_stretch(self) -> None:
        """An arrival that could join: end the stretch after the step now in progress."""
        assert self._stretch is not None
        ends, _, _ = self._stretch
        # Steps ended strictly before now; one ending exactly now has not run yet (arrivals
        # run before step ends at the same time), so the arrival joins right after it.
        k_done = int(np.searchsorted(ends, self.env.now, side="left"))
        k = min(k_done + 1, len(ends))
        if k >= len(ends):
            return
        self._stretch = (ends[:k], self._stretch[1][:k], self._stretch[2])
        self._token += 1
        self.env.schedule_at(float(ends[k - 1]), self._end_stretch, self._token, k)

    def _end_stretch(self, token: int, k: int) -> None:
        if token != self._token or self._stretch is None:
            return
        _, all_dts, decodes = self._stretch
        self._stretch = None
        dts = all_dts[:k]
        elapsed = float(dts.sum())
        st = self.stats
        st.kv_byte_seconds += float(self._stretch_kv_bytes(decodes, k) @ dts)
        for i in decodes:
            self.generated[i] += k
            self._set_ctx(i, self.ctx[i] + k)
        st.n_steps += k
        st.n_stretches += 1
        st.busy_s += elapsed
        st.seq_seconds += len(decodes) * elapsed
        st.peak_kv_bytes = max(st.peak_kv_bytes, self.kv_used)
        st.decode_tokens += k * len(decodes)
        self.itl_s.append(dts)
        self.itl_n.append(np.full(k, len(decodes)))
        finished = [i for i in decodes if self.generated[i] >= self.output[i]]
        self._finish(finished, self.env.now)
        self._start_step()

    def settle(self) -> None:
        """Account a decode stretch still in progress when the run stops (`run(until=)`) as
        step-by-step simulation does: every step begun by now counts in the stats and ITL
        samples (a step's stats are taken when it begins; its tokens arrive at its end, which
        lies after the run). Call once, when the run is over."""
        if self._stretch is None:
            return
        ends, all_dts, decodes = self._stretch
        self._stretch = None
        self._token += 1  # the stretch's end event, after the run, is void
        # Step j (from 0) begins at ends[j - 1]; step 0 began when the stretch did.
        k = min(int(np.searchsorted(ends[:-1], self.env.now, side="right")) + 1, len(ends))
        dts = all_dts[:k]
        elapsed = float(dts.sum())
        st = self.stats
        st.kv_byte_seconds += float(self._stretch_kv_bytes(decodes, k) @ dts)
        peak = self.kv_used
        for i in decodes:  # the cache while step k runs: its tokens reserved
            peak += self.kv.sequence_bytes(self.ctx[i] + k) - self.kv_bytes[i]
        st.n_steps += k
        st.n_stretches += 1
        st.busy_s += elapsed
        st.seq_seconds += len(decodes) * elapsed
        st.peak_kv_bytes = max(st.peak_kv_bytes, peak)
        st.decode_tokens += k * len(decodes)
        self.itl_s.append(dts)
        self.itl_n.append(np.full(k, len(decodes)))

    def _stretch_kv_bytes(self, decodes: list[int], k: int) -> np.ndarray:
        """KV bytes in use during each of the next `k` decode steps of `decodes`, as
        step-by-step runs bill them: with the token each step writes already reserved."""
        steps = np.arange(1, k + 1, dtype=np.float64)
        out = self.kv_used + self.kv.bytes_per_token * len(decodes) * steps
        if self._window and self.kv.bytes_per_token_windowed:
            # Windowed bytes grow by min(steps, room below the window) per sequence.
            room = np.sort([max(self._window - self.ctx[i], 0) for i in decodes]).astype(float)
            below = np.searchsorted(room, steps, side="left")  # sequences with room < steps
            room_sum = np.concatenate(([0.0], np.cumsum(room)))[below]
            out += self.kv.bytes_per_token_windowed * (room_sum + steps * (len(decodes) - below))
        return out
