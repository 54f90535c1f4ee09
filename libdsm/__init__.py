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
    arrays       dsm.array
    placement    dsm.place, dsm.array(homes=...): where pages live
    pinned       dsm.pinned, and save, write, readinto (system calls on DSM memory)
    partitions   ranks, hosts, row_block
    report       what dsmexec --trace and --stats collect at finalize
    locks        dsm.lock and the system locks
    checkpoint   dsm.checkpoint, and the restore at init (dsm.restored)

libdsm.sysv sits on top, beside this module, and uses Dsm.named_regions.
"""
from libdsm import _binding, job, layout
from libdsm.alloc import Allocation
from libdsm.arrays import Arrays
from libdsm.checkpoint import Checkpoints
from libdsm.collectives import Collectives
from libdsm.errors import (AddressInUseError, CollectiveError, ConfigError, CoreVersionError,
                           DsmError, LockError, MappingLimitError, PeerError, PinTimeoutError,
                           PlacementError, StateError)
from libdsm.locks import Lock, Locks
from libdsm.memory import Memory
from libdsm.partitions import Partitions
from libdsm.pinned import PIN_TIMEOUT, Pins
from libdsm.placement import Placement
from libdsm.regions import Region
from libdsm.report import Report

__all__ = [
    "init", "instance", "Dsm", "Allocation", "Lock", "Region",
    "DsmError", "ConfigError", "AddressInUseError", "MappingLimitError", "PeerError",
    "StateError", "CoreVersionError", "CollectiveError", "LockError", "PinTimeoutError",
    "PlacementError",
]
from libdsm._version import __version__  # noqa: F401  (re-exported)

_binding.check_core_version()


class Dsm:
    """One rank's handle on the shared region.  Get it from `libdsm.init()`.

    Collective calls (barrier, bcast, array, finalize) must be made by every
    rank in the same order, from one thread per rank.
    """

    def __init__(self, ctx, cfg):
        self._ctx = ctx
        self.rank = ctx.rank if ctx else 0
        """This rank's number, 0 to size - 1."""
        self.size = ctx.size if ctx else 1
        """The number of ranks in the job."""
        self.page_size = _binding.page_size()
        self.base = cfg["base"]
        """The region's address: the same in every rank."""
        self.nbytes = cfg["size"]
        """The region's size in bytes."""
        self.block_pages = cfg["block_pages"]
        self.nlocks = cfg["locks"]
        memory = Memory(self.base, _binding.region_view(self.base, self.nbytes), self.page_size)
        self.mem = memory.mem
        """A writable memoryview of the whole region."""
        self._memory = memory
        self._where = Partitions(self.rank, ctx.hostnames if ctx else ["localhost"],
                                 self.page_size)
        self._locks = Locks(self.nlocks, self.size)
        self._heap, self._regions = layout.open_system_area(
            _binding.region_view(self.base + self.nbytes, layout.SYS_BYTES), memory,
            self._locks.system, self.rank)
        self._coll = Collectives(memory, self.rank, self.size, self.hostname())
        self._placement = Placement(memory, self._where, self._coll, self.rank, self.hostname())
        self._arrays = Arrays(memory, self._heap, self._regions, self._coll, self._placement,
                              self.rank, self.hostname())
        self._pins = Pins(memory, self._span)
        self._report = Report(self.rank, self.hostname())
        self._report.start()
        self._ckpt = Checkpoints(memory, self._coll, self.rank, self._where.hostnames(),
                                 layout.mapped_bytes(self.nbytes), cfg["consistency"])
        self.restored = self._ckpt.restore()
        """This rank's state from the checkpoint the job restarted from; None
        on a fresh start (see `checkpoint`)."""

    # ------------------------------------------------------------ who and where
    def hostname(self, rank=None):
        """The machine-file host of a rank (default: this one)."""
        return self._where.hostname(rank)

    def page_of(self, offset):
        """The page number holding a byte offset of the region."""
        return self._memory.page_of(offset)

    def page_home(self, page):
        """The home rank of a page: round-robin until placed (see `place`)."""
        return _binding.page_home(page)

    def page_access(self, page):
        """This rank's access to a page now: 'none', 'read' or 'rw'."""
        return _binding.page_prot(page)

    def hot_pages(self, count=10):
        """The pages this rank gave up most often (served to another rank or
        dropped on invalidation), as (page, times), most first: where the
        program thrashes.  Give each rank its own pages (see row_block)."""
        import heapq
        times = _binding.pages_given_up(0, self.nbytes // self.page_size)
        top = heapq.nlargest(count, enumerate(times), key=lambda pt: pt[1])
        return [(page, n) for page, n in top if n]

    def stats(self):
        """Counters of this rank: faults, messages, pages, mappings, checkpoints."""
        return {**_binding.stats(), **self._ckpt.counters}

    # ------------------------------------------------------------ collectives
    def barrier(self):
        """Wait until every rank has called barrier().  log2(N) exchanges
        between the comm threads; no Python runs on the way.  Then the
        arrays made with homes="first_touch" since the last one are placed."""
        self._coll.barrier()
        self._placement.barrier_passed()

    def allreduce(self, x, op="sum"):
        """Collective: x (a number or a numpy array) combined elementwise over
        every rank with op ("sum", "prod", "min" or "max"); every rank gets
        the result, a number for a number, an array for an array."""
        return self._coll.reduce(x, op, None)

    def reduce(self, x, op="sum", root=0):
        """Like allreduce, but only root gets the result; the others None."""
        return self._coll.reduce(x, op, root)

    def gather(self, value, root=0):
        """Collective: root gets the list of every rank's value (anything
        picklable), in rank order; the others None."""
        return self._coll.gather(value, root)

    def allgather(self, value):
        """Collective: every rank gets the list of every rank's value."""
        return self._coll.gather(value, None)

    def bcast(self, value=None, root=0):
        """Collective: every rank returns root's value (anything picklable,
        an Allocation included, bound to this rank's region).  Writes root
        made before the call are visible to every rank after it."""
        return self._coll.bcast(value, root)

    def finalize(self):
        """Collective end: no rank leaves while another may need its pages."""
        self._coll.finalize()
        self._report.write(self.stats(), self.hot_pages(), self.page_size)
        job.finished(self._ctx)
        self._ckpt.finished()

    def checkpoint(self, state=None):
        """Collective: save the whole region and this rank's state (anything
        picklable; arrays and Allocations on the region go as references) as
        one generation, in DSM_CHECKPOINT_DIR or else in buddy memory.  A
        restarted job finds the region as it was here and its state in
        `restored`.  See docs/checkpoint.md."""
        self._coll.check()
        self._ckpt.checkpoint(state)

    # ------------------------------------------------------------ memory
    def malloc(self, nbytes, align=16):
        """Allocate nbytes of the shared region (not collective).

        Returns an Allocation (offset, nbytes, .mem) that can be bcast to the
        other ranks.  Raises MemoryError when the region is exhausted.
        Don't mix raw offsets into `mem` with malloc in one program: the heap
        hands out the whole region.
        """
        self._coll.check()
        return self._heap.malloc(nbytes, align)

    def free(self, obj):
        """Give back an Allocation, or an array made by `array()`."""
        self._coll.check()
        self._heap.free(obj if isinstance(obj, Allocation) else self._arrays.forget(obj))

    def prefetch(self, obj, write=False):
        """Fetch the pages under obj now, in bulk, instead of one fault per
        page: for reading, or (write=True) for writing.  obj is an
        Allocation, a Region, an array on the region, or (offset, nbytes)."""
        self._coll.check()
        first, count = self._memory.pages(*self._span(obj))
        if count:
            _binding.prefetch(first, count, write)

    def place(self, obj, homes="first_touch"):
        """Collective: move the homes of the pages under obj (an Allocation,
        Region, array on the region, or (offset, nbytes)), every rank
        passing the same obj.  homes="first_touch": each page goes to the
        rank that holds it writable now (wrote it last, nobody read it
        since), the others keep theirs; "row_block" (arrays): each rank's
        rows go to it.  No thread of any rank may touch shared memory or
        hold pins meanwhile.  Release mode moves no home: there it is a barrier."""
        self._coll.check()
        self._placement.place(obj, homes, self._span(obj))

    def pinned(self, obj, write=False, timeout=PIN_TIMEOUT):
        """Context manager: every page under obj (an Allocation, Region,
        array, memoryview on the region, or (offset, nbytes)) is fetched and
        stays here, writable too if write, until the block ends; other ranks
        wanting one wait.  System calls on it then work.  PinTimeoutError
        after timeout s waiting for pages pinned elsewhere."""
        self._coll.check()
        return self._pins.pinned(obj, write, timeout)

    def save(self, file, array):
        """np.save of an array on the region; a path gets the whole file or none."""
        self._coll.check()
        self._pins.save(file, array)

    def write(self, dest, obj):
        """Write obj's bytes to an fd or binary file, all of them or raise."""
        self._coll.check()
        self._pins.write(dest, obj)

    def readinto(self, src, obj):
        """Fill obj from an fd or binary file, all of it or raise (EOFError)."""
        self._coll.check()
        self._pins.readinto(src, obj)

    def _span(self, obj):
        """(offset, nbytes) of something on the region."""
        if isinstance(obj, Allocation):
            return obj.offset, obj.nbytes
        if isinstance(obj, Region):
            return obj.offset, obj.size
        if isinstance(obj, tuple):
            return obj
        if hasattr(obj, "__array_interface__"):
            return self._memory.array_span(obj)
        if isinstance(obj, memoryview):
            import numpy as np
            return self._memory.array_span(np.asarray(obj))
        raise TypeError("expected an Allocation, a Region, an array, a memoryview or "
                        "(offset, nbytes), got %s" % type(obj).__name__)

    def array(self, shape, dtype="float64", name=None, pad_rows=False, homes=None):
        """A numpy array on shared pages, the same on every rank.

        Without a name it is collective: rank 0 allocates, every rank gets
        the same array.  With a name it is not: the first rank to ask creates
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

    def row_block(self, nrows, row_bytes, rank=None):
        """The slice of rows a rank should own so ranks share no page.

        Blocks are whole multiples of the rows that fill a page exactly, so
        each rank's rows start on a page boundary of an array from `array()`.
        When the rows are too few for that, they are split evenly, and if
        ranks then share a page it warns (RuntimeWarning): make the array
        with ``pad_rows=True`` and pass ``arr.strides[0]`` as row_bytes.
        """
        return self._where.row_block(nrows, row_bytes, rank)

    # ------------------------------------------------------------ named regions
    @property
    def named_regions(self):
        """This rank's named regions (a libdsm.regions.Regions), for layers
        built on them such as libdsm.sysv; programs use the calls below."""
        return self._regions

    def create_region(self, name, size):
        """Create a region called name, of size bytes; returns its id.
        FileExistsError if the name is taken, MemoryError if there is no room.
        Two ranks racing to create one name: exactly one succeeds."""
        self._coll.check()
        return self._regions.create(name, size)

    def map_region(self, name):
        """Map the region called name: a Region whose .mem (and .array())
        sit at the same address on every rank.  Each mapping counts.
        FileNotFoundError if there is no such region."""
        self._coll.check()
        return self._regions.map(name)

    def unmap_region(self, region):
        """Drop one mapping; ValueError if it is not mapped by this rank."""
        self._coll.check()
        self._regions.unmap(region)

    def destroy_region(self, name):
        """Remove a region.  ValueError while this rank still maps it.  Its
        name goes at once; its memory is freed now if no rank maps it, else
        at the last unmap anywhere (as IPC_RMID).  True if freed now."""
        self._coll.check()
        return self._regions.destroy(name)

    def regions(self):
        """(name, id, size, mappings) of every region in use, a snapshot."""
        return self._regions.entries()

    # ------------------------------------------------------------ partitions (seed 004)
    def partition_id(self):
        """This partition (rank)."""
        return self.rank

    def partition_count(self):
        return self.size

    def partition_list(self):
        return list(range(self.size))

    def partition_hostnames(self):
        return self._where.hostnames()

    def segment_owner(self, shmid):
        """The rank whose memory homes a segment: the home of its first page."""
        return self.page_home(self._regions.stat(shmid).offset // self.page_size)

    # ------------------------------------------------------------ locks
    def lock(self, k):
        """Global lock k (0 <= k < DSM_LOCKS).  Kept by rank k % size."""
        return self._locks.user(k)

    # ------------------------------------------------------------ context
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # On an exception, leave without finalize: dsmexec tears the job down.
        if exc_type is None and not self._coll.finalized:
            self.finalize()
        return False


_instance = None


def instance():
    """The Dsm of this process; StateError before init()."""
    if _instance is None:
        raise StateError("libdsm.init() has not been called in this process")
    return _instance


def init(**options):
    """Join the job (or run alone) and map the shared region.

    Options override DSM_* variables: size, base, block_pages, hold_us,
    locks, connect_timeout, heartbeat_s, debug.  Returns a `Dsm`; call it once per process.
    """
    global _instance
    if _instance is not None:
        raise StateError("libdsm.init() was already called in this process")
    ctx = job.context()
    _instance = Dsm(ctx, job.start(ctx, options))
    job.joined(ctx)
    return _instance
