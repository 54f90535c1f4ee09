"""libdsm: page-based distributed shared memory for Python.

    import libdsm
    with libdsm.init() as dsm:
        counter = dsm.array((1,), "int64")      # on shared pages, same on every rank
        with dsm.lock(0):
            counter[0] += 1
        dsm.barrier()

Run the program under ``./dsmexec.py machine_file prog.py``; run alone it is
a single rank.  Configuration: see libdsm.config (DSM_* variables).
"""
import faulthandler
import math
import pickle
import threading

from libdsm import _binding, config, mesh
from libdsm.alloc import Allocation, Heap
from libdsm.errors import (AddressInUseError, CollectiveError, ConfigError, CoreVersionError,
                           DsmError, LockError, MappingLimitError, PeerError, StateError)
from libdsm.locks import Lock
from libdsm.regions import BUCKETS, TABLE_BYTES, Region, Regions, Table

__all__ = [
    "init", "instance", "Dsm", "Allocation", "Lock", "Region",
    "DsmError", "ConfigError", "AddressInUseError", "MappingLimitError", "PeerError",
    "StateError", "CoreVersionError", "CollectiveError", "LockError",
]
from libdsm._version import __version__  # noqa: F401  (re-exported)

_binding.check_core_version()

# The system area follows the user's region: the heap's free list and the
# named-region table live there, each guarded by locks past the user's.
SYS_BYTES = 256 << 10
HEAP_META_BYTES = 128 << 10
HEAP_LOCK = 0
REGION_LOCKS = 1                # bucket b uses system lock REGION_LOCKS + b
SYS_LOCKS = REGION_LOCKS + BUCKETS


def _job_context():
    """The job dsmexec started us in, or None when run alone."""
    try:
        from services import rank
    except ImportError:
        return None
    return rank.CONTEXT


