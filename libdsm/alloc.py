"""The shared heap: `dsm.malloc` and `dsm.free` over the region.

The free list lives in the region's system area (shared memory like any
other) and is guarded by a DSM lock, so every rank allocates from one heap
and no two allocations overlap, with no allocator process.  Free extents
are kept sorted by offset and merged on free; small allocations are packed
together (16-byte granules), never one per page.
"""
from __future__ import annotations

import array
import bisect
from typing import TYPE_CHECKING

from libdsm.config import human
from libdsm.errors import OutOfSpaceError, StateError

if TYPE_CHECKING:
    from libdsm.memory import Memory

MAGIC = 0x5041_4548_4d53_44          # "DSMHEAP", little-endian
GRANULE = 16


def _round_up(n, align):
    return (n + align - 1) // align * align


class Allocation:
    """A piece of the shared region: an offset and a size.

    The heap binds each Allocation it returns to this rank's `Memory`, and
    `dsm.bcast` binds each one it delivers to the receiving rank's, so
    `.mem` and `.address` work on every rank that got it from either.  An
    Allocation built by hand, or unpickled outside bcast, carries no memory
    (pickles hold only offset and size): use `dsm.mem[a.offset:...]`.
    """
    __slots__ = ("offset", "nbytes", "_memory")
    offset: int
    nbytes: int

    def __init__(self, offset: int, nbytes: int, memory: Memory | None = None) -> None:
        self.offset = offset
        self.nbytes = nbytes
        self._memory = memory

    def _bound(self, what):
        if self._memory is None:
            raise StateError("%r has no .%s: only an Allocation from dsm.malloc or dsm.bcast "
                             "is bound to the region; slice dsm.mem instead" % (self, what))
        return self._memory

    @property
    def mem(self) -> memoryview:
        """A writable memoryview of the allocation in this rank."""
        return self._bound("mem").view(self.offset, self.nbytes)

    @property
    def address(self) -> int:
        """The virtual address: the same in every rank."""
        return self._bound("address").address(self.offset)

    def __reduce__(self):
        return Allocation, (self.offset, self.nbytes)

    def __copy__(self):
        return Allocation(self.offset, self.nbytes, self._memory)

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __eq__(self, other):
        return isinstance(other, Allocation) and (self.offset, self.nbytes) == (
            other.offset, other.nbytes)

    def __hash__(self):
        return hash((self.offset, self.nbytes))

    def __repr__(self):
        return "Allocation(offset=%d, nbytes=%d)" % (self.offset, self.nbytes)


class Heap:
    """First-fit allocator whose free list is in shared memory.

    `meta` is a memoryview of the metadata area: magic, extent count, then
    (offset, size) pairs.  `lock` guards it.  The heap hands out all of
    `memory` (a libdsm.memory.Memory) and binds its Allocations to it.
    """

    def __init__(self, meta, memory, lock):
        self._words = meta.cast("Q")
        self._memory = memory
        self._size = memory.nbytes
        self._lock = lock
        self.capacity = (len(self._words) - 2) // 2

    def _load(self):
        w = self._words
        if int(w[0]) != MAGIC:          # first use anywhere: one free extent
            w[1], w[2], w[3] = 1, 0, self._size
            w[0] = MAGIC
        flat = w[2:2 + 2 * int(w[1])].tolist()
        return list(zip(flat[0::2], flat[1::2]))

    def _store(self, extents):
        if len(extents) > self.capacity:
            raise MemoryError("the heap's free list is full (%d extents): free some "
                              "allocations or allocate fewer, larger pieces" % self.capacity)
        w = self._words
        w[2:2 + 2 * len(extents)] = array.array("Q", [x for e in extents for x in e])
        w[1] = len(extents)

    def malloc(self, nbytes, align=GRANULE):
        """Reserve nbytes aligned to `align` (a power of two); an Allocation."""
        if not isinstance(nbytes, int) or nbytes <= 0:
            raise ValueError("malloc needs a positive number of bytes, got %r" % (nbytes,))
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise ValueError("alignment must be a power of two, got %r" % (align,))
        size, align = _round_up(nbytes, GRANULE), max(align, GRANULE)
        with self._lock:
            extents = self._load()
            for i, (off, length) in enumerate(extents):
                start = _round_up(off, align)
                if start + size <= off + length:
                    break
            else:
                raise OutOfSpaceError(self._no_room(nbytes, align, extents))
            pieces = [(off, start - off)] if start > off else []
            if start + size < off + length:
                pieces.append((start + size, off + length - start - size))
            self._store(extents[:i] + pieces + extents[i + 1:])
        return Allocation(start, nbytes, self._memory)

    def _no_room(self, nbytes, align, extents):
        """Why nbytes do not fit, in figures, and what to do."""
        free = sum(length for _, length in extents)
        largest = max((length for _, length in extents), default=0)
        return ("cannot allocate %d bytes (%s, alignment %d): the region has %d bytes (%s), "
                "%d in use, %d bytes free, the largest free block %d (%s); raise DSM_SIZE or "
                "pass a larger size= to libdsm.init(), e.g. size=\"%dM\""
                % (nbytes, human(nbytes), align, self._size, human(self._size),
                   self._size - free, free, largest, human(largest),
                   -(-(self._size + 2 * nbytes) >> 20)))

    def free(self, alloc):
        """Give an Allocation back; freeing what is not allocated is an error."""
        start, end = alloc.offset, alloc.offset + _round_up(alloc.nbytes, GRANULE)
        if start < 0 or end > self._size:
            raise ValueError("%r lies outside the heap of %d bytes" % (alloc, self._size))
        with self._lock:
            extents = self._load()
            i = bisect.bisect_left(extents, (start, 0))
            prev = extents[i - 1] if i > 0 else None
            nxt = extents[i] if i < len(extents) else None
            if (prev and prev[0] + prev[1] > start) or (nxt and nxt[0] < end):
                raise ValueError("%r is not allocated (double free?)" % (alloc,))
            if prev and prev[0] + prev[1] == start:
                i, start = i - 1, prev[0]
                extents.pop(i)
            if nxt and nxt[0] == end:
                end = nxt[0] + nxt[1]
                extents.pop(i)
            extents.insert(i, (start, end - start))
            self._store(extents)

    def usage(self):
        """(free bytes, largest free block, number of free extents)."""
        with self._lock:
            extents = self._load()
        return (sum(e[1] for e in extents), max((e[1] for e in extents), default=0),
                len(extents))
