"""A replica's prefix cache over hashed KV blocks, as vLLM's automatic prefix caching keeps it.

Requests may carry the hash ids of their prompt's blocks of `block_tokens` tokens (Mooncake
traces: 512-token blocks). A block a running sequence uses is *referenced*; its bytes count
against KV capacity once, however many sequences share it. When no sequence references it, the
block stays cached but its memory counts as free: it is evicted when that memory is needed, least
recently released first (and, within one request, its last blocks before its first, as vLLM
frees them in reverse). Only whole prompt blocks are cached; full-attention KV only (windowed
layers keep a private window per sequence).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    """Block hash -> reference count, plus the evictable (unreferenced) blocks in LRU order.

    `block_bytes` is what one block's KV takes. `free_bytes` is the memory held by evictable
    blocks; the replica keeps it within the KV capacity its sequences leave free (`evict_to`).
    """

    __slots__ = ("block_bytes", "free", "free_bytes", "n_evicted", "refs")

    def __init__(self, block_bytes: float) -> None:
        self.block_bytes = float(block_bytes)
        self.refs: dict[int, int] = {}  # every cached block: sequences referencing it
        self.free: OrderedDict[int, None] = OrderedDict()  # refs == 0, least recent first
        self.free_bytes = 0.0
        self.n_evicted = 0

    def __len__(self) -> int:
        return len(self.refs)

    def leading_hits(self, ids: Sequence[int], max_blocks: int) -> int:
        """How many of the first `max_blocks` ids are cached, counting from the first one up
        to the first miss."""
        refs = self.refs
        k = 0
        for h in ids[:max_blocks]:
            if h not in refs:
                break
            k += 1
        return k

    def shared_bytes(self, ids: Sequence[int]) -> float:
        """Bytes of `ids` that running sequences already reference (a new user holds no second
        copy of them)."""
        refs = self.refs
        return self.block_bytes * sum(1 for h in ids if refs[h] > 0)

    def acquire(self, ids: Sequence[int]) -> None:
        """A sequence starts to use the cached blocks `ids` (hits)."""
        refs, free = self.refs, self.free
        for h in ids:
            if refs[h] == 0:
                del free[h]
                self.free_bytes -= self.block_bytes
            refs[h] += 1

    def register(self, h: int) -> bool:
        """A sequence has computed block `h`: cache it, referenced by that sequence. False when
        `h` is cached already (the sequence then keeps a private copy, as vLLM does)."""
        if h in self.refs:
            return False
        self.refs[h] = 1
        return True

    def release(self, ids: Sequence[int]) -> float:
        """A sequence stops using `ids` (it finished or was preempted). Returns the bytes of
        blocks still referenced by others (the sequence's copy of them was shared)."""
        refs, free = self.refs, self.free
        shared = 0.0
        for h in reversed(ids):
            r = refs[h] - 1
            refs[h] = r
            if r == 0:
                free[h] = None
                self.free_bytes += self.block_bytes
            else:
                shared += self.block_bytes
        return shared

    def evict_to(self, room_bytes: float) -> None:
        """Evict unreferenced blocks, least recent first, until they hold at most
        `room_bytes` (the KV memory the running sequences leave free)."""
        free, refs = self.free, self.refs
        while free and self.free_bytes > room_bytes + 1e-6:
            h, _ = free.popitem(last=False)
            del refs[h]
            self.free_bytes -= self.block_bytes
            self.n_evicted += 1
        if not free:
            self.free_bytes = 0.0  # no drift from many additions and subtractions