class Dsm:
    """One rank's handle on the shared region.  Get it from `libdsm.init()`.

    Collective calls (barrier, bcast, array, finalize) must be made by every
    rank in the same order, from one thread per rank.
    """

    def __init__(self, ctx, cfg):
        self._ctx = ctx
        self._finalized = False
        self._arrays = {}
        self._coll = threading.Lock()
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
        self.mem = _binding.region_view(self.base, self.nbytes)
        """A writable memoryview of the whole region."""
        sys_area = _binding.region_view(self.base + self.nbytes, SYS_BYTES)
        self._heap = Heap(sys_area[:HEAP_META_BYTES], self.nbytes,
                          self._sys_lock(HEAP_LOCK))
        table = Table(sys_area[HEAP_META_BYTES:HEAP_META_BYTES + TABLE_BYTES], self._heap,
                      lambda b: self._sys_lock(REGION_LOCKS + b), self.page_size, self.rank)
        self._regions = Regions(table, self.mem, self.base)
        self._locks = {}

    # ------------------------------------------------------------ who and where
    def hostname(self, rank=None):
        """The machine-file host of a rank (default: this one)."""
        rank = self.rank if rank is None else rank
        if not 0 <= rank < self.size:
            raise ValueError("rank %d out of range 0..%d" % (rank, self.size - 1))
        return self._ctx.hostnames[rank] if self._ctx else "localhost"

    def page_of(self, offset):
        """The page number holding a byte offset of the region."""
        if not 0 <= offset < self.nbytes:
            raise ValueError("offset %d outside the region of %d bytes" % (offset, self.nbytes))
        return offset // self.page_size

    def page_home(self, page):
        """The round-robin home rank of a page."""
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
        """Counters of this rank: faults, messages, pages, mappings."""
        return _binding.stats()

    # ------------------------------------------------------------ collectives
    def _entry(self):
        """Checks at every entry point: still running, handler still ours."""
        if self._finalized:
            raise StateError("the DSM was finalized", self.rank, self.hostname())
        _binding.ensure_handler()

    def barrier(self):
        """Wait until every rank has called barrier().  One round trip to
        rank 0's comm thread; no Python runs on the way."""
        self._entry()
        with self._coll:
            _binding.barrier()

    def bcast(self, value=None, root=0):
        """Collective: every rank returns root's value (anything picklable,
        an Allocation included).  Writes root made before the call are
        visible to every rank after it."""
        self._entry()
        if not isinstance(root, int) or not 0 <= root < self.size:
            raise ValueError("bcast root %r out of range 0..%d" % (root, self.size - 1))
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL) if root == self.rank else None
        with self._coll:
            out = _binding.bcast(root, data)
        return value if root == self.rank else pickle.loads(out)

    def finalize(self):
        """Collective end: no rank leaves while another may need its pages."""
        self._entry()
        with self._coll:
            _binding.finalize()
        self._finalized = True
        if self._ctx:
            from services import wire
            self._ctx.notify(wire.Message.FINALIZED)

    # ------------------------------------------------------------ memory
    def malloc(self, nbytes, align=16):
        """Allocate nbytes of the shared region (not collective).

        Returns an Allocation (offset, nbytes, .mem) that can be bcast to the
        other ranks.  Raises MemoryError when the region is exhausted.
        Don't mix raw offsets into `mem` with malloc in one program: the heap
        hands out the whole region.
        """
        self._entry()
        return self._heap.malloc(nbytes, align)

    def prefetch(self, obj, write=False):
        """Fetch the pages under obj now, in bulk, instead of one fault per
        page: for reading, or (write=True) for writing.  obj is an
        Allocation, a Region, an array on the region, or (offset, nbytes)."""
        self._entry()
        offset, nbytes = self._span(obj)
        if nbytes:
            first = offset // self.page_size
            last = (offset + nbytes - 1) // self.page_size
            _binding.prefetch(first, last - first + 1, write)

    def _span(self, obj):
        """(offset, nbytes) of something on the region."""
        if isinstance(obj, Allocation):
            span = obj.offset, obj.nbytes
        elif isinstance(obj, Region):
            span = obj.offset, obj.size
        elif isinstance(obj, tuple):
            span = obj
        elif hasattr(obj, "__array_interface__"):
            lo = hi = obj.__array_interface__["data"][0]
            for n, stride in zip(obj.shape, obj.strides):
                lo, hi = lo + min(0, (n - 1) * stride), hi + max(0, (n - 1) * stride)
            span = lo - self.base, hi + obj.itemsize - lo if obj.size else 0
        else:
            raise TypeError("prefetch takes an Allocation, a Region, an array or "
                            "(offset, nbytes), got %s" % type(obj).__name__)
        if span[0] < 0 or span[1] < 0 or span[0] + span[1] > self.nbytes:
            raise ValueError("%r is not inside the region" % (span,))
        return span

    def free(self, obj):
        """Give back an Allocation, or an array made by `array()`."""
        self._entry()
        if not isinstance(obj, Allocation):
            addr = obj.__array_interface__["data"][0] if hasattr(obj, "__array_interface__") \
                else None
            if addr is None or addr - self.base not in self._arrays:
                raise ValueError("free() takes an Allocation or an array from dsm.array()")
            obj = self._arrays.pop(addr - self.base)
        self._heap.free(obj)

    def array(self, shape, dtype="float64", name=None):
        """A numpy array on shared pages, the same on every rank.

        Without a name it is collective: rank 0 allocates, every rank gets
        the same array.  With a name it is not: the first rank to ask creates
        the named region, the others map it (see `map_region`).
        It starts on a page boundary.  To keep ranks from sharing pages,
        give each rank whole pages of rows: see `row_block`.
        """
        import numpy as np
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        if name is not None:
            return self._named_array(name, shape, dtype, count)
        made = None
        if self.rank == 0:
            made = (self.malloc(max(1, count * dtype.itemsize), align=self.page_size),
                    shape, dtype.str)
        alloc, root_shape, root_dtype = self.bcast(made, root=0)
        if (root_shape, root_dtype) != (shape, dtype.str):
            raise CollectiveError("array(): this rank asked for %s %s, rank 0 for %s %s"
                                  % (shape, dtype.str, root_shape, root_dtype),
                                  self.rank, self.hostname())
        self._arrays[alloc.offset] = alloc
        arr = np.frombuffer(self.mem, dtype=dtype, count=count, offset=alloc.offset)
        return arr.reshape(shape)

    def _named_array(self, name, shape, dtype, count):
        self._entry()
        try:
            self._regions.create(name, max(1, count * dtype.itemsize))
        except FileExistsError:
            pass
        region = self._regions.map(name)
        if region.size < count * dtype.itemsize:
            self._regions.unmap(region)
            raise ValueError("region %r has %d bytes, too few for %s of %s"
                             % (name, region.size, shape, dtype))
        return region.array(dtype, shape)

    # ------------------------------------------------------------ named regions
    def create_region(self, name, size):
        """Create a region called name, of size bytes; returns its id.
        FileExistsError if the name is taken, MemoryError if there is no room.
        Two ranks racing to create one name: exactly one succeeds."""
        self._entry()
        return self._regions.create(name, size)

    def map_region(self, name):
        """Map the region called name: a Region whose .mem (and .array())
        sit at the same address on every rank.  Each mapping counts.
        FileNotFoundError if there is no such region."""
        self._entry()
        return self._regions.map(name)

    def unmap_region(self, region):
        """Drop one mapping; ValueError if it is not mapped by this rank."""
        self._entry()
        self._regions.unmap(region)

    def destroy_region(self, name):
        """Remove a region.  ValueError while this rank still maps it.  Its
        name goes at once; its memory is freed now if no rank maps it, else
        at the last unmap anywhere (as IPC_RMID).  True if freed now."""
        self._entry()
        return self._regions.destroy(name)

    def regions(self):
        """(name, id, size, mappings) of every region in use, a snapshot."""
        return [(e.name, e.shmid, e.size, e.refcount) for e in self._regions.table.entries()]

    # ------------------------------------------------------------ partitions (seed 004)
    def partition_id(self):
        """This partition (rank)."""
        return self.rank

    def partition_count(self):
        return self.size

    def partition_list(self):
        return list(range(self.size))

    def partition_hostnames(self):
        return [self.hostname(r) for r in range(self.size)]

    def segment_owner(self, shmid):
        """The rank whose memory homes a segment: the home of its first page."""
        return self._regions.control(
            shmid, lambda table, e: self.page_home(e.offset // self.page_size))

    def row_block(self, nrows, row_bytes, rank=None):
        """The slice of rows a rank should own so ranks share no page.

        Blocks are whole multiples of the rows that fill a page exactly, so
        each rank's rows start on a page boundary of an array from `array()`.
        When the rows are too few for that, they are split evenly.
        """
        rank = self.rank if rank is None else rank
        unit = self.page_size // math.gcd(row_bytes, self.page_size)
        if unit * self.size > nrows:
            unit = 1
        units = -(-nrows // unit)
        per = -(-units // self.size)
        start = min(nrows, rank * per * unit)
        return slice(start, min(nrows, start + per * unit))

    # ------------------------------------------------------------ locks
    def lock(self, k):
        """Global lock k (0 <= k < DSM_LOCKS).  Kept by rank k % size."""
        if not isinstance(k, int) or not 0 <= k < self.nlocks:
            raise ValueError("lock %r out of range 0..%d (DSM_LOCKS)" % (k, self.nlocks - 1))
        if k not in self._locks:
            self._locks[k] = Lock(k, k % self.size)
        return self._locks[k]

    def _sys_lock(self, k):
        return Lock(self.nlocks + k, (self.nlocks + k) % self.size)

    # ------------------------------------------------------------ context
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # On an exception, leave without finalize: dsmexec tears the job down.
        if exc_type is None and not self._finalized:
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
    locks, connect_timeout, debug.  Returns a `Dsm`; call it once per process.
    """
    global _instance
    if _instance is not None:
        raise StateError("libdsm.init() was already called in this process")
    ctx = _job_context()
    here = ctx.hostnames.count(ctx.hostnames[ctx.rank]) if ctx else 1
    cfg = config.resolve(_binding.page_size(), ranks_here=here, **options)
    rank, size = (ctx.rank, ctx.size) if ctx else (0, 1)
    host = ctx.hostnames[rank] if ctx else None
    mapped = cfg["size"] + SYS_BYTES
    fds = [None]
    if ctx:
        layout = (mapped, cfg["base"], cfg["block_pages"], _binding.page_size())
        fds = mesh.build(ctx, layout, cfg["connect_timeout"])
    if not faulthandler.is_enabled():
        faulthandler.enable()
    _binding.start(rank, size, cfg["base"], mapped, cfg["block_pages"], cfg["hold_us"],
                   cfg["locks"] + SYS_LOCKS, cfg["readahead"], cfg["spin_us"],
                   ctx.master.fileno() if ctx else -1,
                   fds,
                   cfg["debug"], host)
    _instance = Dsm(ctx, cfg)
    if ctx:
        from services import wire
        ctx.notify(wire.Message.INIT)
    return _instance
