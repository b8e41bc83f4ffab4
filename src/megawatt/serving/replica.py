"""One serving replica on the event kernel: iteration-level continuous batching over a paged KV
cache, with chunked prefill, preemption by recompute and prefix caching, either idealised (the
`cached_tokens` column: tokens already cached on arrival) or over hashed prompt blocks (a
`PrefixCache` in the replica's KV memory, LRU, as vLLM's automatic prefix caching). A replica can
also take requests prefilled elsewhere (`submit_decode`: the decode side of a disaggregated pair).

Speed: there is no Python object per token. While the batch is pure decode and nothing can join
it, many decode steps are timed at once (vectorised) and applied in one event; an arrival that
could join the batch cuts such a stretch at the end of the step then in progress.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from megawatt.errors import InputError
from megawatt.perf import BatchShape, StepModel
from megawatt.serving.kv import KvBudget
from megawatt.serving.prefix import PrefixCache, dense_blocks, register
from megawatt.serving.scheduler import SchedulerPolicy
from megawatt.serving.scheduler import scheduler as scheduler_named
from megawatt.serving.timeline import DEFAULT_BIN_S, Timeline
from megawatt.sim import Environment
from megawatt.workload import Requests

_WAITING, _RUNNING, _DONE, _REJECTED = 0, 1, 2, 3
_MAX_STRETCH = 4096
PREFIX_BLOCK_TOKENS = 512
"""Tokens per hashed prefix block by default: Mooncake's (`workload.MOONCAKE_BLOCK_TOKENS`)."""


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
    prefix_evicted_blocks: int = 0  # hashed prefix blocks evicted to make room (0 without hashes)


