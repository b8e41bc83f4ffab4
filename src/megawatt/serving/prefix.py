"""A replica's prefix cache over hashed KV blocks, as vLLM's automatic prefix caching keeps it.

Requests may carry the hash ids of their prompt's blocks of `block_tokens` tokens (Mooncake
traces: 512-token blocks). A block a running sequence uses is *referenced*; its bytes count
against KV capacity once, however many sequences share it. When no sequence references it, the
block stays cached but its memory counts as free: it is evicted when that memory is needed, least
recently released first (and, within one request, its last blocks before its first, as vLLM
frees them in reverse). Only whole prompt blocks are cached; full-attention KV only (windowed
layers keep a private window per sequence).

Write once, compile twice: `dense_blocks` numbers a run's distinct blocks 0 .. B-1, the cache is
a `PrefixState` of numpy arrays over them, and the operations are plain functions of it that use
only what numba compiles in nopython mode (arrays, ints, floats, bools; no containers, objects or
exceptions). The Python replica calls them as they are, through `PrefixCache`; the compiled one
inlines the same function objects (`numba.njit(inline="always")(fn)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast

import numpy as np

from megawatt.errors import InputError

# Slots of PrefixState.counts and PrefixState.sizes.
_HEAD, _TAIL, _N_EVICTED = 0, 1, 2
_FREE_BYTES, _BLOCK_BYTES = 0, 1
_NONE = -1  # no block (an end of the LRU list), or a block not cached (refs)
_TOLERANCE_BYTES = 1e-6  # float slack when comparing the evictable bytes with the room


class Ints(Protocol):
    """What the functions need of an int64 array: element access. A numpy array (compiled), or
    in Python a memoryview over one or a list, whose elements are Python ints: several times
    faster to read and write than numpy scalars."""

    def __getitem__(self, index: int, /) -> int: ...

    def __setitem__(self, index: int, value: int, /) -> None: ...


class Floats(Protocol):
    """`Ints` for float64 arrays."""

    def __getitem__(self, index: int, /) -> float: ...

    def __setitem__(self, index: int, value: float, /) -> None: ...


class PrefixState(NamedTuple):
    """A prefix cache over B dense blocks (`dense_blocks`), as arrays.

    `refs[h]`: the running sequences referencing block h; -1 when h is not cached. The cached
    blocks no sequence references (`refs == 0`) are evictable: a doubly linked list, least
    recently released first, `older[h]` and `newer[h]` the neighbours of h in it (-1 at the ends;
    stale for blocks not in the list). `counts` holds the slots `_HEAD` and `_TAIL` (the least
    and most recent evictable block, -1 when none) and `_N_EVICTED` (blocks evicted so far);
    `sizes` holds `_FREE_BYTES` (the bytes of the evictable blocks) and `_BLOCK_BYTES` (what one
    block's KV takes).
    """

    refs: Ints
    older: Ints
    newer: Ints
    counts: Ints
    sizes: Floats


def dense_blocks(
    prefix_blocks: Sequence[np.ndarray], prompt_tokens: np.ndarray, block_tokens: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Number the distinct hash ids of the requests' whole prompt blocks 0 .. B-1.

    `prefix_blocks[i]` holds request i's hash ids, one per block of `block_tokens` tokens of its
    prompt; only its first `prompt_tokens[i] // block_tokens` ids count (a partial last block is
    never cached). Returns `(flat, offsets, B)`: request i's blocks are
    `flat[offsets[i]:offsets[i + 1]]` (int64, equal hash ids get equal numbers) and B is how many
    distinct blocks there are.
    """
    prompt = np.asarray(prompt_tokens)
    n = prompt.size
    if len(prefix_blocks) != n:
        raise InputError(
            f"prefix_blocks must hold one id array per request ({n}); got "
            f"{len(prefix_blocks)}. Pass the ids from load_trace_with_prefixes."
        )
    if block_tokens < 1:
        raise InputError(f"prefix_block_tokens must be >= 1; got {block_tokens}.")
    least = prompt.min() if n else 0
    if prompt.ndim != 1 or prompt.dtype.kind not in "iu" or least < 0:
        raise InputError(
            "prompt_tokens must be a 1-D array of whole numbers >= 0; got shape "
            f"{prompt.shape} of {prompt.dtype}, least {least}."
        )
    kept = []
    for i, (ids, p) in enumerate(zip(prefix_blocks, prompt.tolist(), strict=True)):
        row = np.asarray(ids)
        if row.ndim != 1 or (row.size and row.dtype.kind not in "iu"):
            raise InputError(
                f"prefix_blocks[{i}] must be a 1-D array of integer hash ids; got shape "
                f"{row.shape} of {row.dtype}. Pass the ids from load_trace_with_prefixes."
            )
        kept.append(row[: p // block_tokens].astype(np.int64))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([row.size for row in kept], out=offsets[1:])
    if not offsets[-1]:
        return np.zeros(0, dtype=np.int64), offsets, 0
    distinct, flat = np.unique(np.concatenate(kept), return_inverse=True)
    return flat.astype(np.int64), offsets, int(distinct.size)


def new_state(n_blocks: int, block_bytes: float) -> PrefixState:
    """An empty cache over `n_blocks` dense blocks of `block_bytes` bytes each, as numpy arrays
    (refs, older and newer are the rows of one 3 x B array)."""
    links = np.full((3, n_blocks), _NONE, dtype=np.int64)
    counts = np.zeros(3, dtype=np.int64)
    counts[_HEAD] = _NONE
    counts[_TAIL] = _NONE
    sizes = np.zeros(2, dtype=np.float64)
    sizes[_BLOCK_BYTES] = block_bytes
    return PrefixState(links[0], links[1], links[2], counts, sizes)


def n_evicted(state: PrefixState) -> int:
    """Blocks evicted so far."""
    return state.counts[_N_EVICTED]


def leading_hits(state: PrefixState, ids: Ints, lo: int, hi: int) -> int:
    """How many of the blocks `ids[lo:hi]` are cached, counting from `ids[lo]` up to the first
    miss."""
    refs = state.refs
    k = lo
    while k < hi and refs[ids[k]] != _NONE:
        k += 1
    return k - lo


def any_free(state: PrefixState, ids: Ints, lo: int, hi: int) -> bool:
    """True when one of the blocks `ids[lo:hi]` is cached but referenced by no sequence (so
    evictable)."""
    refs = state.refs
    for k in range(lo, hi):
        if refs[ids[k]] == 0:
            return True
    return False


def shared_bytes(state: PrefixState, ids: Ints, lo: int, hi: int) -> float:
    """Bytes of the cached blocks `ids[lo:hi]` that running sequences already reference (a new
    user holds no second copy of them)."""
    refs = state.refs
    n = 0
    for k in range(lo, hi):
        if refs[ids[k]] > 0:
            n += 1
    return state.sizes[_BLOCK_BYTES] * n


def acquire(state: PrefixState, ids: Ints, lo: int, hi: int) -> None:
    """A sequence starts to use the cached blocks `ids[lo:hi]` (its hits): the evictable ones
    among them leave the LRU list."""
    # Scalars are read once and written once (Python: fewer element accesses; the same float
    # operations in the same order).
    refs, older, newer, counts, sizes = state
    block_bytes = sizes[_BLOCK_BYTES]
    free_bytes = sizes[_FREE_BYTES]
    for k in range(lo, hi):
        h = ids[k]
        r = refs[h]
        if r == 0:
            before, after = older[h], newer[h]
            if before == _NONE:
                counts[_HEAD] = after
            else:
                newer[before] = after
            if after == _NONE:
                counts[_TAIL] = before
            else:
                older[after] = before
            free_bytes -= block_bytes
        refs[h] = r + 1
    sizes[_FREE_BYTES] = free_bytes


def register(state: PrefixState, h: int) -> bool:
    """A sequence has computed block `h`: cache it, referenced by that sequence. False when `h`
    is cached already (the sequence then keeps a private copy, as vLLM does)."""
    refs = state.refs
    if refs[h] != _NONE:
        return False
    refs[h] = 1
    return True


def release(state: PrefixState, ids: Ints, lo: int, hi: int) -> float:
    """A sequence stops using the blocks `ids[lo:hi]` (it finished or was preempted); those no
    other sequence references become evictable, the sequence's last block first (the least
    recent of them). Returns the bytes of the blocks still referenced by others (the sequence's
    copy of them was shared)."""
    refs, older, newer, counts, sizes = state
    block_bytes = sizes[_BLOCK_BYTES]
    free_bytes = sizes[_FREE_BYTES]
    tail = counts[_TAIL]
    shared = 0.0
    for k in range(hi - 1, lo - 1, -1):
        h = ids[k]
        r = refs[h] - 1
        refs[h] = r
        if r == 0:  # the most recent evictable block now
            older[h] = tail
            if tail == _NONE:
                counts[_HEAD] = h
            else:
                newer[tail] = h
            tail = h
            free_bytes += block_bytes
        else:
            shared += block_bytes
    if tail != _NONE:
        newer[tail] = _NONE  # the list's end (the blocks before it got their newer above)
    counts[_TAIL] = tail
    sizes[_FREE_BYTES] = free_bytes
    return shared


def evict_to(state: PrefixState, room_bytes: float) -> None:
    """Evict evictable blocks, least recent first, until they hold at most `room_bytes` (the KV
    memory the running sequences leave free)."""
    refs, older, newer, counts, sizes = state
    h = counts[_HEAD]
    free_bytes = sizes[_FREE_BYTES]
    if h != _NONE and free_bytes <= room_bytes + _TOLERANCE_BYTES:
        return  # the usual case: nothing to evict
    block_bytes = sizes[_BLOCK_BYTES]
    n = 0
    while h != _NONE and free_bytes > room_bytes + _TOLERANCE_BYTES:
        refs[h] = _NONE
        free_bytes -= block_bytes
        n += 1
        h = newer[h]
    counts[_HEAD] = h
    counts[_N_EVICTED] += n
    if h == _NONE:
        counts[_TAIL] = _NONE
        free_bytes = 0.0  # no drift from many additions and subtractions
    else:
        older[h] = _NONE
    sizes[_FREE_BYTES] = free_bytes


class PrefixCache:
    """The cache as the Python replica keeps it: a `PrefixState` over `n_blocks` dense blocks
    (`dense_blocks`) of `block_bytes` bytes each, whose arrays are memoryviews over numpy arrays
    (`state`: Python ints and floats in and out, so each element as fast to reach as in a
    dict), and the functions above as methods. Methods that take blocks take `ids[lo:hi]`.
    """

    __slots__ = ("state",)

    def __init__(self, block_bytes: float, n_blocks: int) -> None:
        views = [np.asarray(a).data for a in new_state(n_blocks, float(block_bytes))]
        self.state = PrefixState(
            views[0], views[1], views[2], views[3], cast("memoryview[float]", views[4])
        )

    def __len__(self) -> int:
        """Blocks cached."""
        return int(np.count_nonzero(self.refs != _NONE))

    @property
    def refs(self) -> np.ndarray:
        """Per block, the sequences referencing it; -1 when not cached (a view: it changes)."""
        return np.asarray(self.state.refs)

    @property
    def free(self) -> list[int]:
        """The evictable blocks (cached, referenced by none), least recently released first."""
        out = []
        h = self.state.counts[_HEAD]
        while h != _NONE:
            out.append(h)
            h = self.state.newer[h]
        return out

    @property
    def free_bytes(self) -> float:
        """Bytes held by the evictable blocks."""
        return self.state.sizes[_FREE_BYTES]

    @property
    def block_bytes(self) -> float:
        """Bytes of one block's KV."""
        return self.state.sizes[_BLOCK_BYTES]

    @property
    def n_evicted(self) -> int:
        """Blocks evicted so far."""
        return n_evicted(self.state)

    def leading_hits(self, ids: Ints, lo: int, hi: int) -> int:
        """See `leading_hits`."""
        return leading_hits(self.state, ids, lo, hi)

    def any_free(self, ids: Ints, lo: int, hi: int) -> bool:
        """See `any_free`."""
        return any_free(self.state, ids, lo, hi)

    def shared_bytes(self, ids: Ints, lo: int, hi: int) -> float:
        """See `shared_bytes`."""
        return shared_bytes(self.state, ids, lo, hi)

    def acquire(self, ids: Ints, lo: int, hi: int) -> None:
        """See `acquire`."""
        acquire(self.state, ids, lo, hi)

    def register(self, h: int) -> bool:
        """See `register`."""
        return register(self.state, h)

    def release(self, ids: Ints, lo: int, hi: int) -> float:
        """See `release`."""
        return release(self.state, ids, lo, hi)

    def evict_to(self, room_bytes: float) -> None:
        """See `evict_to`."""
        evict_to(self.state, room_bytes)
