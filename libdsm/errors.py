"""Typed errors.  Each says where (rank, host) and what; each also inherits
the builtin a caller would naturally catch (ValueError, OSError, ...)."""


class DsmError(Exception):
    """Base class of every libdsm error."""

    def __init__(self, what, rank=None, host=None):
        self.what, self.rank, self.host = what, rank, host
        where = ""
        if rank is not None:
            where = "rank %d%s: " % (rank, " on host %s" % host if host else "")
        super().__init__(where + what)

    def __str__(self):
        return self.args[0]


class SystemCallError(DsmError, OSError):
    """A system call failed; `.errno` says which errno, the message where."""

    def __init__(self, what, errno=None, rank=None, host=None):
        DsmError.__init__(self, what, rank, host)
        self.errno = errno
        self.strerror = what


class ConfigError(DsmError, ValueError):
    """The configuration (DSM_* variables or init arguments) is invalid."""


class AddressInUseError(DsmError, OSError):
    """The region's fixed address is already mapped in this process."""


class MappingLimitError(DsmError, MemoryError):
    """The region would need more mappings than vm.max_map_count allows."""


class PeerError(DsmError, ConnectionError):
    """A peer rank was lost, refused us, or broke the protocol.  `.peer` is
    the rank whose loss it is (the core's own record, dsm_failed_peer()),
    None when no one rank is to blame; `.rank` is this rank, as for every
    DsmError."""

    def __init__(self, what, rank=None, host=None, peer=None):
        DsmError.__init__(self, what, rank, host)
        self.peer = peer


class StateError(DsmError, RuntimeError):
    """A call made in the wrong state (before init, after finalize, twice)."""


class CoreVersionError(DsmError, ImportError):
    """The compiled C core does not match this Python package."""


class CollectiveError(DsmError, RuntimeError):
    """Ranks called different collectives (or one had finalized)."""


class LockError(DsmError, RuntimeError):
    """A lock was released by a rank that does not hold it."""


class PlacementError(DsmError, ValueError):
    """A placement that cannot be made: an unknown homes= value, homes= for a
    named array, row_block homes for something that has no rows."""


class PinTimeoutError(DsmError, TimeoutError):
    """Pages stayed pinned by another rank past the timeout of dsm.pinned()."""


class OutOfSpaceError(DsmError, MemoryError):
    """The region has no free block big enough: raise DSM_SIZE (init(size=))."""


class ArgumentError(DsmError, ValueError, TypeError):
    """An argument of a libdsm call (a shape, a dtype) that it cannot take;
    the message names the argument."""


class BarrierTimeoutError(CollectiveError, TimeoutError):
    """barrier(timeout=...) passed its timeout: some rank had not arrived."""