class Replica:
    """A replica that serves `requests` (indices submitted at their arrival) on `env`.

    `on_finish(i)` is called when request i completes or is rejected (closed-loop drivers and
    routers use it).

    `prefix_blocks`, when given, holds per request the hash ids of its prompt's blocks of
    `prefix_block_tokens` tokens (Mooncake's `hash_ids`): the replica then keeps a `PrefixCache`
    and a request admitted skips the prefill of its leading blocks found there (whole blocks, at
    most `target - 1` tokens, as vLLM); the `cached_tokens` column is then ignored (it is an
    idealised, infinite cache derived from the same ids). Cached blocks count against the KV
    capacity only while a running sequence references them, once however many share them;
    unreferenced ones fill free memory until it is needed (see `serving.prefix`).

    `timeline_bin_s` is the narrowest bin of the replica's `Timeline` (seconds).
    """

    def __init__(
        self,
        env: Environment,
        step_model: StepModel,
        kv: KvBudget,
        requests: Requests,
        *,
        scheduler: str | SchedulerPolicy = "vllm",
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        on_finish: Callable[[int], None] | None = None,
        prefix_blocks: Sequence[np.ndarray] | None = None,
        prefix_block_tokens: int = PREFIX_BLOCK_TOKENS,
        timeline_bin_s: float = DEFAULT_BIN_S,
    ) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise InputError(
                "max_num_seqs and max_num_batched_tokens must be >= 1; got "
                f"{max_num_seqs} and {max_num_batched_tokens}."
            )
        self.env = env
        self.model = step_model
        self.kv = kv
        self.scheduler = scheduler_named(scheduler) if isinstance(scheduler, str) else scheduler
        self.max_num_seqs = max_num_seqs
        self.max_tokens = max_num_batched_tokens
        self.on_finish = on_finish
        n = len(requests)
        self.requests = requests
        self.prompt: list[int] = requests.prompt_tokens.tolist()
        self.output: list[int] = requests.output_tokens.tolist()
        self.cached: list[int] = requests.cached_tokens.tolist()
        self.state = [_WAITING] * n
        self.target: list[int] = list(self.prompt)  # tokens the prefill must cover (grows on recompute)
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
        # (start, step ends, step times, sequences) of the decode stretch in progress
        self._stretch: tuple[float, np.ndarray, np.ndarray, list[int]] | None = None
        self._window = kv.window_tokens
        self.timeline = Timeline(env.now, kv.capacity_bytes, timeline_bin_s)
        # Requests prefilled elsewhere, whose KV has arrived (`submit_decode`), and those of
        # them admitted in the step being formed (their first gap is not a step time).
        self.kv_arrived: deque[int] = deque()
        self._fresh: list[int] = []
        # The hashed prefix cache: per request its whole prompt blocks (dense ids: request i's
        # are blocks[block_off[i]:block_off[i + 1]], a memoryview for Python ints), the blocks it
        # references and how many leading blocks it has hit or computed.
        self.cache: PrefixCache | None = None
        self.block_tokens = prefix_block_tokens
        self.blocks = np.zeros(0, dtype=np.int64).data
        self.block_off: list[int] = []
        self.refs: list[list[int]] = []
        self.n_seen: list[int] = []
        if prefix_blocks is not None:
            flat, off, n_blocks = dense_blocks(
                prefix_blocks, requests.prompt_tokens, prefix_block_tokens
            )
            self.cache = PrefixCache(kv.bytes_per_token * prefix_block_tokens, n_blocks)
            self.blocks = flat.data
            self.block_off = off.tolist()
            self.refs = [[] for _ in range(n)]
            self.n_seen = [0] * n

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
        self._wake()

    def submit_decode(self, i: int, first_token_s: float) -> None:
        """Request `i` arrives now with its prompt's KV cache and its first token (at
        `first_token_s`), computed elsewhere: the decode side of a disaggregated pair. It joins
        the batch as a decode, `output - 1` tokens to go, when its KV fits (before new prompts,
        after requests preempted here); if preempted, it is recomputed here."""
        need = self.kv.sequence_bytes(self.prompt[i] + self.output[i] - 1)
        self.first_token_s[i] = first_token_s
        if need > self.kv.capacity_bytes or self.output[i] <= 1:
            self.state[i] = _REJECTED if need > self.kv.capacity_bytes else _DONE
            self.generated[i] = 1
            self.finish_s[i] = self.env.now
            if self.on_finish:
                self.on_finish(i)
            return
        self.generated[i] = 1
        self.done[i] = self.target[i] = self.prompt[i]
        self.kv_arrived.append(i)
        self._wake()

    def _wake(self) -> None:
        if not self.busy:
            # An idle replica starts its step once every arrival of this instant is queued
            # (priority 1 runs after them), so requests that arrive together batch together.
            self.busy = True
            self.env.schedule(0.0, self._start_step, priority=1)
        elif (
            self._stretch is not None
            and self.scheduler.admit_while_running
            and len(self.running) < self.max_num_seqs
        ):
            self._cut_stretch()

    @property
    def outstanding(self) -> int:
        """Requests waiting or running (a router's measure of load)."""
        return len(self.waiting) + len(self.running) + len(self.kv_arrived)

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
        if self.cache is not None and self.refs[i]:
            # Blocks others still use stay counted, now against them.
            held = self.refs[i]
            self.kv_used += self.cache.release(held, 0, len(held))
            self.refs[i] = []
        if self.cache is not None:
            self.n_seen[i] = 0

    # -- prefix hits --------------------------------------------------------------------------
    def _hit_tokens(self, i: int) -> int:
        """Prompt tokens of `i` already cached, were it admitted now (at most target - 1)."""
        if self.cache is None:
            return min(self.cached[i], self.target[i] - 1)
        b, lo, hi = self.block_tokens, self.block_off[i], self.block_off[i + 1]
        return b * self.cache.leading_hits(self.blocks, lo, min(lo + (self.target[i] - 1) // b, hi))

    def _shared_bytes(self, i: int, start: int) -> float:
        """Bytes of `i`'s first `start` tokens that running sequences already hold."""
        if self.cache is None or not start:
            return 0.0
        lo = self.block_off[i]
        return self.cache.shared_bytes(self.blocks, lo, lo + start // self.block_tokens)

    def _register_blocks(self, i: int) -> None:
        """Cache the whole prompt blocks `i` has computed by now."""
        assert self.cache is not None
        lo, n = self.block_off[i], self.n_seen[i]
        end = min(self.block_off[i + 1] - lo, self.done[i] // self.block_tokens)
        if n >= end:
            return
        # The function itself, not the cache's method: a call per block, the hottest of them.
        state, held = self.cache.state, self.refs[i]
        for h in self.blocks[lo + n : lo + end]:
            if register(state, h):
                held.append(h)
        self.n_seen[i] = end

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
        if not self.running and not self.waiting and not self.kv_arrived:
            self.busy = False
            return
        self.busy = True
        pol = self.scheduler
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
        free = self._free() - need
        if self.kv_arrived and not self.waiting and (pol.admit_while_running or not self.running):
            # Requests whose KV arrived join as decodes of this very step.
            while self.kv_arrived and len(self.running) < self.max_num_seqs:
                i = self.kv_arrived[0]
                grow = self._arrival_bytes(i)
                if grow > free:
                    break
                self.kv_arrived.popleft()
                self.running.append(i)
                self.state[i] = _RUNNING
                self._set_ctx(i, self.prompt[i])
                need += self._grow_bytes(i, 1)
                free -= grow
                decodes.append(i)
                self._fresh.append(i)
        budget = self.max_tokens - len(decodes)
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
        cache = self.cache
        if pol.admit_while_running or not self.running:
            while self.waiting and len(self.running) < self.max_num_seqs:
                i = self.waiting[0]
                if cache is not None:
                    cache.evict_to(free)  # the lookup sees what the steps so far left
                start = self._hit_tokens(i)
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
                shared = self._shared_bytes(i, start)
                grow = self.kv.sequence_bytes(reserve) - shared
                if grow > free:
                    break
                self.waiting.popleft()
                self.running.append(i)
                self.state[i] = _RUNNING
                self.done[i] = start
                self.cache_hits[i] = start
                self._set_ctx(i, start)
                if cache is not None and start:
                    lo, k = self.block_off[i], start // self.block_tokens
                    cache.acquire(self.blocks, lo, lo + k)
                    self.kv_used -= shared
                    self.refs[i] = self.blocks[lo : lo + k].tolist()
                    self.n_seen[i] = k
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
        if cache is not None:
            cache.evict_to(free)
        if (
            not chunks
            and not self._fresh
            and len(decodes) == len(self.running)
            and self._can_stretch()
        ):
            self._start_stretch(decodes)
            return
        self._run_step(decodes, chunks)

    def _arrival_bytes(self, i: int) -> float:
        """KV a request prefilled elsewhere needs to join: its prompt and the token its first
        decode writes (static batching reserves the whole sequence)."""
        if not self.scheduler.admit_while_running:
            return self.kv.sequence_bytes(self.prompt[i] + self.output[i] - 1)
        return self.kv.sequence_bytes(self.prompt[i] + 1)

    def _can_stretch(self) -> bool:
        """True when no waiting request can join the batch until something changes."""
        if not self.waiting and not self.kv_arrived:
            return True
        if not self.scheduler.admit_while_running or len(self.running) >= self.max_num_seqs:
            return True
        if not self.waiting:
            return self._arrival_bytes(self.kv_arrived[0]) > self._free()
        i = self.waiting[0]
        start = self._hit_tokens(i)
        if self.cache is not None and start:
            lo = self.block_off[i]
            if self.cache.any_free(self.blocks, lo, lo + start // self.block_tokens):
                # The stretch's growth could evict these hits and so shrink what it needs.
                return False
        return self.kv.sequence_bytes(start + 1) - self._shared_bytes(i, start) > self._free()

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
        now = self.env.now
        self.timeline.add_step(now, now + dt, len(self.running), self.kv_used, n_logits)
        if self._fresh:
            # A request prefilled elsewhere: its first gap runs from its first token there.
            for i in self._fresh:
                self.itl_s.append(np.array([now + dt - self.first_token_s[i]]))
                self.itl_n.append(np.array([1]))
            if len(decodes) > len(self._fresh):
                self.itl_s.append(np.array([dt]))
                self.itl_n.append(np.array([len(decodes) - len(self._fresh)]))
            self._fresh = []
        elif decodes:
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
            if self.cache is not None:
                self._register_blocks(i)
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
        self._stretch = (self.env.now, ends, dts, decodes)
        self._token += 1
        self.env.schedule_at(float(ends[-1]), self._end_stretch, self._token, k)

    def _cut_stretch(self) -> None:
        """An arrival that could join: end the stretch after the step now in progress."""
        assert self._stretch is not None
        start, ends, dts, decodes = self._stretch
        # Steps ended strictly before now; one ending exactly now has not run yet (arrivals
        # run before step ends at the same time), so the arrival joins right after it.
        k_done = int(np.searchsorted(ends, self.env.now, side="left"))
        k = min(k_done + 1, len(ends))
        if k >= len(ends):
            return
        self._stretch = (start, ends[:k], dts[:k], decodes)
        self._token += 1
        self.env.schedule_at(float(ends[k - 1]), self._end_stretch, self._token, k)

    def _end_stretch(self, token: int, k: int) -> None:
        if token != self._token or self._stretch is None:
            return
        start, ends, all_dts, decodes = self._stretch
        self._stretch = None
        self._account_stretch(start, ends, all_dts, decodes, k)
        for i in decodes:
            self.generated[i] += k
            self._set_ctx(i, self.ctx[i] + k)
        if self.cache is not None:
            self.cache.evict_to(self._free())
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
        start, ends, all_dts, decodes = self._stretch
        self._stretch = None
        self._token += 1  # the stretch's end event, after the run, is void
        # Step j (from 0) begins at ends[j - 1]; step 0 began when the stretch did.
        k = min(int(np.searchsorted(ends[:-1], self.env.now, side="right")) + 1, len(ends))
        self._account_stretch(start, ends, all_dts, decodes, k)

    def _account_stretch(
        self, start: float, ends: np.ndarray, all_dts: np.ndarray, decodes: list[int], k: int
    ) -> None:
        """Record the first `k` steps of a stretch begun at `start` (before its sequences grow):
        stats, timeline and ITL samples, the peak with the tokens of step k reserved."""
        dts = all_dts[:k]
        elapsed = float(dts.sum())
        st = self.stats
        kv_steps = self._stretch_kv_bytes(decodes, k)
        st.kv_byte_seconds += float(kv_steps @ dts)
        self.timeline.add_steps(start, ends[:k], len(decodes), kv_steps, len(decodes))
        peak = self.kv_used
        for i in decodes:
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
