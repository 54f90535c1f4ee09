"""libdsm: page-based distributed shared memory for Python.

    import libdsm
    with libdsm.init() as dsm:
        counter = dsm.array((1,), "int64")      # on shared pages, same on every rank
        with dsm.lock(0):
            counter[0] += 1
        dsm.barrier()

Run the program under ``./dsmexec.py machine_file prog.py``; run alone it is
a single rank.  Configuration: see libdsm.config (DSM_* variables).

This module is the public face: `Dsm` checks the state at each entry point
and hands the work to one module per job, each given what it needs when the
Dsm is made (none of them imports this package):

    job          joining the job, starting the C core
    memory       the region's view, addresses and pages; what Allocations bind to
    layout       the system area: where the heap and the region table live
    alloc        the heap and Allocation
    regions      named regions (Dsm.named_regions)
    collectives  barrier, bcast, finalize, and the check at every entry point
    calls        the Dsm methods that hand a collective, a sync object or a
                 named region on
    arrays       dsm.array
    placement    dsm.place, dsm.array(homes=...): where pages live
    pinned       dsm.pinned, and save, write, readinto (system calls on DSM memory)
    partitions   ranks, hosts, row_block
    report       what dsmexec --trace and --stats collect at finalize
    locks        dsm.lock and the system locks
    checkpoint   dsm.checkpoint, and the restore at init (dsm.restored)

libdsm.sysv sits on top, beside this module, and uses Dsm.named_regions.
"""
from __future__ import annotations

import os
from typing import Any, BinaryIO, ContextManager, Literal, Sequence, Union

import numpy as np
from numpy.typing import DTypeLike

from libdsm import _binding, job, layout
from libdsm.alloc import Allocation
from libdsm.arrays import Arrays, SharedArray
from libdsm.calls import CollectiveCalls, Op, RegionCalls, SyncCalls  # noqa: F401  (Op)
from libdsm.checkpoint import Checkpoints
from libdsm.collectives import Collectives
from libdsm.errors import (AddressInUseError, ArgumentError, BarrierTimeoutError,
                           CollectiveError, ConfigError, CoreVersionError, DsmError, LockError,
                           MappingLimitError, OutOfSpaceError, PeerError, PinTimeoutError,
                           PlacementError, StateError)
from libdsm.locks import Lock, Locks
from libdsm.memory import Memory
from libdsm.partitions import Partitions
from libdsm.pinned import PIN_TIMEOUT, Pins
from libdsm.placement import Placement
from libdsm.regions import Region, Regions
from libdsm.sync import Condition, Event, Semaphore, Sync
from libdsm.report import Report

Span = Union[Allocation, Region, np.ndarray, memoryview, tuple[int, int]]
"""What the calls taking a piece of the region accept (a type alias)."""

__all__ = [
    "init", "instance", "Dsm", "Allocation", "Lock", "Region", "SharedArray",
    "DsmError", "ConfigError", "AddressInUseError", "MappingLimitError", "PeerError",
    "StateError", "CoreVersionError", "CollectiveError", "LockError", "PinTimeoutError",
    "PlacementError", "OutOfSpaceError", "ArgumentError", "Condition", "Event", "Semaphore",
    "BarrierTimeoutError",
]
from libdsm._version import __version__  # noqa: F401  (re-exported)

_binding.check_core_version()


