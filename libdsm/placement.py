"""Where pages live: `dsm.place` and `dsm.array(..., homes=...)`.

A page's home keeps its directory entry and is where a fault on it first
goes; homes start round-robin in blocks (DSM_BLOCK_PAGES).  A placement
moves the homes of an array's pages, collectively (the C core's
dsm_place: each new home takes its pages for writing, then every rank
switches its table):

    "row_block"    each rank's rows (`row_block(nrows, arr.strides[0])`)
                   are homed at that rank, so a rank filling its own rows
                   faults on none of them
    "first_touch"  each page is homed at the rank that holds it writable
                   when the placement runs: the rank that wrote it last,
                   if no other rank read it since; other pages keep their
                   home

`dsm.array(..., homes="first_touch")` places the array at the first
`dsm.barrier()` after it was made, so that each rank's first writes decide
(even if it was freed meanwhile: every rank must make the same placements).

With DSM_SHARE=host on several hosts only the hosts' leaders home pages:
a page goes to the leader of the host of the rank named above (row_block:
the host whose rank owns the rows; first_touch: the host that holds the
page writable).  In release mode a placement moves no home (the C core's
placement is then a barrier: homes follow the single writing host at each
barrier instead); on one host nothing moves.
"""
from libdsm import _binding
from libdsm.errors import PlacementError

HOMES = ("row_block", "first_touch")


class Placement:
    """This rank's placements.  memory: the region's Memory; partitions:
    for row_block; collectives: the calls every rank makes; rank, host:
    for errors; leaders: with share=host, every rank's host leader, which
    homes the pages that rank would (None: each rank its own)."""

    def __init__(self, memory, partitions, collectives, rank, host, leaders=None):
        self._memory = memory
        self._where = partitions
        self._coll = collectives
        self._rank, self._host = rank, host
        self._homer = leaders or list(range(partitions.size))
        self._pending = {}              # offset -> array to place at the next barrier

    def check(self, homes, named=False):
        """Refuse an unknown homes= value, or one for a named array."""
        if homes is not None and homes not in HOMES:
            raise PlacementError("homes=%r: expected one of %s, or None"
                                 % (homes, ", ".join(map(repr, HOMES))), self._rank, self._host)
        if homes is not None and named:
            raise PlacementError("homes=%r is for collective arrays; a named array is not made "
                                 "by every rank at once" % homes, self._rank, self._host)

    def array_made(self, arr, homes):
        """A collective array was just made: place it now (row_block) or at
        the next barrier (first_touch)."""
        span = self._memory.array_span(arr)
        if homes == "row_block":
            self.place(arr, homes, span)
        elif homes == "first_touch":
            self._pending[span[0]] = (arr, span)

    def barrier_passed(self):
        """After a barrier: place the first_touch arrays made before it, in
        the order they were made (the same on every rank)."""
        if not self._pending:
            return                      # the common case, in programs' barrier loops
        pending, self._pending = self._pending, {}
        for arr, span in pending.values():
            self.place(arr, "first_touch", span)

    def place(self, obj, homes, span):
        """Collective: move the homes of the pages under span, obj's
        (offset, nbytes); for row_block obj must be an array."""
        self.check(homes)
        if homes == "row_block" and (not hasattr(obj, "__array_interface__") or
                                     (obj.ndim and obj.strides[0] <= 0)):
            raise PlacementError("homes='row_block' needs an array whose rows go upwards, "
                                 "got %s" % type(obj).__name__, self._rank, self._host)
        first, count = self._memory.pages(*span)
        current = [_binding.page_home(p) for p in range(first, first + count)]
        if homes == "row_block":
            new = self._row_homes(obj, first, current)
        else:
            new = self._first_touch(first, current)
        self._coll.place(first, count, new)

    def _row_homes(self, arr, first, homes):
        """homes with each rank's row_block pages set to that rank."""
        ps = self._memory.page_size
        start = arr.__array_interface__["data"][0] - self._memory.base
        nrows = arr.shape[0] if arr.ndim else 1
        stride = arr.strides[0] if arr.ndim else arr.itemsize
        homes = list(homes)
        for q in range(self._where.size):
            rows = self._where.row_block(nrows, stride, q)
            lo, hi = start + rows.start * stride, start + rows.stop * stride
            for p in range(max(first, lo // ps), min(first + len(homes), -(-hi // ps))):
                homes[p - first] = self._homer[q]
        return homes

    def _first_touch(self, first, homes):
        """homes with each page some rank holds writable set to that rank
        (its host's leader: a rank maps what its host holds)."""
        mine = bytes(_binding.page_prot(p) == "rw" for p in range(first, first + len(homes)))
        homes = list(homes)
        for q, held in enumerate(self._coll.gather(mine, None)):
            for i, rw in enumerate(held):
                if rw:
                    homes[i] = self._homer[q]
        return homes
