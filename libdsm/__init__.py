"""libdsm: page-based distributed shared memory for Python.

    import libdsm
    with libdsm.init() as dsm:
        dsm.mem[0:4] = b"ping"       # every rank sees the same bytes
        dsm.barrier()

Run the program under ``./dsmexec.py machine_file prog.py``; run alone it is
a single rank.  Configuration: see libdsm.config (DSM_* variables).
"""
import faulthandler

from libdsm import _binding, config, mesh
from libdsm.errors import (AddressInUseError, ConfigError, CoreVersionError, DsmError,
                           MappingLimitError, PeerError, StateError)

__all__ = [
    "init", "Dsm",
    "DsmError", "ConfigError", "AddressInUseError", "MappingLimitError", "PeerError",
    "StateError", "CoreVersionError",
]
__version__ = "0.1.0"

_binding.check_core_version()


def _job_context():
    """The job dsmexec started us in, or None when run alone."""
    try:
        from services import rank
    except ImportError:
        return None
    return rank.CONTEXT


class Dsm:
    """One rank's handle on the shared region.  Get it from `libdsm.init()`."""

    def __init__(self, ctx, cfg):
        self._ctx = ctx
        self._finalized = False
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
        self.mem = _binding.region_view(self.base, self.nbytes)
        """A writable memoryview of the whole region."""

    def hostname(self, rank=None):
        """The machine-file host of a rank (default: this one)."""
        rank = self.rank if rank is None else rank
        if not 0 <= rank < self.size:
            raise ValueError("rank %d out of range 0..%d" % (rank, self.size - 1))
        return self._ctx.hostnames[rank] if self._ctx else "localhost"

    def _entry(self):
        """Checks at every entry point: still running, handler still ours."""
        if self._finalized:
            raise StateError("the DSM was finalized", self.rank, self.hostname())
        _binding.ensure_handler()

    def barrier(self):
        """Wait until every rank has called barrier()."""
        self._entry()
        _binding.barrier()

    def finalize(self):
        """Collective end: no rank leaves while another may need its pages."""
        self._entry()
        _binding.finalize()
        self._finalized = True
        if self._ctx:
            from services import wire
            self._ctx.notify(wire.Message.FINALIZED)

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

    def stats(self):
        """Counters of this rank: faults, messages, pages, mappings."""
        return _binding.stats()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # On an exception, leave without finalize: dsmexec tears the job down.
        if exc_type is None and not self._finalized:
            self.finalize()
        return False


_instance = None


def init(**options):
    """Join the job (or run alone) and map the shared region.

    Options override DSM_* variables: size, base, block_pages, hold_us,
    connect_timeout, debug.  Returns a `Dsm`; call it once per process.
    """
    global _instance
    if _instance is not None:
        raise StateError("libdsm.init() was already called in this process")
    ctx = _job_context()
    cfg = config.resolve(_binding.page_size(), **options)
    rank, size = (ctx.rank, ctx.size) if ctx else (0, 1)
    host = ctx.hostnames[rank] if ctx else None
    fds = [None]
    if ctx:
        layout = (cfg["size"], cfg["base"], cfg["block_pages"], _binding.page_size())
        fds = mesh.build(ctx, layout, cfg["connect_timeout"])
    if not faulthandler.is_enabled():
        faulthandler.enable()
    _binding.start(rank, size, cfg["base"], cfg["size"], cfg["block_pages"], cfg["hold_us"],
                   ctx.master.fileno() if ctx else -1, fds, cfg["debug"], host)
    _instance = Dsm(ctx, cfg)
    if ctx:
        from services import wire
        ctx.notify(wire.Message.INIT)
    return _instance