class Dsm(CollectiveCalls, SyncCalls, RegionCalls):
    """One rank's handle on the shared region.  Get it from `libdsm.init()`.

    Collective calls (barrier, bcast, array, finalize) must be made by every
    rank in the same order, from one thread per rank.
    """

    def __init__(self, ctx: Any, cfg: dict[str, Any]) -> None:
        self._ctx = ctx
        self.rank: int = ctx.rank if ctx else 0
        """This rank's number, 0 to size - 1."""
        self.size: int = ctx.size if ctx else 1
        """The number of ranks in the job."""
        self.page_size: int = _binding.page_size()
        self.base: int = cfg["base"]
        """The region's address: the same in every rank."""
        self.nbytes: int = cfg["size"]
        """The region's size in bytes."""
        self.block_pages: int = cfg["block_pages"]
        self.nlocks: int = cfg["locks"]
        memory = Memory(self.base, _binding.region_view(self.base, self.nbytes), self.page_size)
        self.mem: memoryview = memory.mem
        """A writable memoryview of the whole region."""
        self._memory = memory
        self._where = Partitions(self.rank, ctx.hostnames if ctx else ["localhost"],
                                 self.page_size)
        # one physical copy for the whole job: barriers, locks and collectives
        # through it, and homes stay where they are; on several hosts, in
        # sequential mode, barriers and collectives in two levels (through
        # each host's copy, then between the hosts' leaders), the rest over
        # the connections, and the hosts' leaders home the pages
        # (placed in sequential mode, following single writing hosts in release
        # mode)
        shared = cfg["share"] == "host" and cfg["one_host"]
        levels = cfg["share"] == "host" and cfg["consistency"] == "sequential"
        self._locks = Locks(self.nlocks, self.size, shared)
        self._heap, self._regions = layout.open_system_area(
            _binding.region_view(self.base + self.nbytes, layout.SYS_BYTES), memory,
            self._locks.system, self.rank)
        self._coll = Collectives(memory, self.rank, self.size, self.hostname(),
                                 shared or levels, homes_fixed=shared)
        self._placement = Placement(memory, self._where, self._coll, self.rank, self.hostname(),
                                    cfg["leaders"] if cfg["share"] == "host" else None)
        self._pins = Pins(memory, memory.span, release=cfg["consistency"] == "release")
        self._arrays = Arrays(memory, self._heap, self._regions, self._coll, self._placement,
                              self._pins, self._fetch, self.rank, self.hostname())
        self._sync = Sync(self._locks, lambda name, words: self.array(words, "uint64", name=name),
                          self.rank, self.size, shared)
        self._report = Report(self.rank, self.hostname())
        self._report.start()
        # host-shared: every rank holds every page writable, so each saves
        # the pages it homes, as in release mode
        self._ckpt = Checkpoints(memory, self._coll, self.rank, self._where.hostnames(),
                                 layout.mapped_bytes(self.nbytes),
                                 "release" if shared else cfg["consistency"])
        self.restored: Any = self._ckpt.restore()
        """This rank's state from the checkpoint the job restarted from; None
        on a fresh start (see `checkpoint`)."""

    # ------------------------------------------------------------ who and where
    def hostname(self, rank: int | None = None) -> str:
        """The machine-file host of a rank (default: this one)."""
        return self._where.hostname(rank)

    def page_of(self, offset: int) -> int:
        """The page number holding a byte offset of the region."""
        return self._memory.page_of(offset)

    def page_home(self, page: int) -> int:
        """The home rank of a page: round-robin until placed (see `place`)."""
        return _binding.page_home(page)

    def page_access(self, page: int) -> Literal["none", "read", "rw"]:
        """This rank's access to a page now: 'none', 'read' or 'rw'."""
        return _binding.page_prot(page)

    def hot_pages(self, count: int = 10) -> list[tuple[int, int]]:
        """The pages this rank gave up most often (served to another rank or
        dropped on invalidation), as (page, times), most first: where the
        program thrashes.  Give each rank its own pages (see row_block)."""
        import heapq
        times = _binding.pages_given_up(0, self.nbytes // self.page_size)
        top = heapq.nlargest(count, enumerate(times), key=lambda pt: pt[1])
        return [(page, n) for page, n in top if n]

    def stats(self) -> dict[str, int]:
        """Counters of this rank: faults, messages, pages, mappings, checkpoints."""
        return {**_binding.stats(), **self._ckpt.counters}

    # ------------------------------------------------------------ collectives
    def barrier(self, timeout: float | None = None) -> None:
        """Wait until every rank has called barrier().  log2(N) rounds of
        messages: this thread sends the first, the comm threads the rest;
        no Python runs on the way.  Then the
        arrays made with homes="first_touch" since the last one are placed.
        Past timeout seconds, BarrierTimeoutError naming the ranks not
        arrived; this rank stays in the barrier, and barrier() goes on."""
        self._coll.barrier(timeout)
        self._placement.barrier_passed()

    def finalize(self) -> None:
        """Collective end: no rank leaves while another may need its pages."""
        self._coll.finalize()
        self._report.write(self.stats(), self.hot_pages(), self.page_size)
        job.finished(self._ctx)
        self._ckpt.finished()

    def checkpoint(self, state: Any = None) -> None:
        """Collective: save the whole region and this rank's state (anything
        picklable; arrays and Allocations on the region go as references) as
        one generation, in DSM_CHECKPOINT_DIR or else in buddy memory.  A
        restarted job finds the region as it was here and its state in
        `restored`.  See docs/checkpoint.md."""
        self._coll.check()
        self._ckpt.checkpoint(state)

    # ------------------------------------------------------------ memory
    def malloc(self, nbytes: int, align: int = 16) -> Allocation:
        """Allocate nbytes of the shared region (not collective).

        Returns an Allocation (offset, nbytes, .mem) that can be bcast to the
        other ranks.  Raises MemoryError when the region is exhausted.
        Don't mix raw offsets into `mem` with malloc in one program: the heap
        hands out the whole region.
        """
        self._coll.check()
        return self._heap.malloc(nbytes, align)

    def free(self, obj: Allocation | SharedArray) -> None:
        """Give back an Allocation from `malloc` (on one rank, as malloc), or
        an array from `array()` without a name: collective, every rank
        frees the same array, in the same order.  An array is also freed
        when no rank uses it any more (see `array`)."""
        self._coll.check()
        if isinstance(obj, Allocation):
            self._heap.free(obj)
        else:
            self._arrays.free(obj)

    def prefetch(self, obj: Span, write: bool = False) -> None:
        """Fetch the pages under obj now, in bulk, instead of one fault per
        page: for reading, or (write=True) for writing.  obj is an
        Allocation, a Region, an array on the region, or (offset, nbytes)."""
        self._coll.check()
        self._fetch(obj, write)

    def _fetch(self, obj: Span, write: bool) -> None:
        first, count = self._memory.pages(*self._memory.span(obj))
        if count:
            _binding.prefetch(first, count, write)

    def place(self, obj: Span,
              homes: Literal["first_touch", "row_block"] = "first_touch") -> None:
        """Collective: move the homes of the pages under obj (an Allocation,
        Region, array on the region, or (offset, nbytes)), every rank
        passing the same obj.  homes="first_touch": each page goes to the
        rank that holds it writable now (wrote it last, nobody read it
        since), the others keep theirs; "row_block" (arrays): each rank's
        rows go to it.  No thread of any rank may touch shared memory or
        hold pins meanwhile.  Release mode moves no home: there it is a barrier."""
        self._coll.check()
        self._placement.place(obj, homes, self._memory.span(obj))

    def pinned(self, obj: Span, write: bool = False,
               timeout: float | None = PIN_TIMEOUT) -> ContextManager[Any]:
        """Context manager: every page under obj (an Allocation, Region,
        array, memoryview on the region, or (offset, nbytes)) is fetched and
        stays here, writable too if write, until the block ends; other ranks
        wanting one wait.  System calls on it then work.  PinTimeoutError
        after timeout s waiting for pages pinned elsewhere."""
        self._coll.check()
        return self._pins.pinned(obj, write, timeout)

    def save(self, file: str | bytes | os.PathLike[str] | BinaryIO, array: np.ndarray) -> None:
        """np.save of an array on the region; a path gets the whole file or none."""
        self._coll.check()
        self._pins.save(file, array)

    def write(self, dest: int | BinaryIO, obj: Span) -> None:
        """Write obj's bytes to an fd or binary file, all of them or raise."""
        self._coll.check()
        self._pins.write(dest, obj)

    def readinto(self, src: int | BinaryIO, obj: Span) -> None:
        """Fill obj from an fd or binary file, all of it or raise (EOFError)."""
        self._coll.check()
        self._pins.readinto(src, obj)

    def array(self, shape: int | Sequence[int], dtype: DTypeLike = "float64",
              name: str | None = None, pad_rows: bool = False,
              homes: Literal["row_block", "first_touch"] | None = None) -> SharedArray:
        """A numpy array on shared pages, the same on every rank.

        Without a name it is collective: rank 0 allocates, every rank gets
        the same array.  Its memory goes back when no rank uses it any more:
        when every rank has dropped it (and every view of it), at the next
        collective array(); at once with `free(arr)` on every rank, or
        ``with dsm.array(...) as arr:``.  A bad shape or dtype raises
        ArgumentError; no room, OutOfSpaceError (a MemoryError) with the
        figures.  With a name it is not: the first rank to ask creates
        the named region, the others map it (see `map_region`).
        It starts on a page boundary.  To keep ranks from sharing pages,
        give each rank whole pages of rows: see `row_block`.  With
        pad_rows=True every row (first index) starts on a page boundary:
        the array is a strided view whose row stride (``arr.strides[0]``) is
        the row's bytes rounded up to whole pages, so any split of its rows
        shares no page.  homes (collective arrays): where its pages live,
        None (round-robin), "row_block" (each rank's `row_block` of rows
        at that rank, placed now) or "first_touch" (placed at the next
        `barrier()`: each page at the rank that holds it writable then);
        see `place`.  PlacementError for another value or a named array.
        """
        self._coll.check()
        return self._arrays.array(shape, dtype, name, pad_rows, homes)

    def row_block(self, nrows: int, row_bytes: int, rank: int | None = None) -> slice:
        """The slice of rows a rank should own so ranks share no page.

        Blocks are whole multiples of the rows that fill a page exactly, so
        each rank's rows start on a page boundary of an array from `array()`.
        When the rows are too few for that, they are split evenly, and if
        ranks then share a page it warns (RuntimeWarning): make the array
        with ``pad_rows=True`` and pass ``arr.strides[0]`` as row_bytes.
        """
        return self._where.row_block(nrows, row_bytes, rank)

    # ------------------------------------------------------------ context
    def __enter__(self) -> Dsm:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        # On an exception, leave without finalize: dsmexec tears the job down.
        if exc_type is None and not self._coll.finalized:
            self.finalize()
        return False


_instance: Dsm | None = None


def instance() -> Dsm:
    """The Dsm of this process; StateError before init()."""
    if _instance is None:
        raise StateError("libdsm.init() has not been called in this process")
    return _instance


def init(*, size: int | str | None = None, base: int | str | None = None,
         block_pages: int | None = None, locks: int | None = None,
         readahead: int | None = None, spin_us: int | None = None,
         wait: Literal["reply", "yield"] | None = None, hold_us: int | None = None,
         connect_timeout: float | None = None,
         consistency: Literal["sequential", "release"] | None = None,
         twin_limit: int | str | None = None, heartbeat_s: float | None = None,
         debug: bool | None = None, share: Literal["rank", "host"] | None = None,
         vhosts: int | None = None) -> Dsm:
    """Join the job (or run alone) and map the shared region.

    Each keyword is the DSM_* variable of its name (size is DSM_SIZE, and so
    on; libdsm.config says what each does); a keyword given overrides the
    variable, None leaves it to the variable or the default.  size and
    twin_limit take bytes or a string such as "1G"; base an int or a string
    such as "0x200000000000".  A value of the wrong type or out of range
    raises ConfigError naming the option and what it takes; so does a size
    beyond this host's memory + swap.  Returns a `Dsm`; call it once per
    process.
    """
    global _instance
    if _instance is not None:
        raise StateError("libdsm.init() was already called in this process")
    options = dict(size=size, base=base, block_pages=block_pages, locks=locks,
                   readahead=readahead, spin_us=spin_us, wait=wait, hold_us=hold_us,
                   connect_timeout=connect_timeout, consistency=consistency,
                   twin_limit=twin_limit, heartbeat_s=heartbeat_s, debug=debug, share=share,
                   vhosts=vhosts)
    ctx = job.context()
    _instance = Dsm(ctx, job.start(ctx, options))
    job.forbid_fork(_instance._coll, _instance.rank, _instance.hostname())
    job.joined(ctx)
    return _instance
